"""blocktrace's coercion of its flags' values (cli/coercion.py) against typer's, through pydantic, on
every parameter of every command: the same value of the same type, or the same refusal in the same
words with the same exit code. And a typical command that never imports pydantic."""

from __future__ import annotations

import sys
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer.main
from hypothesis import given, settings
from hypothesis import strategies as st
from typer._coercion import RuntimeParam, build_runtime_param, resolve_type_descriptor
from typer.core import TyperGroup, _TyperParameter
from typer.models import OptionInfo

from blocktrace.cli import app, lazy
from blocktrace.cli.clicks import core, exceptions
from blocktrace.cli.coercion import OwnRuntimeParam, runtime_param
from blocktrace.cli.wording import bad_value
from blocktrace.views.shapes import Shapes
from tests.harness import imported_by, invoke, one_error

_GROUP = typer.main.get_command(app)
assert isinstance(_GROUP, TyperGroup)
PARAMS: list[tuple[core.Command, _TyperParameter]] = [
    (command, param)
    for name in _GROUP.commands
    for command in [_GROUP.commands[name]]
    for param in command.params
    if isinstance(param, _TyperParameter)
]
IDS = [f"{command.name} {param.name}" for command, param in PARAMS]

SPELLINGS = [
    *("", " ", "0", "1", "-1", "-0", "5", " 5", "5 ", "\t5\n", "+5", "007", "00", "-007", "8192", "131072"),
    *("1.0", "1.5", "-1.5", "1.", ".5", "1e3", "1E3", "1e-9", "-1e-9", "1e+3", "1.5e10", "2e2.5"),
    *("0x10", "0o7", "0b1", "1_000", "1__0", "_1", "1,5", "١٢", "５", "²", "1 000", "--seq", "-", "--"),
    *("inf", "-inf", "Infinity", "nan", "NaN", "1e308", "1e309", "-1e309", "4.9e-324", "1e-400"),
    *("9" * 18, "-" + "9" * 18, "9" * 19, "9" * 30, "9" * 5000, "0." + "1" * 18, "1" * 18 + ".5"),
    *("1e0400", "1e" + "9" * 12, "1" * 400 + ".5", "0." + "0" * 400 + "1", "1" * 19 + "e-19"),
    *("True", "true", "TRUE", "False", "false", "yes", "no", "on", "off", "y", "n", "t", "f", "None"),
    *("x", "é", "日本", "\x1b[31m", "\udcff", "a\x00b", "a b", "'", '"', "\\", "/tmp/x", "~/a.txt"),
]
VALUES: list[Any] = [None, 0, 8, -1, 1.5, 1e-9, True, False, (), [], ("a", "1"), ["8"], b"8", 2**70]


def _values(param: _TyperParameter) -> list[Any]:
    """What the parameter may be handed: every spelling (in a tuple where it repeats), its default,
    each of its choices as a member and as spelled in three cases, and other Python values."""
    choices = param.type_descriptor.choices or ()
    words = [*SPELLINGS, *(v for c in choices for v in (c.value, c.value.upper(), c.value.title()))]
    spelled: list[Any] = list(words)
    if param.multiple or param.nargs == -1:
        spelled += [(w,) for w in words] + [(w, "1") for w in words]
    return [*spelled, *VALUES, *choices, param.default]


def _outcome(runtime: RuntimeParam, param: _TyperParameter, ctx: core.Context, value: Any) -> tuple[Any, ...]:
    """A value as its type and repr (so that 1 and 1.0, a member and its value, differ), or the
    refusal as the one line and exit code the CLI ends with."""
    try:
        got = runtime.coerce(value, param=param, ctx=ctx)
    except exceptions.BadParameter as error:
        return "refused", bad_value(error) or error.format_message(), error.exit_code
    return "value", _typed(got)


def _typed(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value), tuple(_typed(v) for v in value)
    return type(value), repr(value)


Where = tuple[core.Command, _TyperParameter]


