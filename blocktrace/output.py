"""Trace -> what the user reads: text, markdown or json (svg and html: pictures.py), to stdout or a file.

Colour and the terminal's width only when stdout is a terminal (then rich decides about colour:
NO_COLOR, TERM); a file or a pipe gets the same plain text whatever COLUMNS or FORCE_COLOR say.
7-bit ASCII when asked, or when stdout's encoding cannot carry the box-drawing characters.

Every write goes through `write_output`: `-o FILE` is written atomically (a temporary file beside
it, then a rename, so a failed write leaves an existing file as it was and nothing half-written),
`-o -` or no `-o` is stdout. A failure is an `OutputError` with a sentence and an exit code; a
reader that went away (`| head`) is `PipeClosed`, which is no failure.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from blocktrace.formulas import formulas as formula_lines
from blocktrace.layout import layout
from blocktrace.render import Cell, render, to_text
from blocktrace.shapes import Shapes
from blocktrace.trace import Trace

STYLES = {
    "highway": "bold yellow",
    "merge": "bold yellow",
    "title": "bold",
    "name": "cyan",
    "shape": "green",
    "note": "dim",
    "expr": "italic yellow",
    "section": "bold magenta",
    "terminal": "bold",
    "box": "blue",
}
SOURCES = {
    "probe": "2 tiny CPU probes, scaled exactly",
    "meta": "the meta device",
    "cpu": "a real CPU run",
    "cuda": "a real CUDA run",
}


STDOUT = "-"  # as --output: write to stdout
_CLOSED = "stdout is closed; redirect it to a file, or write one with -o FILE"


class OutputError(Exception):
    """The result could not be written (or drawn) as asked: one sentence, and the exit code, 2 for a
    bad request (a missing folder, a folder as a file, a --width too narrow) and 1 for a failed write
    (a full disk, an I/O error)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class PipeClosed(Exception):
    """The reader of stdout went away (`| head -1`, `| true`): stop quietly, with success."""


def notice(kind: str, message: str) -> None:
    """One line on stderr, "blocktrace: KIND: MESSAGE", where there is a stderr to write to."""
    if sys.stderr is None:
        return
    with suppress(OSError, ValueError):
        sys.stderr.write(f"blocktrace: {kind}: {message}\n")
        sys.stderr.flush()


def header(trace: Trace, width: int | None = None) -> str:
    source = SOURCES.get(trace.device, trace.device)
    dtype = f" ({trace.float_dtype})" if trace.float_dtype else ""
    adds = len(trace.residual_adds)
    text = (
        f"{trace.model}{dtype}: {len(trace.calls)} module calls, {len(trace.ops)} ops, "
        f"{adds} residual add{'' if adds == 1 else 's'} (shapes from {source})"
    )
    return "\n".join(textwrap.wrap(text, width)) if width else text


def legend(trace: Trace) -> list[str]:
    """One line per symbol on the page: its value and what it stands for."""
    if not trace.symbols:
        return []
    name_w = max(len(n) for n in trace.symbols)
    value_w = max(len(str(v)) for v in trace.symbols.values())
    return [
        f"{n:<{name_w}} = {v:<{value_w}}  {trace.meanings.get(n, '')}".rstrip()
        for n, v in trace.symbols.items()
    ]


def text_report(
    rows: list[list[Cell]],
    trace: Trace,
    shapes: Shapes,
    formulas: bool,
    width: int | None = None,
    collapse: bool = True,
) -> str:
    before, after = text_frame(trace, shapes, formulas, width, collapse)
    return before + to_text(rows) + after


def text_frame(
    trace: Trace, shapes: Shapes, formulas: bool, width: int | None = None, collapse: bool = True
) -> tuple[str, str]:
    """What the text report says before the diagram (the header) and after it (legend, formulas)."""
    after: list[str] = []
    if _shows_legend(trace, shapes):
        after += ["", *legend(trace)]
    if formulas:
        after += ["", *formula_lines(trace, collapse)]
    return header(trace, width) + "\n\n", "".join(line + "\n" for line in after)


def markdown_report(
    rows: list[list[Cell]], trace: Trace, shapes: Shapes, formulas: bool, collapse: bool = True
) -> str:
    parts = [f"**{header(trace)}**", "", "```text", to_text(rows).rstrip("\n"), "```"]
    if _shows_legend(trace, shapes):
        parts += ["", "| symbol | value | meaning |", "| --- | --- | --- |"]
        parts += [f"| {n} | {v} | {trace.meanings.get(n, '')} |" for n, v in trace.symbols.items()]
    if formulas:
        parts += ["", *(f"- `{line}`" for line in formula_lines(trace, collapse))]
    return "\n".join(parts) + "\n"


