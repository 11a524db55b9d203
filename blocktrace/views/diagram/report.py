"""The diagram as text, markdown or JSON (svg and html: output/pictures.py): the header, the drawing,
the legend and the formulas.

Colour and the terminal's width only when stdout is a terminal (then rich decides about colour:
NO_COLOR, TERM); a file or a pipe gets the same plain text whatever COLUMNS or FORCE_COLOR say.
7-bit ASCII when asked, or when stdout's encoding cannot carry the box-drawing characters.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from blocktrace.errors import OutputError
from blocktrace.output.sink import can_encode, is_stdout, stdout, stdout_errors, terminal, write_output
from blocktrace.tracing.trace import Trace
from blocktrace.views.captions import header, legend
from blocktrace.views.diagram.formulas import formulas as formula_lines
from blocktrace.views.diagram.layout import layout
from blocktrace.views.diagram.render import Cell, render, to_text
from blocktrace.views.shapes import Shapes
from blocktrace.views.steps import StepTree

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


def text_report(
    rows: list[list[Cell]], tree: StepTree, shapes: Shapes, formulas: bool, width: int | None = None
) -> str:
    before, after = text_frame(tree, shapes, formulas, width)
    return before + to_text(rows) + after


def text_frame(tree: StepTree, shapes: Shapes, formulas: bool, width: int | None = None) -> tuple[str, str]:
    """What the text report says before the diagram (the header) and after it (legend, formulas)."""
    trace = tree.trace
    after: list[str] = []
    if _shows_legend(trace, shapes):
        after += ["", *legend(trace)]
    if formulas:
        after += ["", *formula_lines(tree)]
    return header(trace, width) + "\n\n", "".join(line + "\n" for line in after)


def markdown_report(rows: list[list[Cell]], tree: StepTree, shapes: Shapes, formulas: bool) -> str:
    trace = tree.trace
    parts = [f"**{header(trace)}**", "", "```text", to_text(rows).rstrip("\n"), "```"]
    if _shows_legend(trace, shapes):
        parts += ["", "| symbol | value | meaning |", "| --- | --- | --- |"]
        parts += [f"| {n} | {v} | {trace.meanings.get(n, '')} |" for n, v in trace.symbols.items()]
    if formulas:
        parts += ["", *(f"- `{line}`" for line in formula_lines(tree))]
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
    from blocktrace.output import formats

    out = None if output is None else str(output)
    options = {"shapes": shapes, "formulas": formulas, "ascii_only": ascii_only, "width": width}
    formats.write("diagram", fmt, trace, out, stream, collapse=collapse, **options)


def drawing(
    tree: StepTree, shapes: Shapes, fit: int | None, ascii_only: bool, width: int | None
) -> list[list[Cell]]:
    """The diagram's cells, laid out to `fit` columns as far as it allows. `width` is a limit asked
    for (--width): a drawing that cannot fit in it is an OutputError (exit 2)."""
    diagram = layout(tree, shapes, fit)
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
    console = terminal(stream) if to_stdout else None
    fit = width if width is not None else (console.width if console is not None else None)
    ascii_only = ascii_only or (to_stdout and not can_encode(stream))
    tree = StepTree(trace, collapse)  # the one the drawing and the formulas read
    rows = drawing(tree, shapes, fit, ascii_only, width)
    if console is not None and console.color_system and not console.no_color:
        with stdout_errors():
            console.print(styled(rows, *text_frame(tree, shapes, formulas, fit)), end="")
            console.file.flush()
        return
    write_output(text_report(rows, tree, shapes, formulas, fit), output, stream)


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
    tree = StepTree(trace, collapse)
    rows = drawing(tree, shapes, width, ascii_only, width)
    write_output(markdown_report(rows, tree, shapes, formulas), output, stream)


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
