"""Diagram -> characters. The one place that knows glyphs: Unicode box drawing or 7-bit ASCII.

Lines are drawn as connections per cell (up, down, left, right), so where a highway leaves the
stream the cell becomes ├ and where the stream leaves a box its border becomes ┬.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocktrace.views.diagram.layout import Diagram

UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8

_UNICODE = {
    UP: "│", DOWN: "│", UP | DOWN: "│", LEFT: "─", RIGHT: "─", LEFT | RIGHT: "─",
    DOWN | RIGHT: "┌", DOWN | LEFT: "┐", UP | RIGHT: "└", UP | LEFT: "┘",
    UP | DOWN | RIGHT: "├", UP | DOWN | LEFT: "┤", LEFT | RIGHT | DOWN: "┬", LEFT | RIGHT | UP: "┴",
    UP | DOWN | LEFT | RIGHT: "┼",
}  # fmt: skip
_ASCII = {bits: ("|" if glyph == "│" else "-" if glyph == "─" else "+") for bits, glyph in _UNICODE.items()}
_ARROWS = {"down": ("▼", "v"), "left": ("◄", "<"), "right": ("►", ">")}
# Characters words may contain, and their 7-bit stand-ins.
_ASCII_TEXT = str.maketrans({"×": "x", "…": "~", "·": "*"})


@dataclass(frozen=True)
class Cell:
    char: str
    style: str


def render(diagram: Diagram, ascii_only: bool = False) -> list[list[Cell]]:
    """The diagram as rows of styled cells, trailing blanks kept (see to_text)."""
    w, h = diagram.width, diagram.height
    bits = [[0] * w for _ in range(h)]
    styles = [["" for _ in range(w)] for _ in range(h)]

    def connect(x: int, y: int, b: int, style: str) -> None:
        bits[y][x] |= b
        if style == "highway" or not styles[y][x]:
            styles[y][x] = style

    def segment(x0: int, y0: int, x1: int, y1: int, style: str) -> None:
        if y0 == y1:
            for x in range(min(x0, x1), max(x0, x1) + 1):
                connect(x, y0, (LEFT if x > min(x0, x1) else 0) | (RIGHT if x < max(x0, x1) else 0), style)
        else:
            for y in range(min(y0, y1), max(y0, y1) + 1):
                connect(x0, y, (UP if y > min(y0, y1) else 0) | (DOWN if y < max(y0, y1) else 0), style)

    for r in diagram.rects:
        right, bottom = r.x + r.w - 1, r.y + r.h - 1
        segment(r.x, r.y, right, r.y, r.style)
        segment(r.x, bottom, right, bottom, r.style)
        segment(r.x, r.y, r.x, bottom, r.style)
        segment(right, r.y, right, bottom, r.style)
    for s in diagram.segments:
        segment(s.x0, s.y0, s.x1, s.y1, s.style)

    glyphs = _ASCII if ascii_only else _UNICODE
    rows = [
        [Cell(glyphs[b], styles[y][x]) if b else Cell(" ", "") for x, b in enumerate(line)]
        for y, line in enumerate(bits)
    ]
    for a in diagram.arrows:
        rows[a.y][a.x] = Cell(_ARROWS[a.direction][ascii_only], a.style)
    for label in diagram.labels:
        text = label.text.translate(_ASCII_TEXT) if ascii_only else label.text
        for i, char in enumerate(text):
            rows[label.y][label.x + i] = Cell(char, label.style)
    return rows


def to_text(rows: list[list[Cell]]) -> str:
    return "\n".join("".join(c.char for c in row).rstrip() for row in rows) + "\n"
