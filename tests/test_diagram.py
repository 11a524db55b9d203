"""The layout draws any stream: one highway per residual add, every shape taken from the trace."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from blocktrace.model import Block, example_inputs
from blocktrace.tracing.trace import Trace
from blocktrace.tracing.tracer import trace
from blocktrace.views.diagram.layout import layout, shape_text
from blocktrace.views.diagram.render import render, to_text
from blocktrace.views.diagram.report import markdown_report, text_report
from blocktrace.views.steps import StepKind, StepTree
from tests.harness import invoke
from tests.models import SMALL, structures

STRUCTURES = structures()


def drawn(t: Trace, ascii_only: bool = False, collapse: bool = True) -> str:
    return to_text(render(layout(StepTree(t, collapse=collapse), "concrete"), ascii_only))


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_one_highway_per_residual_add(name: str, golden) -> None:
    module, args, adds = STRUCTURES[name]
    t = trace(module, args)
    assert len(json.loads(t.to_json())["residual_adds"]) == adds
    text = drawn(t, collapse=False)
    assert text.count("(+)") == adds
    assert text.count("(+)◄") == adds  # each highway comes back into its (+)
    assert text.count("├") == adds  # ... after leaving the stream
    golden(f"structure_{name}.txt", text)


def test_every_edge_label_is_a_traced_shape() -> None:
    module, args, _ = STRUCTURES["two_blocks"]
    t = trace(module, args)
    traced = {shape_text(m, "concrete") for m in t.tensors()}
    for line in drawn(t).splitlines():
        if "│ (" in line and "->" not in line:
            label = line.split("│ ", 1)[1].split(")")[0] + ")"
            assert label in traced, line


def test_ascii_drawing_is_seven_bit() -> None:
    module, args, _ = STRUCTURES["block"]
    text = drawn(trace(module, args), ascii_only=True)
    assert text.isascii()
    assert "(+)<--" in text and "v" in text


def test_width_cuts_side_notes_not_shapes_on_the_stream() -> None:
    module, args, _ = STRUCTURES["block"]
    t = trace(module, args)
    wide = to_text(render(layout(StepTree(t), "concrete")))
    narrow = to_text(render(layout(StepTree(t), "concrete", width=60)))
    assert max(len(line) for line in wide.splitlines()) > 60
    assert max(len(line) for line in narrow.splitlines()) <= 60
    assert "…" in narrow
    assert narrow.count("(+)") == wide.count("(+)") == 2


def test_reports_carry_legend_and_formulas() -> None:
    module, args, _ = STRUCTURES["block"]
    t = trace(module, args)
    rows = render(layout(StepTree(t)))
    md = markdown_report(rows, StepTree(t), "symbolic", formulas=True)
    assert md.count("```") == 2
    assert "- `x_mid = x + CausalSelfAttention(RMSNorm(x), cos_sin[0], cos_sin[1])`" in md
    text = text_report(rows, StepTree(t), "symbolic", formulas=True)
    assert "x_out = x_mid + MLP(RMSNorm(x_mid))" in text
    assert "RMSNorm(x) = x / sqrt(mean(x^2) + eps)" in text
    assert "MLP(x) = c_proj(square(relu(c_fc(x))))" in text


def test_layout_and_render_need_no_torch(tmp_path) -> None:
    module, args, _ = STRUCTURES["single_residual"]
    path = tmp_path / "trace.json"
    path.write_text(trace(module, args).to_json())
    code = (
        "import sys, pathlib\n"
        "from blocktrace.tracing.trace import Trace\n"
        "from blocktrace.views.diagram.layout import layout\n"
        "from blocktrace.views.diagram.render import render, to_text\n"
        "from blocktrace.views.steps import StepTree\n"
        f"t = Trace.from_json(pathlib.Path({str(path)!r}).read_text())\n"
        "print(to_text(render(layout(StepTree(t)))))\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(+)") == 1


def test_json_round_trips() -> None:
    module, args, _ = STRUCTURES["two_blocks"]
    t = trace(module, args)
    assert Trace.from_json(t.to_json()) == t


def test_tensors_lists_what_map_tensors_visits_in_the_same_order() -> None:
    module, args, _ = STRUCTURES["two_blocks"]
    t = trace(module, args)
    visited: list = []
    t.map_tensors(lambda m: visited.append(m) or m)
    assert t.tensors() == visited and len(visited) > 100


def test_identical_blocks_in_a_row_are_drawn_once() -> None:
    module, args, _ = STRUCTURES["two_blocks"]
    text = drawn(trace(module, args))
    assert "[h.0 … h.1: Block × 2]" in text
    assert text.count("(+)") == text.count("(+)◄") == 2


def test_blocks_that_differ_are_all_drawn() -> None:
    wide, narrow = Block(SMALL), Block(replace(SMALL, mlp_ratio=2))
    x, cos_sin = example_inputs(SMALL, "cpu")

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = wide, narrow

        def forward(self, x: torch.Tensor, cos_sin: tuple) -> torch.Tensor:
            return self.b(self.a(x, cos_sin), cos_sin)

    text = drawn(trace(Two(), (x, cos_sin)))
    assert "Block ×" not in text and text.count("(+)") == 4
    assert "(2, 6, 128)" in text and "(2, 6, 64)" in text  # each MLP's own hidden width


DROPPED = """\
import torch
from torch import nn


