"""The table's columns laid out line by line, as a rich SIMPLE_HEAD table without edges lays them out
(a header, a rule under it, three blanks between columns), in time linear in the rows.

rich's Table measures and renders every cell through its console, about a millisecond a row: a
stack of 1024 layers took a minute. Here a line is joined from padded strings; the styled lines a
terminal or a picture gets are `rich.text.Text`, made only there.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

GAP = 3  # blanks between two columns: a cell's padding on both sides and the box's blank divider
HEADER_STYLE = "bold"  # rich's "table.header"
SEVEN_BIT = str.maketrans({"…": "~", "×": "x"})  # as the diagram writes them in 7-bit ASCII


@dataclass(frozen=True)
class Column:
    header: str
    width: int
    right: bool = False  # numbers are right-aligned
    cut: bool = False  # a cell wider than the column is shortened with "…"; otherwise folded
    style: str = ""


@dataclass(frozen=True)
class GridRow:
    cells: Sequence[str]  # one per column; "\n" starts another line of the cell
    style: str = ""  # the whole row's
    first_style: str = ""  # the first cell's own


def cell_len(text: str) -> int:
    """The columns `text` takes on a terminal: a wide (East Asian) character takes two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fitted(text: str, column: Column, ascii_only: bool) -> list[str]:
    """The lines of a cell, none wider than the column."""
    out: list[str] = []
    if ascii_only:
        text = text.translate(SEVEN_BIT)
    for line in text.split("\n"):
        if cell_len(line) <= column.width:
            out.append(line)
        elif column.cut:
            out.append(_cut(line, column.width - 1) + ("~" if ascii_only else "…"))
        else:
            while cell_len(line) > column.width:
                head = _cut(line, column.width)
                out.append(head)
                line = line[len(head) :]
            out.append(line)
    return out


def _cut(text: str, width: int) -> str:
    """The longest start of `text` that takes at most `width` columns."""
    taken = 0
    for i, c in enumerate(text):
        taken += cell_len(c)
        if taken > width:
            return text[:i]
    return text


def _pad(text: str, column: Column) -> str:
    blank = " " * (column.width - cell_len(text))
    return blank + text if column.right else text + blank


def _line_cells(row: GridRow, columns: Sequence[Column], ascii_only: bool) -> Iterator[list[str]]:
    """The row's padded cells, line by line (a wrapped cell makes the row taller)."""
    lines = [_fitted(text, column, ascii_only) for text, column in zip(row.cells, columns, strict=True)]
    for i in range(max(len(cell) for cell in lines)):
        yield [
            _pad(cell[i] if i < len(cell) else "", column)
            for cell, column in zip(lines, columns, strict=True)
        ]


def rule(columns: Sequence[Column], ascii_only: bool) -> str:
    return ("-" if ascii_only else "─") * (sum(c.width for c in columns) + GAP * (len(columns) - 1))


def plain_lines(columns: Sequence[Column], rows: Sequence[GridRow], ascii_only: bool = False) -> list[str]:
    """The header, the rule and every row as plain lines, trailing blanks removed."""
    gap = " " * GAP
    header = gap.join(next(_line_cells(GridRow([c.header for c in columns]), columns, ascii_only))).rstrip()
    lines = [header, rule(columns, ascii_only)]
    for row in rows:
        lines += [gap.join(cells).rstrip() for cells in _line_cells(row, columns, ascii_only)]
    return lines


def styled_lines(columns: Sequence[Column], rows: Sequence[GridRow], ascii_only: bool = False) -> list[Text]:
    """The same lines as rich text: the header bold, each cell in its column's style with its row's
    on top (and the first cell's own on top of both), the blanks between cells unstyled."""
    from rich.text import Text

    def joined(cells: list[str], styles: list[str]) -> Text:
        line = Text()
        for i, (cell, style) in enumerate(zip(cells, styles, strict=True)):
            if i:
                line.append(" " * GAP, "none")  # unstyled, as rich leaves the space between cells
            line.append(cell, style.strip() or "none")  # a span of its own, as rich renders a cell
        return line

    header = next(_line_cells(GridRow([c.header for c in columns]), columns, ascii_only))
    out = [joined(header, [HEADER_STYLE] * len(columns)), Text(rule(columns, ascii_only))]
    for row in rows:
        for n, cells in enumerate(_line_cells(row, columns, ascii_only)):
            own = [row.first_style if i == 0 and n == 0 else "" for i in range(len(columns))]
            out.append(
                joined(cells, [f"{c.style} {row.style} {o}" for c, o in zip(columns, own, strict=True)])
            )
    return out
