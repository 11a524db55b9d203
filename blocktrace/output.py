"""Trace -> what the user reads: text, markdown or json, to stdout or a file.

Colour only when writing to a terminal that takes it (rich decides: NO_COLOR, FORCE_COLOR, TERM);
plain text everywhere else. 7-bit ASCII when asked, or when stdout's encoding cannot carry the
box-drawing characters.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import TextIO

from blocktrace.formulas import formulas as formula_lines
from blocktrace.layout import layout
from blocktrace.render import Cell, render, to_text
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


def header(trace: Trace, width: int | None = None) -> str:
    source = SOURCES.get(trace.device, trace.device)
    adds = len(trace.residual_adds)
    text = (
        f"{trace.model}: {len(trace.calls)} module calls, {len(trace.ops)} ops, "
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
    shapes: str,
    formulas: bool,
    width: int | None = None,
    collapse: bool = True,
) -> str:
    before, after = text_frame(trace, shapes, formulas, width, collapse)
    return before + to_text(rows) + after


def text_frame(
    trace: Trace, shapes: str, formulas: bool, width: int | None = None, collapse: bool = True
) -> tuple[str, str]:
    """What the text report says before the diagram (the header) and after it (legend, formulas)."""
    after: list[str] = []
    if _shows_legend(trace, shapes):
        after += ["", *legend(trace)]
    if formulas:
        after += ["", *formula_lines(trace, collapse)]
    return header(trace, width) + "\n\n", "".join(line + "\n" for line in after)


def markdown_report(
    rows: list[list[Cell]], trace: Trace, shapes: str, formulas: bool, collapse: bool = True
) -> str:
    parts = [f"**{header(trace)}**", "", "```text", to_text(rows).rstrip("\n"), "```"]
    if _shows_legend(trace, shapes):
        parts += ["", "| symbol | value | meaning |", "| --- | --- | --- |"]
        parts += [f"| {n} | {v} | {trace.meanings.get(n, '')} |" for n, v in trace.symbols.items()]
    if formulas:
        parts += ["", *(f"- `{line}`" for line in formula_lines(trace, collapse))]
    return "\n".join(parts) + "\n"


def _shows_legend(trace: Trace, shapes: str) -> bool:
    return shapes != "concrete" and bool(trace.symbols)


def _can_encode(stream: TextIO, sample: str = "┌─┐│▼◄×…") -> bool:
    try:
        sample.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def emit(
    trace: Trace,
    fmt: str = "text",
    shapes: str = "symbolic",
    formulas: bool = False,
    ascii_only: bool = False,
    width: int | None = None,
    output: Path | None = None,
    stream: TextIO | None = None,
    collapse: bool = True,
) -> None:
    """Write the trace as `fmt` to `output`, or to `stream` (stdout by default)."""
    stream = stream or sys.stdout
    if fmt == "json":
        return _write(trace.to_json() + "\n", output, stream)
    console = _terminal(stream) if output is None else None
    if width is None and console is not None:
        width = console.width
    ascii_only = ascii_only or (output is None and not _can_encode(stream))
    rows = render(layout(trace, shapes, width, collapse), ascii_only)
    if fmt == "markdown":
        return _write(markdown_report(rows, trace, shapes, formulas, collapse), output, stream)
    if console is not None and console.color_system and not console.no_color:
        console.print(_styled(rows, *text_frame(trace, shapes, formulas, width, collapse)), end="")
        return None
    return _write(text_report(rows, trace, shapes, formulas, width, collapse), output, stream)


def _terminal(stream: TextIO):
    """A rich Console for `stream` if it is a terminal (or FORCE_COLOR says to treat it as one);
    None otherwise, so that piped output never pays for importing rich."""
    if not (stream.isatty() or os.environ.get("FORCE_COLOR")):
        return None
    from rich.console import Console

    console = Console(file=stream, highlight=False, soft_wrap=True)
    return console if console.is_terminal else None


def _styled(rows: list[list[Cell]], before: str, after: str):
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


def _write(text: str, output: Path | None, stream: TextIO) -> None:
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        stream.write(text)
        stream.flush()
