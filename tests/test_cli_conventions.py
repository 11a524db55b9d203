"""The command line's conventions: bare `blocktrace` is the help, the help is in panels and fits
80 columns, `--traceback` shows what a bug report needs, and the completion scripts complete."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.harness import TINY, imported_by, invoke, one_error

PANELS = ["Model source (default: the built-in Block):", "Block family:", "Sizes:", "Tracing:", "Output:"]


def test_bare_blocktrace_prints_the_help_and_exits_0() -> None:
    result = invoke([])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: blocktrace [OPTIONS]") and "\nCommands:\n" in result.stdout
    assert "  diagram " in result.stdout and "Start with: blocktrace diagram" in result.stdout


@pytest.mark.parametrize("command", ["diagram", "table", "source"])
def test_help_is_in_panels_and_fits_80_columns(command: str) -> None:
    text = invoke([command, "--help"], env={"COLUMNS": "80"}).stdout
    headings = [line for line in text.splitlines() if line and not line[0].isspace() and line.endswith(":")]
    assert headings[-6:] == [*PANELS, "Options:"], headings
    flags = [
        text.index("\n  " + flag)
        for flag in ("--hf CONFIG", "--preset", "--n-embd", "--device", "-o, --output")
    ]
    assert flags == sorted(flags)
    assert max(len(line) for line in text.splitlines() if "blocktrace " not in line) <= 80
    seq = re.search(r"--seq <int range>\s+(.*?)\[", text, re.DOTALL)
    assert seq is not None and "probe" not in seq[1] and "full size" in seq[1]


def test_cache_shows_its_choices_plainly() -> None:
    text = invoke(["cache", "--help"]).stdout
    assert "Usage: blocktrace cache [OPTIONS] [info|clear]" in text and "[ACTION]" not in text


def test_a_failure_shows_its_traceback_only_when_asked() -> None:
    bad = [*TINY, "--n-embd", "30"]  # 30 is not divisible by 4 heads
    one_error(invoke(["diagram", *bad]), 2, "divisible")
    for args, env in ((["--traceback", "diagram", *bad], {}), (["diagram", *bad], {"BLOCKTRACE_DEBUG": "1"})):
        result = invoke(args, env=env)
        assert result.exit_code == 2 and result.stderr.startswith("Traceback (most recent call last):")
        assert "ConfigError" in result.stderr
        assert (
            result.stderr.splitlines()[-1].startswith("blocktrace: error: ") and "divisible" in result.stderr
        )


@pytest.mark.parametrize(
    ("shell", "env", "expected"),
    [
        ("bash", {"COMP_WORDS": "blocktrace diagram --preset l", "COMP_CWORD": "3"}, "llama"),
        ("zsh", {"_TYPER_COMPLETE_ARGS": "blocktrace diagram --preset l"}, '"llama"'),
        (
            "fish",
            {"_TYPER_COMPLETE_ARGS": "blocktrace ta", "_TYPER_COMPLETE_FISH_ACTION": "get-args"},
            "table",
        ),
    ],
)
def test_the_completion_scripts_complete(shell: str, env: dict[str, str], expected: str) -> None:
    command = shutil.which("blocktrace")
    assert command is not None
    script = subprocess.run([command, "completion", shell], capture_output=True, text=True, check=True).stdout
    assert f"_BLOCKTRACE_COMPLETE=complete_{shell}" in script
    answer = subprocess.run(
        [command],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "_BLOCKTRACE_COMPLETE": f"complete_{shell}"},
        check=True,
    )
    assert expected in answer.stdout and answer.stderr == ""


def test_completion_refuses_another_shell() -> None:
    one_error(invoke(["completion", "tcsh"]), 2, "tcsh")


def _blocktrace() -> list[str]:
    command = shutil.which("blocktrace")
    assert command is not None
    return [command]


def _in_a_pty(args: list[str], command: list[str] | None = None) -> str:
    """What a terminal shows of `blocktrace *args` (or `command *args`): stdout and stderr both the
    pty's."""
    import pty

    leader, follower = pty.openpty()
    run = [*(command or _blocktrace()), *args]
    with subprocess.Popen(run, stdout=follower, stderr=follower, stdin=follower) as process:
        os.close(follower)
        shown = bytearray()
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the pty is closed once the process has gone
                break
            if not chunk:
                break
            shown += chunk
        process.wait()
    os.close(leader)
    assert process.returncode == 0, shown
    return shown.decode()


SLOW = ["diagram", *TINY, "--no-cache", "--device", "meta"]  # importing torch alone is over a second
# the line at once: on a fast machine torch's import can end before the second the line waits for
EAGER = [sys.executable, str(Path(__file__).parent / "eager_progress.py")]


