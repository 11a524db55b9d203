"""blocktrace table: a run of identical layers is one row and one layer's rows, as the diagram draws
it once; --expand lists every layer; every format says so; and the text costs time linear in rows."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

import blocktrace
from blocktrace.models.block.config import BlockConfig
from blocktrace.views.steps import StepTree
from blocktrace.views.table.build import Table, build_table
from blocktrace.views.table.render import TableView, to_text
from blocktrace.views.view import Page
from tests.models import traced
from tests.test_table import SMALL_ARGS, ok

STACK = BlockConfig(n_embd=64, n_head=4, seq=8, batch=2, n_layer=4)
LAYER_ARGS = [*SMALL_ARGS, "--n-layer", "4"]


def test_a_run_of_identical_layers_is_one_row_and_one_layer_s_rows() -> None:
    tree = StepTree(traced(STACK))
    whole, short = build_table(tree), build_table(tree, collapse=True)
    layers = [r for r in whole.rows if r.depth == 1]
    assert [r.name for r in layers] == ["h.0", "h.1", "h.2", "h.3"]
    run = short.rows[1]
    assert (run.name, run.kind, run.count, run.path) == ("h.0 … h.3", "Block × 4", 4, "h.0")
    for number in ("params", "trainable", "flops"):  # the run's numbers: every layer's
        assert getattr(run, number) == sum(getattr(r, number) for r in layers)
    assert run.outputs == layers[-1].outputs and run.inputs == layers[0].inputs
    first = [r for r in whole.rows if r.path == "h.0" or r.path.startswith("h.0.")][1:]
    assert short.rows[2:] == tuple(first)  # the first layer's rows, once
    assert len(short.rows) == 2 + len(first) and len(whole.rows) == 1 + 4 * (1 + len(first))


def test_a_layer_that_reads_otherwise_breaks_the_run() -> None:
    frozen = traced(STACK, ("h.1.*",))  # h.1's trainable counts differ: it is its own row
    names = [(r.name, r.kind) for r in build_table(StepTree(frozen), depth=1, collapse=True).rows]
    assert names == [
        ("(root)", "BlockStack"),
        ("h.0", "Block"),
        ("h.1", "Block"),
        ("h.2 … h.3", "Block × 2"),
    ]


class _Twice(nn.Module):
    """x + b(a(x)): a and b read alike but for their names, one after the other."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


def test_only_the_layers_collapse_not_equal_calls_that_are_no_layer() -> None:
    rows = build_table(StepTree(blocktrace.trace(_Twice(), torch.randn(2, 3, 8))), collapse=True).rows
    assert [r.name for r in rows if r.call is not None] == ["(root)", "a", "b"]
    assert all(r.count == 1 for r in rows)


def test_expand_lists_every_layer_and_every_format_collapses_alike() -> None:
    text = ok(*LAYER_ARGS, "--depth", "1")
    assert "h.0 … h.3" in text and "Block × 4" in text and "h.1 " not in text
    expanded = ok(*LAYER_ARGS, "--depth", "1", "--expand")
    assert "…" not in expanded and all(f"h.{i} " in expanded for i in range(4))
    data = json.loads(ok(*LAYER_ARGS, "--format", "json"))
    assert data["version"] == 3 and data["collapsed"] is True
    assert [(r["name"], r["count"]) for r in data["rows"][:2]] == [("(root)", 1), ("h.0 … h.3", 4)]
    every = json.loads(ok(*LAYER_ARGS, "--format", "json", "--expand"))
    assert every["collapsed"] is False and {r["count"] for r in every["rows"]} == {1}
    assert sum(r["params"] for r in every["rows"] if r["depth"] == 1) == data["rows"][1]["params"]
    rows = list(csv.DictReader(io.StringIO(ok(*LAYER_ARGS, "--format", "csv"))))
    assert (rows[1]["name"], rows[1]["kind"], rows[1]["count"]) == ("h.0 … h.3", "Block × 4", "4")
    assert "| h.0 … h.3 | Block × 4 |" in ok(*LAYER_ARGS, "--format", "markdown").replace("\u00a0", "")


def test_seven_bit_streams_get_seven_bit_runs() -> None:
    table = build_table(StepTree(traced(STACK)), depth=1, collapse=True)
    assert "h.0 ~ h.3   Block x 4" in to_text(table, ascii_only=True)
    view = TableView(table)
    for fmt in ("markdown", "csv", "text"):
        view.render(fmt, Page(encoding="ascii")).encode("ascii")


def _many_rows(table: Table, layers: int) -> Table:
    """`table`'s rows repeated: a stack `layers` deep, without tracing one."""
    body = table.rows[1:] * layers
    return replace(table, rows=(table.rows[0], *body))


def _fastest(run: Callable[[], object], times: int = 3) -> float:
    """The least of `times` timings of `run`: a busy machine only ever adds to one."""
    took = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        took.append(time.perf_counter() - start)
    return min(took)


def test_text_costs_time_linear_in_its_rows() -> None:
    # rich's Table took about a millisecond a row (20 s for these 400 layers, 18,800 rows; a minute
    # for 1024); joined from padded strings, a row costs a few hundredths of that
    table = build_table(StepTree(traced(STACK)))
    small, big = _many_rows(table, 10), _many_rows(table, 100)
    once, took = _fastest(lambda: to_text(small)), _fastest(lambda: to_text(big))
    assert len(to_text(big).splitlines()) == len(big.rows) + 2 + 4
    assert took < 4.0 and took < max(25 * once, 0.5), (once, took)  # 10 times the rows


def test_plain_text_needs_no_rich() -> None:
    check = (
        "import sys; from blocktrace.views.table import render; from tests.models import traced;"
        "from blocktrace.models.block.config import BlockConfig as C;"
        "from blocktrace.views.steps import StepTree; from blocktrace.views.table.build import build_table;"
        "t = build_table(StepTree(traced(C(n_embd=64, n_head=4, seq=8, batch=2))));"
        "render.to_text(t); render.to_csv(t); render.to_markdown(t); render.to_json(t);"
        "sys.exit('rich' in sys.modules)"
    )
    root = Path(__file__).parent.parent  # where tests.models imports from
    done = subprocess.run([sys.executable, "-c", check], check=False, timeout=120, cwd=root)
    assert done.returncode == 0
