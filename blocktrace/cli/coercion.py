"""A flag's value made what its annotation says without pydantic. typer coerces every value, a default
None included, through a pydantic TypeAdapter built per option: about 30 of them and pydantic's
import, a tenth of a second of every command. Here the values a command is normally given (`8`,
`1e-9`, `probe`, a file's name) are taken as typer would take them. Anything else goes to typer's
own coercion: a refused value, an unusual spelling (` 5`, `1_000`, `FLOAT32`), an annotation or a
setting not known here (a Path, a parser, a max). So what it accepts, and the words it refuses with,
stay exactly as they were (tests/test_cli_coercion.py compares the two on every flag).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer._param_types import coerce_cli_choice
from typer.core import _TyperParameter

from blocktrace.cli.clicks import core

# what typer's pydantic takes, as Python reads it, in the spellings one types; a whole number's digits
# bounded, as int() refuses 4300 and more
_WHOLE = re.compile(r"-?[0-9]{1,18}")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


class _Unsure(Exception):
    """Raised by a leaf's parse where typer's coercion is to decide."""


Parse = Callable[[Any, core.Context], Any]


@dataclass(frozen=True)
class OwnRuntimeParam(RuntimeParam):
    """typer's RuntimeParam with `parse` first: what it is unsure of, typer's adapter decides."""

    descriptor: TypeDescriptor
    parse: Parse

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: core.Context) -> Any:
        try:
            return self.parse(value, ctx)
        except _Unsure:
            return self.typer_s._coerce_value(value, param=param, ctx=ctx)

    @functools.cached_property
    def typer_s(self) -> RuntimeParam:
        """typer's own, built (pydantic imported) the first time it is needed."""
        return build_runtime_param(self.descriptor)


def install(command: core.Command) -> None:
    """Gives each of `command`'s parameters whose annotation is known here its own coercion."""
    for param in command.params:
        if isinstance(param, _TyperParameter) and param._runtime_param is None:
            own = runtime_param(param.type_descriptor)
            if own is not None:
                param._runtime_param = own


def runtime_param(descriptor: TypeDescriptor) -> OwnRuntimeParam | None:
    """The coercion of a parameter so declared, or None where typer's alone is to be used."""
    parse = _parse(descriptor)
    if parse is None:
        return None
    return OwnRuntimeParam(
        parameter_info=descriptor.parameter_info,
        annotation=descriptor.annotation,
        descriptor=descriptor,
        parse=parse,
    )


def _parse(descriptor: TypeDescriptor) -> Parse | None:
    info = descriptor.parameter_info
    if info.parser is not None or info.clamp or info.max is not None:
        return None
    if descriptor.is_list:
        (item,) = get_args(descriptor.annotation)
        leaf = _leaf(item, descriptor)
        return None if leaf is None else functools.partial(_each, leaf)
    return _leaf(descriptor.annotation, descriptor)


def _leaf(annotation: Any, descriptor: TypeDescriptor) -> Parse | None:
    info = descriptor.parameter_info
    if descriptor.choices is not None:
        return functools.partial(_choice, descriptor.choices, info.case_sensitive)
    if annotation is int:
        return functools.partial(_number, int, _WHOLE, info.min)
    if annotation is float:
        return functools.partial(_number, float, _NUMBER, info.min)
    if annotation is str:
        return _str
    if annotation is bool:  # a flag's True or False skips coercion: its None default comes here
        return _bool
    return None


def _each(leaf: Parse, value: Any, ctx: core.Context) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise _Unsure
    return [leaf(item, ctx) for item in value]


def _number(kind: type, spelled: re.Pattern[str], low: Any, value: Any, ctx: core.Context) -> Any:
    if type(value) is kind:
        number = value
    elif isinstance(value, str) and spelled.fullmatch(value):
        number = kind(value)
    else:
        raise _Unsure
    if low is not None and number < low:
        raise _Unsure  # refused: typer's words
    return number


def _choice(choices: tuple[Any, ...], case_sensitive: bool, value: Any, ctx: core.Context) -> Any:
    try:  # what typer's adapter calls, its ctx the same
        return coerce_cli_choice(value, choices=choices, case_sensitive=case_sensitive, ctx=ctx)
    except ValueError:
        raise _Unsure from None


def _str(value: Any, ctx: core.Context) -> str:
    if type(value) is not str:
        raise _Unsure
    return value


def _bool(value: Any, ctx: core.Context) -> bool:
    if type(value) is not bool:
        raise _Unsure
    return value
