"""Run the CLI in-process as a shell would, with any stdout: a pipe or a terminal, full, closed,
broken (its reader went away) or 7-bit ASCII only, and a chosen environment.

Unlike typer's CliRunner, nothing here catches an exception for the command: one that escapes
`invoke` is a traceback the user would have seen, and fails the test that met it.
"""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blocktrace.cli import app

if TYPE_CHECKING:
    from blocktrace.tracing.trace import Trace

ANSI = "\x1b["
# the Block flags of a trace that takes milliseconds
TINY = ["--n-embd", "32", "--n-head", "4", "--seq", "6", "--batch", "2", "--n-layer", "1"]


def tiny_llama(**changes: object) -> dict[str, object]:
    """A config.json of a Llama that traces in a fraction of a second (GQA: 6 heads, 2 for k and v),
    with `changes` in place."""
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 48,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "intermediate_size": 80,
        "vocab_size": 97,
        "num_hidden_layers": 2,
        **changes,
    }


STDOUTS = ("pipe", "terminal", "full", "broken", "closed")


class Sink(io.RawIOBase):
    """The far end of stdout: it keeps what it is given, or fails as a full disk or a closed pipe."""

    def __init__(self, mode: str, tty: bool):
        super().__init__()
        self.mode, self.tty, self.data = mode, tty, bytearray()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.tty

    def write(self, b) -> int:  # type: ignore[override]
        if self.mode == "full":
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.mode == "broken":
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        self.data += bytes(b)
        return len(b)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@contextmanager
def environment(env: dict[str, str | None]) -> Iterator[None]:
    """os.environ with `env` applied (None removes a name), restored afterwards."""
    saved = dict(os.environ)
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def invoke(
    args: list[str],
    stdout: str = "pipe",
    encoding: str = "utf-8",
    env: dict[str, str | None] | None = None,
) -> Result:
    """`blocktrace *args` with stdout one of STDOUTS, in `encoding`, under `env`."""
    assert stdout in STDOUTS, stdout
    sink = Sink("ok" if stdout in ("pipe", "terminal") else stdout, tty=stdout == "terminal")
    out = io.TextIOWrapper(io.BufferedWriter(sink), encoding=encoding, errors="strict")
    err = io.StringIO()
    saved = sys.stdout, sys.stderr
    code: object = 0
    try:
        with environment(env or {}):
            sys.stdout, sys.stderr = (None if stdout == "closed" else out), err  # type: ignore[assignment]
            try:
                app(args, prog_name="blocktrace")
            except SystemExit as exit_:
                code = exit_.code
    finally:
        sys.stdout, sys.stderr = saved
        sink.mode = "ok"  # what is still buffered may go now, so that closing it raises nothing
        out.close()
    exit_code = 0 if code is None else code if isinstance(code, int) else 1
    return Result(exit_code, sink.data.decode(encoding, errors="replace"), err.getvalue())


def one_error(result: Result, code: int, *words: str) -> str:
    """The one stderr line of a failed run, no traceback, checked for its exit code and words."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("blocktrace: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def imported_by(args: list[str]) -> set[str]:
    """The modules imported by a fresh process that ran `blocktrace *args`, which must succeed."""
    code = (
        "import sys\n"
        "from blocktrace.cli import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.splitlines()[-1].split())


def formulas_of(trace: Trace) -> list[str]:
    """The formulas `diagram --formulas` prints for `trace`."""
    from blocktrace.views.diagram.formulas import formulas
    from blocktrace.views.steps import StepTree

    return formulas(StepTree(trace))