def _shows_legend(trace: Trace, shapes: Shapes) -> bool:
    """The legend defines the symbols on the page: those of the shapes, unless they are written in
    numbers (the formulas' definitions name no size symbol: they say what d is)."""
    return shapes != Shapes.concrete and bool(trace.symbols)


def emit(
    trace: Trace,
    fmt: str | None = None,
    shapes: Shapes = Shapes.symbolic,
    formulas: bool = False,
    ascii_only: bool = False,
    width: int | None = None,
    output: str | Path | None = None,
    stream: TextIO | None = None,
    collapse: bool = True,
) -> None:
    """Write the trace as `fmt` (None: as `output`'s suffix says, else text) to `output` (a path, or
    "-" / None for `stream`, stdout by default), through the writer formats.py names for it."""
    from blocktrace import formats

    out = None if output is None else str(output)
    options = {"shapes": shapes, "formulas": formulas, "ascii_only": ascii_only, "width": width}
    formats.write("diagram", fmt, trace, out, stream, collapse=collapse, **options)


def drawing(
    trace: Trace,
    shapes: Shapes,
    fit: int | None,
    collapse: bool,
    ascii_only: bool,
    width: int | None,
) -> list[list[Cell]]:
    """The diagram's cells, laid out to `fit` columns as far as it allows. `width` is a limit asked
    for (--width): a drawing that cannot fit in it is an OutputError (exit 2)."""
    diagram = layout(trace, shapes, fit, collapse)
    if width is not None and diagram.width > width:
        raise OutputError(
            f"--width {width} is too narrow for this drawing: it needs at least {diagram.width} columns", 2
        )
    return render(diagram, ascii_only)


def write_json(trace: Trace, output: str | None, stream: TextIO | None = None, **_: object) -> None:
    write_output(trace.to_json() + "\n", output, stream)


def write_text(
    trace: Trace,
    output: str | None,
    stream: TextIO | None = None,
    *,
    shapes: Shapes = Shapes.symbolic,
    formulas: bool = False,
    ascii_only: bool = False,
    width: int | None = None,
    collapse: bool = True,
) -> None:
    """The text report. Without a --width, a terminal's width is fitted as far as the drawing allows,
    and a terminal gets colour (where rich allows it)."""
    to_stdout = is_stdout(output)
    if to_stdout:
        stream = stream or stdout()
    console = _terminal(stream) if to_stdout else None
    fit = width if width is not None else (console.width if console is not None else None)
    ascii_only = ascii_only or (to_stdout and not can_encode(stream))
    rows = drawing(trace, shapes, fit, collapse, ascii_only, width)
    if console is not None and console.color_system and not console.no_color:
        with stdout_errors():
            console.print(styled(rows, *text_frame(trace, shapes, formulas, fit, collapse)), end="")
            console.file.flush()
        return
    write_output(text_report(rows, trace, shapes, formulas, fit, collapse), output, stream)


def write_markdown(
    trace: Trace,
    output: str | None,
    stream: TextIO | None = None,
    *,
    shapes: Shapes = Shapes.symbolic,
    formulas: bool = False,
    ascii_only: bool = False,
    width: int | None = None,
    collapse: bool = True,
) -> None:
    """A fenced block, then the legend as a table (and the formulas); never fitted to a terminal."""
    if is_stdout(output):
        stream = stream or stdout()
        ascii_only = ascii_only or not can_encode(stream)
    rows = drawing(trace, shapes, width, collapse, ascii_only, width)
    write_output(markdown_report(rows, trace, shapes, formulas, collapse), output, stream)


def _terminal(stream: TextIO | None):
    """A rich Console for `stream` if it is a terminal; None otherwise (FORCE_COLOR does not make a
    pipe or a file a terminal), so that piped output never pays for importing rich."""
    if stream is None or not isatty(stream):
        return None
    from rich.console import Console

    console = Console(file=stream, highlight=False, soft_wrap=True)
    return console if console.is_terminal else None


def terminal_width(stream: TextIO | None) -> int | None:
    """The width of the terminal `stream` writes to; None for a file or a pipe (no limit)."""
    console = _terminal(stream)
    return None if console is None else console.width


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # a closed or a strange stream
        return False


