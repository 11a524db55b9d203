"""The table as a view, as a reader or a script wants it: a rich table fitted to a terminal, plain
text, markdown, JSON and CSV, its picture, and the footer of totals."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from blocktrace.views.diagram.layout import wrap_flow
from blocktrace.views.shapes import Shapes, dims_text, shape_text
from blocktrace.views.stats import FLOP_UNITS, human, human_bytes
from blocktrace.views.table.build import RESIDUAL_KIND, Row, Table
from blocktrace.views.table.grid import GAP, SEVEN_BIT, Column, GridRow, cell_len, plain_lines, styled_lines
from blocktrace.views.view import Page, Screen, size_of

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

SCHEMA = "blocktrace.table"
SCHEMA_VERSION = 3  # 3: a collapsed run of layers is one row, with its "count"
HEADERS = ("path", "kind", "input -> output", "weight", "params", "trainable", "FLOPs")
CSV_COLUMNS = (
    "depth",
    "name",
    "kind",
    "path",
    "inputs",
    "outputs",
    "weight",
    "params",
    "trainable",
    "flops",
    "count",
)

STATS = ("mean", "std", "rms", "min", "max", "zeros")  # with --stats: of each row's (first) output


def has_stats(table: Table) -> bool:
    return any(t.stats is not None for row in table.rows for t in row.outputs)


def headers(table: Table) -> tuple[str, ...]:
    return (*HEADERS, *STATS) if has_stats(table) else HEADERS


def _stats_cells(row: Row) -> list[str]:
    """The statistics of the values the row's first output carried: "" where it has none."""
    stats = row.outputs[0].stats if row.outputs else None
    if stats is None:
        return [""] * len(STATS)
    return [f"{getattr(stats, name):.3g}" for name in STATS[:-1]] + [f"{stats.zeros:.1%}"]


# --- formatting -------------------------------------------------------------------------------


def format_flow(row: Row, shapes: Shapes) -> str:
    """The input shapes -> the output shapes: "(B, T, C), (1, T, 1, D/2) -> (B, T, C)"."""
    ins = ", ".join(shape_text(t, shapes) for t in row.inputs)
    outs = ", ".join(shape_text(t, shapes) for t in row.outputs)
    return f"{ins} -> {outs}"


def format_weights(row: Row, shapes: Shapes = Shapes.symbolic) -> str:
    """The call's own parameter shapes, out_features x in_features for a Linear: "(4C, C)"."""
    texts = [dims_text(w.shape, w.symbols, shapes) for w in row.weights]
    if len(row.weights) == 1 and row.weights[0].name == "weight":
        return texts[0]
    return ", ".join(f"{w.name} {s}" for w, s in zip(row.weights, texts, strict=True))


def _number(n: int) -> str:
    return f"{n:,}"


def flops_text(flops: int, uncounted: tuple[str, ...]) -> str:
    """FLOPs as a cell: "1,024", or "?" where some op has no formula, "1,024+?" with a known part."""
    if not uncounted:
        return _number(flops)
    return f"{flops:,}+?" if flops else "?"


def _cells(row: Row, shapes: Shapes, stats: bool = False) -> list[str]:
    """The text cells of a row, without indentation. Ops have no parameters: blank, not 0."""
    is_call = row.call is not None
    return [*_base_cells(row, shapes, is_call), *(_stats_cells(row) if stats else ())]


def _base_cells(row: Row, shapes: Shapes, is_call: bool) -> list[str]:
    return [
        row.name,
        row.kind,
        format_flow(row, shapes),
        format_weights(row, shapes),
        _number(row.params) if is_call else "",
        _number(row.trainable) if is_call else "",
        flops_text(row.flops, row.uncounted) if is_call or row.flops or row.uncounted else "",
    ]


def footer(table: Table) -> list[str]:
    """The totals as sentences, the same in text and markdown."""
    t = table.totals
    lines = [
        f"parameters: {_number(t.params)} (trainable {_number(t.trainable)}, frozen {_number(t.frozen)})",
        f"forward FLOPs: {flops_text(t.flops, t.uncounted)} ({human(t.flops, FLOP_UNITS)};"
        " torch's formulas, attention not halved for is_causal)",
        f"activations: {_number(t.activation_bytes)} bytes"
        f" ({human_bytes(t.activation_bytes)}) at {t.dtype};"
        " every tensor the forward creates, views excluded",
    ]
    if t.uncounted:
        lines.append(
            f"FLOPs unknown (?): {t.unknown_ops} op{'s' if t.unknown_ops > 1 else ''} ran aten ops with no"
            f" formula: {', '.join(t.uncounted)}; the total is of the rest"
        )
    if table.symbols:
        lines.append("symbols: " + ", ".join(f"{k}={v}" for k, v in table.symbols.items()))
    if table.stopped is not None:
        lines.append(f"stopped: {table.stopped}")
    return lines


# the diagram's colours: module names cyan, shapes green, the residual stream bold yellow
_NAME_STYLE, _SHAPE_STYLE, _RESIDUAL_STYLE, _OP_STYLE = "cyan", "green", "bold yellow", "dim"


