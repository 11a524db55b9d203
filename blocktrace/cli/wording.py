"""A flag's bad value said in blocktrace's words. typer checks a value through pydantic and says so in
pydantic's ("Invalid value for '--seq': Input should be greater than or equal to 1", "Value error,
'foo' is not one of ..."); here the same refusal reads `--seq must be a whole number >= 1, not -1`:
what was wrong, and what is accepted."""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument

from blocktrace.cli.clicks import core, exceptions

_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def bad_value(error: exceptions.ClickException) -> str | None:
    """The sentence for a value typer refused, or None where it is no such refusal (or one whose
    value or kind cannot be told: typer's own words stand)."""
    if not isinstance(error, exceptions.BadParameter) or error.param is None:
        return None
    value = _refused(error)
    kind = getattr(error.param, "type_descriptor", None)
    if value is None or kind is None:
        return None
    choices = kind.choices
    if choices is not None:
        accepted = ", ".join(str(getattr(c, "value", c)) for c in choices)
        if isinstance(error.param, TyperArgument) and error.ctx is not None:
            return f"{error.ctx.command_path} takes one of {accepted}, not {value!r}"
        return f"{_flag(error.param)} must be one of {accepted}, not {value!r}"
    if kind.annotation is int:
        low = kind.parameter_info.min
        at_least = "" if low is None else f" >= {low}"
        return f"{_flag(error.param)} must be a whole number{at_least}, not {_shown(value)}"
    if kind.annotation is float:
        return f"{_flag(error.param)} must be a number, not {_shown(value)}"
    return None


def _refused(error: exceptions.BadParameter) -> Any:
    """The value as given, from the validation error typer raised it from."""
    errors = getattr(error.__cause__, "errors", None)
    if errors is None:
        return None
    found = errors()
    return found[0].get("input") if found else None


def _flag(param: core.Parameter) -> str:
    return max(param.opts, key=len) if param.opts else str(param.name)


def _shown(value: Any) -> str:
    """-1 and 1.5 as typed; anything else quoted, so that an empty, odd or unprintable one shows."""
    return value if isinstance(value, str) and _NUMBER.fullmatch(value) else repr(value)
