"""What keeps `--help` quick: each command built only when it is named, and the literals the CLI
keeps so that its help imports little (choices, the version) equal to what they stand for. In-process,
a few milliseconds each."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from blocktrace.cli import lazy
from tests.harness import invoke, one_error

ROOT = Path(__file__).parent.parent


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the commands whose click parameters get built, in order."""
    names: list[str] = []
    build = lazy.get_command_from_info

    def counted(info, **settings):  # type: ignore[no-untyped-def]
        command = build(info, **settings)
        names.append(command.name)
        return command

    monkeypatch.setattr(lazy, "get_command_from_info", counted)
    return names


def test_the_group_help_builds_no_command(built: list[str]) -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0 and "  diagram     Draw the Block's data flow" in result.stdout
    assert "  docs        Rewrite every" in result.stdout  # every command listed, by its first line
    assert built == []


@pytest.mark.parametrize("command", ["diagram", "cache", "docs"])
def test_a_command_help_builds_that_command_alone(built: list[str], command: str) -> None:
    result = invoke([command, "--help"])
    assert result.exit_code == 0 and result.stdout.startswith(f"Usage: blocktrace {command} ")
    assert built == [command]


def test_a_mistyped_command_is_still_answered_from_every_name(built: list[str]) -> None:
    result = invoke(["diagrm"])
    assert result.exit_code == 2 and "Did you mean 'diagram'?" in result.stderr
    assert built == []


def test_the_choices_the_cli_keeps_are_those_of_the_stages() -> None:
    from blocktrace.cli import choices
    from blocktrace.tracing.grad import Init
    from blocktrace.views.memory.build import Optimizer

    for ours, theirs in ((choices.Optimizer, Optimizer), (choices.GradInit, Init)):
        assert [(m.name, m.value) for m in ours] == [(m.name, m.value) for m in theirs]


def test_the_version_is_the_distribution_s() -> None:
    from importlib.metadata import version

    import blocktrace

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert blocktrace.__version__ == declared == version("blocktrace-cli")
    assert invoke(["--version"]).stdout == f"blocktrace {declared}\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["diagram", "--seq", "-1"], "--seq must be a whole number >= 1, not -1"),
        (["table", "--n-embd", "0"], "--n-embd must be a whole number >= 1, not 0"),
        (["memory", "--batch", "1.5"], "--batch must be a whole number >= 1, not 1.5"),
        (["source", "--width", "3"], "--width must be a whole number >= 20, not 3"),
        (["table", "--depth", "deep"], "--depth must be a whole number >= 0, not 'deep'"),
        (["grad", "--seed", "-1"], "--seed must be a whole number >= 0, not -1"),
        (["diagram", "--rope-theta", "\x1b[31m"], "--rope-theta must be a number, not '\\x1b[31m'"),
        (["diagram", "--dtype", "fp8"], "--dtype must be one of float32, bfloat16, float16, not 'fp8'"),
        (["grad", "--init", ""], "--init must be one of torch, xavier, not ''"),
        (["cache", "empty"], "blocktrace cache takes one of info, clear, not 'empty'"),
        (["completion", "tcsh"], "blocktrace completion takes one of bash, zsh, fish, not 'tcsh'"),
    ],
)
def test_a_refused_value_is_said_in_blocktrace_s_words(args: list[str], line: str) -> None:
    """What was wrong and what is accepted, never typer's or pydantic's phrasing."""
    assert one_error(invoke(args), 2) == f"blocktrace: error: {line}"


def test_the_command_sets_its_collector_before_importing_typer() -> None:
    """A subprocess, about 0.2 s: the order of imports is the process's own."""
    import subprocess
    import sys

    code = (
        "import gc, os, sys\n"
        "seen = []\n"
        "os._exit = sys.exit  # the command ends without teardown: here it ends as sys.exit does\n"
        "gc.set_threshold = lambda *limits: seen.append(('typer' in sys.modules, limits))\n"
        "sys.argv = ['blocktrace', '--version']\n"
        "from blocktrace.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(seen)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[(False, (20000, 50, 1000))]", result.stdout