def test_progress_shows_on_a_terminal_and_is_wiped() -> None:
    shown = _in_a_pty(SLOW, EAGER)
    assert "blocktrace: importing torch …" in shown
    last = shown.rindex(" …")  # the line's last state is wiped before the drawing
    assert last < shown.index("RMSNorm") and "\r\x1b[K" in shown[last : shown.index("RMSNorm")]


def test_progress_never_goes_into_a_pipe_a_file_or_json(tmp_path) -> None:
    command = shutil.which("blocktrace")
    assert command is not None
    piped = subprocess.run([command, *SLOW], capture_output=True, text=True, check=True)
    assert piped.stderr == "" and "blocktrace:" not in piped.stdout
    with open(tmp_path / "err", "w") as err:
        subprocess.run([command, *SLOW], stdout=subprocess.DEVNULL, stderr=err, check=True)
    assert (tmp_path / "err").read_text() == ""
    assert "importing torch" not in _in_a_pty([*SLOW, "--format", "json"], EAGER)


# tests/slow_render.py shows the line at once and takes a third of a second to write the drawing
SLOW_RENDER = [sys.executable, str(Path(__file__).parent / "slow_render.py")]


def test_progress_says_it_is_rendering_on_a_terminal_and_never_in_a_pipe() -> None:
    """About 1.5 s: two runs answered from the cache, filled first in this process."""
    invoke(["diagram", *TINY])
    shown = _in_a_pty(["diagram", *TINY], SLOW_RENDER)
    assert "blocktrace: rendering …" in shown, shown
    last = shown.rindex(" …")  # wiped before the drawing
    assert last < shown.index("RMSNorm") and "\r\x1b[K" in shown[last : shown.index("RMSNorm")]
    piped = subprocess.run([*SLOW_RENDER, "diagram", *TINY], capture_output=True, text=True, check=True)
    assert piped.stderr == "" and "RMSNorm" in piped.stdout


LAYERS = ["diagram", "--module", "tests/slow_layers.py:slow_stack", "--device", "cpu", "--no-cache"]


def test_progress_follows_the_layers_on_a_terminal_and_never_in_a_pipe() -> None:
    """About 4 s: importing torch, then three layers of a quarter of a second each."""
    shown = _in_a_pty(LAYERS, EAGER)
    assert "blocktrace: tracing at full size on cpu: layer 2 of 3 …" in shown, shown
    assert "importing torch: layer" not in shown  # what runs once torch is in is not its import
    command = shutil.which("blocktrace")
    assert command is not None
    piped = subprocess.run([command, *LAYERS], capture_output=True, text=True, check=True)
    assert piped.stderr == "" and "layer" not in piped.stdout


def test_the_tracer_names_each_layer_it_enters(monkeypatch: pytest.MonkeyPatch) -> None:
    from blocktrace import progress
    from blocktrace.model import build_module, example_inputs
    from blocktrace.tracing.tracer import trace
    from tests.models import SMALL

    stages: list[str] = []
    monkeypatch.setattr(progress, "stage", stages.append)
    monkeypatch.setattr(progress, "current", "probing")
    config = replace(SMALL, n_layer=3)
    trace(build_module(config, "cpu"), example_inputs(config, "cpu"))
    assert stages == [f"probing: layer {k} of 3" for k in (1, 2, 3)] + ["probing"]


# what the help may import of blocktrace: the CLI, and the tables its choices and words come from
HELP_READS = {"cli", "cli.app", "cli.clicks", "cli.commands", "cli.docs", "cli.options", "cli.progress"}
HELP_READS |= {"cli.choices", "cli.coercion", "cli.lazy", "cli.wording", "errors", "progress", "output"}
HELP_READS |= {"models", "output.formats", "models.request", "models.spec", "models.block", "views"}
HELP_READS |= {"models.block.families", "views.shapes"}


@pytest.mark.parametrize("args", [["--help"], ["diagram", "--help"]], ids=" ".join)
def test_help_imports_no_torch_rich_pydantic_nor_what_traces(args: list[str]) -> None:
    """`--help` stays quick by importing little: no torch, no rich, no pydantic (typer's coercion
    of a flag's value), none of the tracing, sizing, model building or drawing. About 0.3 s."""
    imported = imported_by(args)
    assert not imported & {"torch", "rich", "pydantic", "transformers"}, sorted(imported)
    ours = {m.removeprefix("blocktrace.") for m in imported if m.startswith("blocktrace.")}
    assert ours <= HELP_READS, sorted(ours - HELP_READS)