# A terminal narrower than the table: these columns are left out first, in this order; then the
# shapes wrap (down to FLOW_MIN columns), then the paths are shortened with "…" (down to PATH_MIN).
# A number is never cut: a table that still does not fit is printed wider than the terminal.
DROP_ORDER = ("weight", "trainable", "kind")
FLOW_MIN = 24
PATH_MIN = 12


@dataclass(frozen=True)
class Fit:
    columns: tuple[str, ...]  # the headers shown, in order
    widths: dict[str, int]  # a width for each column that was narrowed: "input -> output", "path"
    width: int  # the table's width
    natural: dict[str, int] = field(default_factory=dict)  # each column's width unnarrowed


def _all_cells(table: Table, shapes: Shapes) -> list[list[str]]:
    """Every row's cells, the first indented by its nesting."""
    stats = has_stats(table)
    cells = [_cells(row, shapes, stats) for row in table.rows]
    for row, texts in zip(table.rows, cells, strict=True):
        texts[0] = "  " * row.depth + texts[0]
    return cells


def fit(
    table: Table,
    shapes: Shapes = Shapes.symbolic,
    width: int | None = None,
    cells: list[list[str]] | None = None,
) -> Fit:
    """Which columns to show, and how narrow, for the table to fit in `width` columns."""
    cells = _all_cells(table, shapes) if cells is None else cells
    names = headers(table)
    natural = {h: max([len(h), *(cell_len(r[i]) for r in cells)]) for i, h in enumerate(names)}
    columns = list(names)

    def total() -> int:
        return sum(narrowed.get(c, natural[c]) for c in columns) + GAP * (len(columns) - 1)

    narrowed: dict[str, int] = {}
    if width is not None:
        for name in DROP_ORDER:
            if total() > width:
                columns.remove(name)
        for name, least in (("input -> output", FLOW_MIN), ("path", PATH_MIN)):
            over = total() - width
            if over > 0 and natural[name] > least:
                narrowed[name] = max(least, natural[name] - over)
    return Fit(tuple(columns), narrowed, total(), natural)


def _grid(table: Table, shapes: Shapes, width: int | None = None) -> tuple[list[Column], list[GridRow]]:
    """The columns shown and a grid row for each table row, fitted to `width` (None: whole)."""
    cells = _all_cells(table, shapes)
    shown = fit(table, shapes, width, cells)
    names = headers(table)
    keep = [i for i, h in enumerate(names) if h in shown.columns]
    columns = [
        Column(
            names[i],
            shown.widths.get(names[i], shown.natural[names[i]]),
            right=i >= 4,
            cut=i == 0,  # a path may be shortened, a number never
            style=_SHAPE_STYLE if i == 2 else "",
        )
        for i in keep
    ]
    flow_width = shown.widths.get("input -> output")
    rows = []
    for row, texts in zip(table.rows, cells, strict=True):
        if flow_width is not None:  # wrapped between shapes, not inside one
            texts = [*texts[:2], "\n".join(wrap_flow(texts[2], flow_width)), *texts[3:]]
        is_call = row.call is not None
        style = _RESIDUAL_STYLE if row.kind == RESIDUAL_KIND else ("" if is_call else _OP_STYLE)
        rows.append(GridRow([texts[i] for i in keep], style, _NAME_STYLE if is_call else ""))
    return columns, rows


def styled(
    table: Table, shapes: Shapes = Shapes.symbolic, ascii_only: bool = False, width: int | None = None
) -> list[Text]:
    """The table as rich text lines, coloured as in a terminal, fitted to `width` (None: whole)."""
    columns, rows = _grid(table, shapes, width)
    lines = styled_lines(columns, rows, ascii_only)
    for line in lines:
        line.append("\n")  # printed as they are: a Screen prints each with end=""
    return lines


def print_text(table: Table, console: Console, shapes: Shapes = Shapes.symbolic) -> None:
    """The table and its footer on `console`, as `TableView` shows it there."""
    page = Page(console.width if console.is_terminal else None, encoding=console.encoding)
    view = TableView(table, shapes)
    shown = view.screen(page)
    if shown is None:
        console.file.write(view.render("text", page))
        console.file.flush()
        return
    shown.show(console)


def to_text(table: Table, shapes: Shapes = Shapes.symbolic, ascii_only: bool = False) -> str:
    """The table as plain characters, as wide as it needs, with no trailing blanks; then the totals."""
    columns, rows = _grid(table, shapes)
    return "\n".join([*plain_lines(columns, rows, ascii_only), *footer(table)]) + "\n"


