"""`blocktrace source`: the code that ran, each line with the shapes it made."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from blocktrace.cli import app
from blocktrace.tracing.trace import Frame, OpCall, TensorMeta, Trace
from blocktrace.tracing.tracer import trace
from blocktrace.views.shapes import Shapes
from blocktrace.views.source.render import markdown_report, text_report
from blocktrace.views.source.view import is_torch_file, source_view
from tests import harness

TINY = [*harness.TINY, "--n-kv-head", "2"]  # grouped-query heads

MODEL = """\
import torch
from torch import nn


def helper(x):
    return x * 2


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 8)

    def forward(self, x):
        y = self.lin(
            x
        ).view(
            2, 2, 4
        )
        a, b = helper(x[:1]), helper(x)
        if x.shape[0] > 100:
            z = y + 1
        else:
            z = y - 1
        if x.dim() > 5:
            z = z * 3
        for i in range(2):
            if i == 0:
                z = z + 1
            else:
                z = z * 2
        return z.contiguous()
"""


def run(*args: str) -> str:
    result = CliRunner().invoke(app, ["source", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def user_trace(tmp_path: Path) -> Trace:
    """A trace of a module written in a file of its own, as a user's model is."""
    path = tmp_path / "user_model.py"
    path.write_text(MODEL, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("user_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return trace(module.Model(), (torch.randn(2, 4),))


def numbered(text: str) -> dict[int, str]:
    """line number -> the printed line, for the listing's numbered lines."""
    return {int(m[1]): m[0] for m in re.finditer(r"^ *(\d+) \|.*$", text, re.MULTILINE)}


def test_default_block_source_is_unchanged(golden) -> None:
    golden("source_default.txt", run())


def test_llama_block_source_is_unchanged(golden) -> None:
    golden("source_llama.txt", run("--preset", "llama", "--n-layer", "1"))  # Llama 3 8B's layer


def test_a_statement_over_several_lines_is_annotated_on_its_last_line(user_trace: Trace) -> None:
    lines = numbered(text_report(source_view(user_trace)))
    assert lines[15].rstrip().endswith("y = self.lin(")
    assert all("#" not in lines[n] for n in (15, 16, 17, 18))
    # from x, the Linear's output, then the view of it: each value the statement made, in order
    assert lines[19].endswith("# (2, 4) -> (2, 8) -> (2, 2, 4)")


def test_a_line_run_with_different_shapes_lists_each_with_whose_it_was(user_trace: Trace) -> None:
    text = text_report(source_view(user_trace))
    lines = numbered(text)
    assert lines[6].endswith("# call 1: (1, 4) -> (1, 4); call 2: (2, 4) -> (2, 4)")
    assert "helper · " in text and "called twice, in Model" in text
    # the caller's line lists what each helper call made, though no op of the helper ran on it:
    # x[:1] and helper(x) side by side from x, then helper(x[:1]) from the slice
    assert lines[20].endswith("# (2, 4) -> (1, 4), (2, 4) -> (1, 4)")


def test_only_a_branch_proven_not_to_run_is_marked(user_trace: Trace) -> None:
    lines = numbered(text_report(source_view(user_trace)))
    assert lines[22].endswith("# not run")  # the else branch ran in every call
    assert "#" not in lines[21]  # the if's test did run
    assert "not run" not in lines[23] and lines[24].endswith("# (2, 2, 4) -> (2, 2, 4)")
    # an if with no other branch: that its body recorded nothing proves nothing
    assert lines[25].rstrip().endswith("if x.dim() > 5:") and "#" not in lines[26]
    # in a loop, one branch's record does not prove that the other never ran
    assert lines[29].endswith("# (2, 2, 4) -> (2, 2, 4)") and lines[31].endswith("# (2, 2, 4) -> (2, 2, 4)")
    assert not any("not run" in lines[n] for n in (27, 28, 30))


ATTENTION = """\
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, c=12, h=3):
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(c, 3 * c)
        self.drop = nn.Dropout(0.1)
        self.proj = nn.Linear(c, c)
        self.blocks = nn.ModuleList(nn.Linear(c, c) for _ in range(3))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.h, C // self.h).transpose(1, 2)
        k, v = k.view(B, T, self.h, -1).transpose(1, 2), v.view(B, T, self.h, -1).transpose(1, 2)
        att = q @ k.transpose(-2, -1)
        att = self.drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        y = self.drop(y)
        for block in self.blocks:
            y = block(y)
        return self.proj(y)
"""


def _expected_by_running_the_lines(m: torch.nn.Module, x: torch.Tensor) -> dict[int, str]:
    """Attention.forward's lines run here one by one in eager torch, each annotated by hand with the
    values it makes: what the listing must print for them."""

    def s(*ts: torch.Tensor) -> str:
        return ", ".join(str(tuple(t.shape)) for t in ts)

    B, T, C = x.size()
    qkv = m.qkv(x)
    q, k, v = qkv.split(C, dim=2)
    qv = q.view(B, T, m.h, C // m.h)
    qt = qv.transpose(1, 2)
    kv, vv = k.view(B, T, m.h, -1), v.view(B, T, m.h, -1)
    kt, vt = kv.transpose(1, 2), vv.transpose(1, 2)
    kT = kt.transpose(-2, -1)
    att = qt @ kT
    soft = torch.softmax(att, dim=-1)
    assert m.drop(soft) is soft  # eval: the dropout hands its input back
    av = soft @ vt
    avt = av.transpose(1, 2)
    y = avt.contiguous().view(B, T, C)  # a copy of the same value: contiguous() keeps its id
    ys = [y]
    for block in m.blocks:
        ys.append(block(ys[-1]))
    out = m.proj(ys[-1])
    assert all(a.shape == ys[0].shape for a in ys)
    return {
        16: f"{s(x)} -> {s(qkv)} -> 3×{s(q)}",
        17: f"{s(q)} -> {s(qv)} -> {s(qt)}",
        18: f"2×{s(k)} -> 2×{s(kv)} -> 2×{s(kt)}",  # k's and v's views side by side, then their transposes
        19: f"{s(kt)} -> {s(kT)} -> {s(att)}",
        20: f"{s(att)} -> {s(soft)}",
        21: f"{s(soft)} -> {s(av)} -> {s(avt)} -> {s(y)}",  # from att
        22: f"{s(y)} unchanged",
        24: f"{s(y)} -> {s(ys[1])} ×3",
        25: f"{s(ys[-1])} -> {s(out)}",
    }


def test_each_line_lists_each_value_it_made_as_torch_made_it(tmp_path: Path) -> None:
    path = tmp_path / "attention_model.py"
    path.write_text(ATTENTION, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("attention_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.Attention().eval()
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        expected = _expected_by_running_the_lines(m, x)
    view = source_view(trace(m, (x,)), Shapes.concrete)
    lines = numbered(text_report(view, Shapes.concrete))
    for number, note in expected.items():
        assert lines[number].endswith(f"# {note}"), (lines[number], note)
    assert all("#" not in lines[n] for n in (14, 15, 23))  # no tensor made: no note


def test_a_long_flow_wraps_before_an_arrow(user_trace: Trace) -> None:
    lines = text_report(source_view(user_trace), width=30).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("19 |"))
    assert lines[at + 1].endswith("# (2, 4) -> (2, 8)") and lines[at + 2].endswith("# -> (2, 2, 4)"), lines


def test_torch_layers_say_why_no_source_is_shown() -> None:
    kwargs = '{"d_model": 32, "nhead": 2, "batch_first": true}'
    text = run("--module", "torch.nn:TransformerEncoderLayer", "--kwargs", kwargs, "--input", "2,6,32")
    first = text.splitlines()[0]
    assert re.search(r"no source to show: the \d+ functions that ran are all torch's own code", first), text
    assert " · " not in text  # no function listed


def test_a_file_changed_since_it_ran_is_named_with_why(user_trace: Trace, tmp_path: Path) -> None:
    import linecache

    path = tmp_path / "user_model.py"
    path.write_text("x = 1\n", encoding="utf-8")
    linecache.checkcache(str(path))
    try:
        text = text_report(source_view(user_trace))
    finally:
        path.write_text(MODEL, encoding="utf-8")
        linecache.checkcache(str(path))
    assert "user_model.py: its file has no function at line 14; the ops it ran, by line" in text, text


def test_torch_code_is_never_printed(user_trace: Trace) -> None:
    text = text_report(source_view(user_trace))
    torch_dir = os.path.dirname(torch.__file__)
    assert torch_dir not in text and "F.linear" not in text and "class Linear" not in text
    assert any(o.file.startswith(torch_dir) for o in user_trace.ops)  # Linear.forward's op was there
    assert is_torch_file(torch.nn.functional.__file__) and not is_torch_file(__file__)
    assert torch_dir not in run(*TINY, "--preset", "llama")  # nn.RMSNorm's forward, say


def test_a_stack_shows_the_block_once_with_its_count() -> None:
    text = run(*TINY, "--n-layer", "3")
    assert text.count("Block.forward · ") == 1 and "called 3 times, in h.0, h.1, h.2" in text
    assert text.count("def forward(self, x: torch.Tensor) -> torch.Tensor:") == 1  # MLP.forward
    assert "BlockStack.forward · " in text
    block = numbered(text)
    loop_line = next(n for n, line in block.items() if "x = block(x, cos_sin)" in line)
    assert block[loop_line].endswith("# (B, T, C) -> (B, T, C) ×3")  # one Block after the other


@pytest.mark.parametrize("preset", ["nanochat", "gpt2", "llama", "neox", "bert"])
def test_every_preset_annotates_its_residual_lines(preset: str) -> None:
    text = run(*TINY, "--preset", preset, "--n-kv-head", "4")
    adds = [line for line in text.splitlines() if re.search(r"(x = |return ).*x \+ ", line)]
    annotated = [line for line in adds if line.rstrip().endswith("(B, T, C)")]
    assert annotated, text
    assert "not run" in text


def test_width_moves_a_long_annotation_below_and_never_splits_a_shape() -> None:
    width = 60
    text = run(*TINY, "--width", str(width))
    comments = [line for line in text.splitlines() if re.match(r"^ *\|", line)]
    assert comments, "nothing continued below its line at --width 60"
    assert len({line.index("# ") for line in comments}) == 1  # one column
    for line in comments:
        assert len(line) <= width, line
        note = line.split("# ", 1)[1]
        assert note.count("(") == note.count(")"), line
    wide = run(*TINY)
    assert not any(re.match(r"^ *\|", line) for line in wide.splitlines())  # no limit: nothing moves


def test_markdown_is_a_fenced_python_block_per_function() -> None:
    md = run(*TINY, "--format", "markdown")
    functions = re.findall(r"^`(\S+)` in `blocktrace/model.py`, lines", md, re.MULTILINE)
    assert functions[:3] == ["Block.forward", "norm", "CausalSelfAttention.forward"]
    assert md.count("```python\n") == len(functions) and md.count("```\n") == len(functions)
    flow = " -> ".join(["(B, T, C)"] * 4)  # x, norm_1(x), attention's output, the sum
    assert f"        x = x + self.attn(self.norm_1(x), cos_sin)  # {flow}\n" in md
    assert "| B | 2 | batch |" in md and not re.search(r"^ *\d+ \|", md, re.MULTILINE)  # no gutter


def test_json_lists_each_annotated_line() -> None:
    data = json.loads(run(*TINY, "--format", "json"))
    assert data["schema"] == "blocktrace.source" and data["version"] == 2
    assert {tuple(sorted(r)) for r in data["lines"]} == {("file", "function", "line", "not_run", "shapes")}
    q = next(r for r in data["lines"] if r["function"] == "CausalSelfAttention.forward" and r["shapes"])
    assert q["file"].endswith(os.path.join("blocktrace", "model.py"))
    shapes = q["shapes"][0]
    assert shapes["text"] == "(B, T, C) -> (B, T, C) -> (B, T, H, D)"  # x, c_q(x), then its view
    assert [t["symbols"] for t in shapes["from"]] == [["B", "T", "C"]]
    assert [[t["symbols"] for t in s["tensors"]] for s in shapes["made"]] == [
        [["B", "T", "C"]],
        [["B", "T", "H", "D"]],
    ]
    assert [s["times"] for s in shapes["made"]] == [1, 1] and data["torch_functions"] > 0
    rotary = [r for r in data["lines"] if r["function"] == "apply_rotary_emb" and len(r["shapes"]) == 2]
    assert rotary and rotary[0]["shapes"][1]["runs"] == ["call 2"]
    assert any(r["not_run"] for r in data["lines"])
    assert {f["function"] for f in data["functions"]} >= {"Block.forward", "norm", "MLP.forward"}


def test_concrete_shapes_and_both() -> None:
    assert "# (2, 6, 32)" in run(*TINY, "--shapes", "concrete")
    assert "# (B, T, C)=(2, 6, 32)" in run(*TINY, "--shapes", "both")


def _hand_built(file: str) -> Trace:
    x = TensorMeta(0, (2, 3), "float32", ("B", "C"))
    y = TensorMeta(1, (2, 6), "float32", ("B", "2C"))
    op = OpCall(0, "cat", None, "forward", 3, 1, (x,), (y,), {}, 0, file, 1)
    return Trace("Model", "cpu", (x,), (y,), (), (op,), (), frames=(Frame(1, file, "forward", 1, None, 0),))


@pytest.mark.parametrize("file", ["<stdin>", "/nowhere/gone.py"])
def test_source_that_cannot_be_found_falls_back_to_the_ops_with_a_note(file: str) -> None:
    text = text_report(source_view(_hand_built(file)))
    notes = [line for line in text.splitlines() if "source not found" in line]
    assert len(notes) == 1 and file in notes[0]
    assert re.search(r"^3 \| cat +# \(B, C\) -> \(B, 2C\)$", text, re.MULTILINE), text
    why = "it ran from no file on disk" if file == "<stdin>" else "its file cannot be read"
    assert f"{file}: {why}; the ops it ran" in notes[0]
    assert markdown_report(source_view(_hand_built(file))).count("```python") == 1


def test_a_function_of_torch_is_left_out_of_a_hand_built_trace() -> None:
    torch_file = os.path.join(os.path.dirname(torch.__file__), "nn", "modules", "linear.py")
    assert source_view(_hand_built(torch_file)).functions == ()


def test_the_source_view_needs_no_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        import blocktrace.views.source.view, blocktrace.views.source.render
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if "torch" in m)
        """
    )
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_shapes_mode_is_an_enum_through_the_view(user_trace: Trace) -> None:
    assert "# (2, 2, 4)" in text_report(source_view(user_trace, Shapes.concrete), Shapes.concrete)


def test_function_picks_the_functions_shown_and_refuses_a_pattern_that_matches_none() -> None:
    text = run(*TINY, "--function", "MLP.*", "--function", "norm")
    assert re.findall(r"^(\S+) · ", text, re.MULTILINE) == ["norm", "MLP.forward"]
    assert text.startswith("Block (float32): 2 of the 5 functions that ran")
    result = CliRunner().invoke(app, ["source", *TINY, "--function", "Attention"])
    assert result.exit_code == 2 and "--function 'Attention' matches no function" in result.stderr


WRAPPED = """\
import functools

import torch
from torch import nn


def passing_on(forward):
    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        return forward(*args, **kwargs)

    return wrapper


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    @passing_on
    def forward(self, x):
        return self.lin(x) * 2
"""


def test_a_wrapper_that_only_passes_the_call_on_is_not_listed(tmp_path: Path) -> None:
    # transformers wraps forwards in decorators: the listing shows the forward, not the wrapper
    path = tmp_path / "wrapped.py"
    path.write_text(WRAPPED, encoding="utf-8")
    text = run("--module", f"{path}:Wrapped", "--input", "2,4")
    assert "Wrapped.forward" in text and "<locals>.wrapper" not in text and "1 function ran" in text