def _both(where: Where, value: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    command, param = where
    ctx = core.Context(command)
    ours = param.get_runtime_param()
    assert isinstance(ours, OwnRuntimeParam), param.name  # every kind the commands declare is ours
    typers = build_runtime_param(param.type_descriptor)
    return _outcome(ours, param, ctx, value), _outcome(typers, param, ctx, value)


@pytest.mark.parametrize("where", PARAMS, ids=IDS)
def test_every_spelling_is_taken_or_refused_as_typer_does(where: Where) -> None:
    for value in _values(where[1]):
        ours, typers = _both(where, value)
        assert ours == typers, value


_NUMBERS = st.from_regex(r"\s?[-+]?[0-9_]{0,22}(\.[0-9_]{0,20})?([eE][-+]?[0-9]{0,4})?\s?", fullmatch=True)


@settings(max_examples=400, deadline=None)
@given(where=st.sampled_from(PARAMS), value=st.one_of(st.text(max_size=12), _NUMBERS))
def test_any_text_is_taken_or_refused_as_typer_does(where: Where, value: str) -> None:
    param = where[1]
    given = (value,) if param.multiple or param.nargs == -1 else value  # a repeated flag's: a tuple
    ours, typers = _both(where, given)
    assert ours == typers


@pytest.mark.parametrize(
    "args",
    [
        ["diagram", "--seq", "-1"],
        ["diagram", "--n-embd", "1.5"],
        ["diagram", "--n-embd", " 5"],
        ["table", "--depth", "x"],
        ["diagram", "--rope-theta", "1e3x"],
        ["diagram", "--dtype", "FLOAT32"],
        ["memory", "--optimizer", ""],
        ["source", "--width", "19"],
        ["cache", "empty"],
    ],
    ids=" ".join,
)
def test_a_refusal_ends_the_same_both_ways(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    ours = invoke(args)
    monkeypatch.setattr(lazy, "spare_pydantic", lambda command: None)
    typers = invoke(args)
    assert (ours.exit_code, ours.stderr) == (typers.exit_code, typers.stderr)
    one_error(ours, 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        *[("seq", "131072"), ("rotary_pct", "1e-9"), ("rope_theta", "500000.0"), ("dtype", "bfloat16")],
        *[("output", "out.svg"), ("input", ("x=B,T,C",)), ("batch", 8), ("norm", None)],
    ],
)
def test_the_spellings_one_types_are_ours_without_pydantic(name: str, value: Any) -> None:
    """Coerced without typer's adapter built: no fallback to it."""
    command = _GROUP.commands["diagram"]
    (param,) = (p for p in command.params if p.name == name)
    assert isinstance(param, _TyperParameter)
    ours = runtime_param(param.type_descriptor)  # a new one: the others fell back to typer's
    assert ours is not None
    got = ours.coerce(value, param=param, ctx=core.Context(command))
    assert got is None or isinstance(got, (int, float, str, list, Enum)), got
    assert "typer_s" not in ours.__dict__, name


@pytest.mark.parametrize(
    ("annotation", "settings"),
    [
        *[(int, {"max": 5}), (int, {"min": 1, "clamp": True}), (str, {"parser": str.upper})],
        *[(Path, {}), (list[Path], {}), (datetime, {}), (tuple[int, int], {})],
        *[(typer.FileText, {}), (complex, {})],
    ],
    ids=repr,
)
def test_what_is_not_known_here_is_left_to_typer(annotation: Any, settings: dict[str, Any]) -> None:
    assert runtime_param(resolve_type_descriptor(annotation, OptionInfo(**settings))) is None


@pytest.mark.parametrize("annotation", [int, float, str, bool, list[str], list[Shapes], Shapes])
def test_what_the_commands_declare_is_known_here(annotation: Any) -> None:
    assert runtime_param(resolve_type_descriptor(annotation, OptionInfo(min=1))) is not None


def test_a_typical_command_imports_no_pydantic() -> None:
    """A subprocess tracing the 70B llama shape with many flags, about 2 s."""
    args = ["diagram", "--preset", "llama", "--n-embd", "8192", "--n-head", "64", "--n-kv-head", "8"]
    args += ["--seq", "131072", "--batch", "1", "--n-layer", "80", "--rope-theta", "500000"]
    args += ["--dtype", "bfloat16", "--no-cache", "--width", "100", "--shapes", "both", "--no-bias"]
    imported = imported_by(args)
    assert "torch" in imported and "pydantic" not in imported, sorted(m for m in imported if "pydantic" in m)


@pytest.mark.parametrize("typer_has_coercion", [True, False])
def test_a_typer_before_0_29_keeps_its_own_coercion(
    typer_has_coercion: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """typer before 0.29 has no typer._coercion, so cli/coercion.py cannot import: each command is then
    left with typer's coercion (click's types, no pydantic), not refused at its first use."""
    if not typer_has_coercion:
        monkeypatch.setitem(sys.modules, "blocktrace.cli.coercion", None)  # its import raises ImportError
    command = lazy.get_command_from_info(
        app.waiting["diagram"], pretty_exceptions_short=True, rich_markup_mode=None
    )
    lazy.spare_pydantic(command)
    own = [p.name for p in command.params if isinstance(getattr(p, "_runtime_param", None), OwnRuntimeParam)]
    assert bool(own) == typer_has_coercion
