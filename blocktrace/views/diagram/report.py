"""The diagram as a view: text, markdown, JSON and its picture; the header, the drawing, the legend
and the formulas.

Colour and the terminal's width only when stdout is a terminal (then rich decides about colour:
NO_COLOR, TERM); a file or a pipe gets the same plain text whatever COLUMNS or FORCE_COLOR say.
7-bit ASCII when asked, or when stdout's encoding cannot carry the box-drawing characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from blocktrace.errors import OutputError
from blocktrace.tracing.trace import Trace
from blocktrace.views.captions import header, legend
from blocktrace.views.diagram.formulas import formulas as formula_lines
from blocktrace.views.diagram.layout import layout, left_out
from blocktrace.views.diagram.render import Cell, render, to_text
from blocktrace.views.shapes import Shapes
from blocktrace.views.steps import StepTree
from blocktrace.views.view import Page, Screen, size_of

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
    "side": "cyan",
}


def text_report(
    rows: list[list[Cell]], tree: StepTree, shapes: Shapes, formulas: bool, width: int | None = None
) -> str:
    before, after = text_frame(tree, shapes, formulas, width)
    return before + to_text(rows) + after


def text_frame(tree: StepTree, shapes: Shapes, formulas: bool, width: int | None = None) -> tuple[str, str]:
    """What the text report says before the diagram (the header) and after it (legend, formulas)."""
    trace = tree.trace
    missing = left_out(tree, shapes)
    after = ["", *missing] if missing else []
    if _shows_legend(trace, shapes):
        after += ["", *legend(trace)]
    if formulas:
        after += ["", *formula_lines(tree)]
    return header(trace, width, tree.residual_parts()) + "\n\n", "".join(line + "\n" for line in after)


def markdown_report(rows: list[list[Cell]], tree: StepTree, shapes: Shapes, formulas: bool) -> str:
    trace = tree.trace
    parts = [
        f"**{header(trace, parts=tree.residual_parts())}**",
        "",
        "```text",
        to_text(rows).rstrip("\n"),
        "```",
    ]
    parts += [f"\n{line}" for line in left_out(tree, shapes)]
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


BOX_SAMPLE = "┌─┐│▼◄×…"  # a stream that cannot carry these gets the 7-bit drawing


@dataclass(frozen=True)
class DiagramView:
    """The trace as the diagram command shows it, with its flags."""

    trace: Trace
    shapes: Shapes = Shapes.symbolic
    formulas: bool = False
    ascii_only: bool = False
    width: int | None = None  # --width: a limit asked for; without it a terminal's width is fitted
    collapse: bool = True

    command = "diagram"
    formats = ("text", "markdown", "json")

    @property
    def title(self) -> str:
        return f"blocktrace diagram: {self.trace.model}"

    @cached_property
    def tree(self) -> StepTree:
        """The steps, built once: the drawing and the formulas read the same."""
        return StepTree(self.trace, self.collapse)

    def render(self, fmt: str, page: Page) -> str:
        if fmt == "json":
            return self.trace.to_json() + "\n"
        if fmt == "markdown":  # never fitted to a terminal
            rows = self._rows(self.width, page)
            return markdown_report(rows, self.tree, self.shapes, self.formulas)
        if fmt == "text":
            fit = self._fit(page)
            rows = self._rows(fit, page)
            return text_report(rows, self.tree, self.shapes, self.formulas, fit)
        raise ValueError(f"the diagram has no format {fmt!r}")

    def screen(self, page: Page) -> Screen | None:
        if not page.colour:
            return None
        fit = self._fit(page)
        frame = text_frame(self.tree, self.shapes, self.formulas, fit)
        return Screen((styled(self._rows(fit, page), *frame),), soft_wrap=True)

    def picture(self) -> Screen:
        """The text report as a file gets it, coloured as in a terminal."""
        rows = drawing(self.tree, self.shapes, self.width, self.ascii_only, self.width)
        before, after = text_frame(self.tree, self.shapes, self.formulas, self.width)
        return Screen((styled(rows, before, after),), *size_of(before + to_text(rows) + after))

    def _fit(self, page: Page) -> int | None:
        return self.width if self.width is not None else page.columns

    def _rows(self, fit: int | None, page: Page) -> list[list[Cell]]:
        ascii_only = self.ascii_only or not page.carries(BOX_SAMPLE)
        return drawing(self.tree, self.shapes, fit, ascii_only, self.width)