def styled(rows: list[list[Cell]], before: str, after: str):
    """The report as rich Text: the diagram's cells coloured by their style, a run at a time."""
    from rich.text import Text

    styled = Text(before)
    for line, cells in zip(to_text(rows).splitlines(), rows, strict=True):
        start = 0
        for x in range(1, len(line) + 1):
            if x == len(line) or cells[x].style != cells[start].style:
                styled.append(line[start:x], STYLES.get(cells[start].style, ""))
                start = x
        styled.append("\n")
    styled.append(after)
    return styled


# --- writing ------------------------------------------------------------------------------------


def is_stdout(output: str | Path | None) -> bool:
    return output is None or str(output) == STDOUT


def stdout() -> TextIO:
    """sys.stdout, or an OutputError if the shell closed it (`blocktrace diagram >&-`)."""
    if sys.stdout is None:
        raise OutputError(_CLOSED, 1)
    return sys.stdout


def write_output(text: str, output: str | Path | None, stream: TextIO | None = None) -> None:
    """`text` to the file `output` (atomically), or to `stream` / stdout when output is None or "-"."""
    if is_stdout(output):
        stream = stream or stdout()
        with stdout_errors(stream):
            stream.write(text)
            stream.flush()
    else:
        assert output is not None
        write_file(output, text)


@contextmanager
def stdout_errors(stream: TextIO | None = None) -> Iterator[None]:
    """Turn a failed write to stdout into PipeClosed (the reader went away) or an OutputError."""
    try:
        yield
    except BrokenPipeError as error:
        raise PipeClosed() from error
    except UnicodeEncodeError as error:
        encoding = getattr(stream or sys.stdout, "encoding", None) or error.encoding
        bad = error.object[error.start : error.end]
        raise OutputError(
            f"stdout's encoding ({encoding}) cannot carry {bad!r}; "
            "set PYTHONIOENCODING=utf-8, or write a file with -o FILE",
            1,
        ) from error
    except OSError as error:
        if error.errno == errno.EBADF:
            raise OutputError(_CLOSED, 1) from error
        raise OutputError(f"cannot write to stdout: {error.strerror or error}", 1) from error


# errno -> (what went wrong, whether it is the request's fault: exit 2, or the run's: exit 1)
_REASONS = {
    errno.ENOENT: ("its folder does not exist; create it first, or choose another path", 2),
    errno.ENOTDIR: ("a part of the path is not a folder", 2),
    errno.EISDIR: ("it is a folder; name a file", 2),
    errno.EACCES: ("permission denied; choose a place you can write to", 2),
    errno.EPERM: ("permission denied; choose a place you can write to", 2),
    errno.EROFS: ("the file system is read-only", 2),
    errno.ENAMETOOLONG: ("the name is too long", 2),
    errno.ELOOP: ("too many symbolic links", 2),
    errno.EINVAL: ("the name is not valid here", 2),
    errno.ENOSPC: ("no space left on the device; nothing was written", 1),
    errno.EDQUOT: ("disk quota exceeded; nothing was written", 1),
}


def _file_error(path: str, error: OSError) -> OutputError:
    reason, code = _REASONS.get(error.errno or 0, (f"{(error.strerror or str(error)).lower()}", 1))
    return OutputError(f"cannot write {path!r}: {reason}", code)


def write_file(output: str | Path, text: str) -> None:
    """Write `text` to `output` as UTF-8, atomically: into a temporary file in the same folder, then
    renamed over it. On any failure (or Ctrl-C) the temporary file is removed and an existing file is
    left untouched. A device or a FIFO (/dev/null, a process substitution) is written through."""
    name = str(output)
    if not name:
        raise OutputError("--output is empty; name a file, or - for stdout", 2)
    if name.endswith(os.sep):
        raise OutputError(f"cannot write {name!r}: it names a folder; name a file", 2)
    data = text.encode("utf-8")
    target = os.path.realpath(name)  # write through a symlink, not over it
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as error:
        raise _file_error(name, error) from error
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise _file_error(name, IsADirectoryError(errno.EISDIR, "Is a directory"))
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            with open(target, "wb") as f:
                f.write(data)
        except OSError as error:
            raise _file_error(name, error) from error
        return
    folder, base = os.path.split(target)
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".tmp")
    except OSError as error:
        raise _file_error(name, error) from error
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        os.replace(temp, target)
    except BaseException as error:
        with suppress(OSError):
            os.unlink(temp)
        if isinstance(error, OSError):
            raise _file_error(name, error) from error
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def can_encode(stream: TextIO | None, sample: str = "┌─┐│▼◄×…") -> bool:
    try:
        sample.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