def to_markdown(table: Table, shapes: Shapes = Shapes.symbolic, nbsp: str = "\u00a0") -> str:
    """A pipe table; nesting is indented with `nbsp` (markdown collapses plain spaces at the start of
    a cell): a no-break space, or "&nbsp;" for a stream that cannot carry one."""
    stats, names = has_stats(table), headers(table)
    lines = [
        "| " + " | ".join(names) + " |",
        "|" + "|".join("---:" if i >= 4 else "---" for i in range(len(names))) + "|",
    ]
    for row in table.rows:
        cells = _cells(row, shapes, stats)
        cells[0] = nbsp * 2 * row.depth + cells[0]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines += [f"- {line}" for line in footer(table)]
    return "\n".join(lines) + "\n"


def to_dict(table: Table, shapes: Shapes = Shapes.symbolic) -> dict[str, Any]:
    t = table.totals
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "model": table.model,
        "config": dict(table.config),
        "symbols": dict(table.symbols),
        "shapes": Shapes(shapes).value,
        "depth": table.depth,
        "collapsed": table.collapsed,
        "rows": [_row_dict(row, shapes, has_stats(table)) for row in table.rows],
        "totals": {
            "params": t.params,
            "trainable": t.trainable,
            "frozen": t.frozen,
            "flops": None if t.uncounted else t.flops,
            "flops_known": t.flops,
            "uncounted": list(t.uncounted),
            "activation_bytes": t.activation_bytes,
            "dtype": t.dtype,
        },
        **({} if table.stopped is None else {"stopped": table.stopped}),
    }


def _row_dict(row: Row, shapes: Shapes, stats: bool = False) -> dict[str, Any]:
    out = {
        "depth": row.depth,
        "name": row.name,
        "kind": row.kind,
        "path": row.path,
        "inputs": [shape_text(t, shapes) for t in row.inputs],
        "outputs": [shape_text(t, shapes) for t in row.outputs],
        "weight": format_weights(row, shapes),
        "params": row.params,
        "trainable": row.trainable,
        "flops": None if row.uncounted else row.flops,
        "flops_known": row.flops,
        "uncounted": sorted(set(row.uncounted)),
        "call": row.call,
        "op": row.op,
        "count": row.count,
    }
    if stats:  # the first output's; every tensor's are in the trace (diagram --format json)
        first = row.outputs[0].stats if row.outputs else None
        out["stats"] = None if first is None else first.to_dict()
    return out


def to_json(table: Table, shapes: Shapes = Shapes.symbolic) -> str:
    return json.dumps(to_dict(table, shapes), indent=2) + "\n"


def to_csv(table: Table, shapes: Shapes = Shapes.symbolic) -> str:
    """One line per row (no totals: they are the JSON's, or the root row's params and FLOPs);
    several input or output shapes are joined with "; "."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    stats = has_stats(table)
    writer.writerow((*CSV_COLUMNS, *(STATS if stats else ())))
    for row in table.rows:
        d = _row_dict(row, shapes, stats)
        d["inputs"], d["outputs"] = "; ".join(d["inputs"]), "; ".join(d["outputs"])
        values = d.pop("stats", None) or {}
        writer.writerow(
            [
                *(d[c] for c in CSV_COLUMNS),
                *(repr(values[n]) if n in values else "" for n in (STATS if stats else ())),
            ]
        )
    return buffer.getvalue()


@dataclass(frozen=True)
class TableView:
    """The table as the table command shows it."""

    table: Table
    shapes: Shapes = Shapes.symbolic

    command = "table"
    formats = ("text", "markdown", "json", "csv")

    @property
    def title(self) -> str:
        return f"blocktrace table: {self.table.model}"

    def render(self, fmt: str, page: Page) -> str:
        if fmt == "text":  # whole, as wide as it needs
            return to_text(self.table, self.shapes, not page.unicode)
        if fmt == "markdown":  # indented with no-break spaces, as &nbsp; where the page cannot carry them
            text = to_markdown(self.table, self.shapes, nbsp="\u00a0" if page.carries("\u00a0") else "&nbsp;")
            return text if page.carries("…×") else text.translate(SEVEN_BIT)
        if fmt == "json":
            return to_json(self.table, self.shapes)
        if fmt == "csv":
            text = to_csv(self.table, self.shapes)
            return text if page.carries("…×") else text.translate(SEVEN_BIT)
        raise ValueError(f"the table has no format {fmt!r}")

    def screen(self, page: Page) -> Screen | None:
        """On a terminal: fitted to its width (see DROP_ORDER), coloured where rich allows it (NO_COLOR
        honoured); a table that still does not fit is printed wider, the footer wrapped to the width."""
        from rich.constrain import Constrain
        from rich.text import Text

        if page.width is None:
            return None
        lines = styled(self.table, self.shapes, not page.unicode, page.width)
        notes = (Constrain(Text(line), page.width) for line in footer(self.table))
        return Screen((*lines, *notes), max(cell_len(line.plain) for line in lines) - 1)

    def picture(self) -> Screen:
        """The whole table and its totals, coloured as in a terminal, never fitted to one."""
        from rich.text import Text

        lines = [Text(line + "\n") for line in footer(self.table)]
        size = size_of(to_text(self.table, self.shapes))
        return Screen((*styled(self.table, self.shapes), *lines), *size)