class Dropped(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        x = self.drop(x * 2)  # in eval mode it hands x back: the same value, one step later
        return x + self.fc(x)


class DroppedParallel(Dropped):  # two branches: the second is drawn in a column of its own
    def __init__(self):
        super().__init__()
        self.gc = nn.Linear(8, 8)

    def forward(self, x):
        x = self.drop(x * 2)
        return x + self.fc(x) + self.gc(x)
"""


@pytest.mark.parametrize("name", ["Dropped", "DroppedParallel"])
def test_the_highway_forks_after_the_last_step_that_hands_the_stream_on(tmp_path, name: str) -> None:
    path = tmp_path / "dropped.py"
    path.write_text(DROPPED, encoding="utf-8")
    result = invoke(["diagram", "--module", f"{path}:{name}", "--input", "2,8"])
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    dropout = next(i for i, row in enumerate(rows) if "Dropout" in row)
    fork = next(i for i, row in enumerate(rows) if "├" in row)
    assert fork > dropout
    assert all(row.strip() != "│" for row in rows)  # no row kept for a fork drawn further down


NESTED = """\
import torch
from torch import nn


def half(x):
    return x[..., : x.shape[-1] // 2]


def rotate(x, table):
    return torch.cat([half(x) * 2, half(x)], dim=-1) + table  # helpers calling helpers: one call


class Rotating(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.register_buffer("table", torch.ones(8))

    def forward(self, x):
        return self.fc(rotate(x, self.table))
"""


def test_a_helper_that_calls_helpers_is_one_step_taking_what_it_took_from_the_stream(tmp_path) -> None:
    path = tmp_path / "nested.py"
    path.write_text(NESTED, encoding="utf-8")
    trace = invoke(["diagram", "--module", f"{path}:Rotating", "--input", "2,8", "--format", "json"])
    tree = StepTree(Trace.from_json(trace.stdout))
    steps = [s for s in tree.stream if s.kind == StepKind.helper]
    assert [s.label for s in steps] == ["rotate"]
    assert [t.shape for t in steps[0].inputs] == [(2, 8)]  # x, not the table


INLINE = """\
import torch
from torch import nn
import torch.nn.functional as F


class Inline(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(8, 8)

    def forward(self, x):
        q, k, v = self.qkv(x).view(2, 3, 3, 2, 4).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 3, 8)
        return x + self.out(y)
"""


def test_a_chain_of_ops_on_the_stream_is_written_as_nested_calls(tmp_path) -> None:
    path = tmp_path / "inline.py"
    path.write_text(INLINE, encoding="utf-8")
    result = invoke(["diagram", "--module", f"{path}:Inline", "--input", "2,3,8", "--formulas"])
    assert result.exit_code == 0, result.stderr
    assert "x_out = x + Linear(reshape(transpose(SDPA(*unbind(Linear(x))))))" in result.stdout


def test_an_op_that_makes_several_tensors_lists_them_all() -> None:
    # docs/examples/nanogpt_block.py: q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
    result = invoke(["diagram", "--module", "docs/examples/nanogpt_block.py:block", "--dim", "T=16"])
    assert result.exit_code == 0, result.output
    split = next(row for row in result.stdout.splitlines() if " split " in row)
    assert "(B, T, 3C) -> 3×(B, T, C)" in split
