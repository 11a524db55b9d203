"""blocktrace table: rows in execution order, closed-form parameters, --freeze, --depth, formats that
agree with each other, plain text off a terminal, one-line errors, and a cross-check with torchinfo."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner, Result

from blocktrace.cli import app
from blocktrace.model import build_module, example_inputs
from blocktrace.models.block.config import BlockConfig
from blocktrace.pipeline import trace_config
from blocktrace.tracing.freeze import freeze
from blocktrace.tracing.tracer import trace
from blocktrace.views.stats import itemsize
from blocktrace.views.steps import StepTree
from blocktrace.views.table.build import Row, Table, build_table
from blocktrace.views.table.render import CSV_COLUMNS, HEADERS, print_text, to_text
from tests.models import traced
from tests.test_flops import CONFIGS

SMALL = BlockConfig(n_embd=64, n_head=4, seq=8, batch=2)
GQA = replace(SMALL, n_kv_head=2)
SMALL_ARGS = ["--n-embd", "64", "--n-head", "4", "--seq", "8", "--batch", "2"]
# rich would colour a pipe under FORCE_COLOR or TTY_COMPATIBLE=1: the tests want what a pipe gets
PLAIN_ENV: dict[str, str | None] = {"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "NO_COLOR": None}
NUMBERS = ("params", "trainable", "flops")  # the number columns, in table order
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-8]|9[0-7])[0-9;]*m")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["table", *args], env=PLAIN_ENV)


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def calls_by_path(table: Table) -> dict[str, Row]:
    return {r.path: r for r in table.rows if r.call is not None}


# --- rows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_parameters_equal_the_closed_form(config: BlockConfig) -> None:
    c, h, hkv, d, r = config.n_embd, config.n_head, config.n_kv_head, config.head_dim, config.mlp_ratio
    attention, mlp = c * (h * d) + 2 * c * (hkv * d) + c * c, 2 * r * c * c
    table = build_table(StepTree(traced(config)), collapse=False)  # every layer
    calls = calls_by_path(table)
    blocks = [""] if config.n_layer == 1 else [f"h.{i}." for i in range(config.n_layer)]
    for block in blocks:
        assert calls[f"{block}attn"].params == attention
        assert calls[f"{block}mlp"].params == mlp
        # a Linear's weight is out_features x in_features
        assert calls[f"{block}attn.c_k"].weights[0].shape == (hkv * d, c)
        assert calls[f"{block}mlp.c_fc"].weights[0].shape == (r * c, c)
    norms = [row for row in table.rows if row.kind == "RMSNorm op"]
    assert len(norms) == 4 * config.n_layer and {row.params for row in norms} == {0}
    assert table.totals.params == table.rows[0].params == config.n_layer * (attention + mlp)
    assert (table.totals.trainable, table.totals.frozen) == (table.totals.params, 0)


def test_rows_come_in_execution_order_indented_by_nesting() -> None:
    t = traced(GQA)
    rows = build_table(StepTree(t)).rows
    assert [r.call for r in rows if r.call is not None] == list(range(len(t.calls)))
    ops = [r.op for r in rows if r.op is not None]
    assert ops == sorted(ops)
    # each Linear's own F.linear is the Linear's row, not a second one; every other op has a row
    assert len(ops) == len(t.ops) - 6 and "linear" not in {r.name for r in rows}
    depth = {r.call: r.depth for r in rows if r.call is not None}
    for r in rows:
        parent = t.calls[r.call].parent if r.call is not None else t.ops[r.op].call  # type: ignore[index]
        assert r.depth == (0 if parent is None else depth[parent] + 1), r
    top = [(r.name, r.kind) for r in rows if r.depth <= 1]
    assert top == [
        ("(root)", "Block"),
        ("rms_norm", "RMSNorm op"),
        ("attn", "CausalSelfAttention"),
        ("x + attn(norm(x), cos_sin[0], cos_sin[1])", "residual add"),  # the rotary tables
        ("rms_norm", "RMSNorm op"),
        ("mlp", "MLP"),
        ("x + mlp(norm(x))", "residual add"),
    ]
    assert [r.op for r in rows if r.kind == "residual add"] == [a.op for a in t.residual_adds]


def children(rows: tuple[Row, ...], i: int) -> list[Row]:
    """The rows directly under rows[i]: those after it, one level deeper, until the nesting closes."""
    out: list[Row] = []
    for row in rows[i + 1 :]:
        if row.depth <= rows[i].depth:
            break
        if row.depth == rows[i].depth + 1:
            out.append(row)
    return out


def test_a_call_row_counts_the_flops_of_everything_inside_it() -> None:
    rows = build_table(StepTree(traced(replace(GQA, n_layer=2))), collapse=False).rows
    parents = [i for i in range(len(rows)) if children(rows, i)]
    blocks = [[f"h.{n}", f"h.{n}.attn", f"h.{n}.mlp"] for n in (0, 1)]
    assert [rows[i].name for i in parents] == ["(root)", *blocks[0], *blocks[1]]
    for i in parents:
        assert rows[i].flops == sum(r.flops for r in children(rows, i)) > 0, rows[i].name
    sdpa = next(r for r in rows if r.kind == "SDPA")
    assert sdpa.flops > 0 and sdpa.path == "h.0.attn"


class _Custom(nn.Module):
    """Not a Block: a functional matmul, a module that returns its input, a Linear, a method op."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(8, 4))
        self.skip = nn.Identity()
        self.proj = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.skip(x @ self.w)  # (2, 5, 8) -> (2, 5, 4)
        return self.proj(h).relu()


def test_any_module_tabulates_in_order() -> None:
    table = build_table(StepTree(trace(_Custom(), (torch.zeros(2, 5, 8),))))
    assert [(r.depth, r.name, r.kind) for r in table.rows] == [
        (0, "(root)", "_Custom"),
        (1, "matmul", "matmul"),
        (1, "skip", "Identity"),  # ends when the matmul's output does: after it
        (1, "proj", "Linear"),
        (1, "relu", "elementwise"),
    ]
    matmul, proj = table.rows[1], table.rows[3]
    assert matmul.flops == 2 * (2 * 5) * 8 * 4 and proj.flops == 2 * (2 * 5) * 4 * 3
    assert table.rows[0].weights[0].shape == (8, 4) and table.totals.params == 8 * 4 + 4 * 3 + 3


class _Remembers(nn.Module):
    """One op whose value is kept aside, while the call hands back its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.doubled = x * 2
        return x


def test_a_call_is_its_one_op_only_when_it_returns_that_op_s_value() -> None:
    rows = build_table(
        StepTree(trace(nn.Sequential(nn.Linear(4, 4), _Remembers()), (torch.zeros(2, 4),)))
    ).rows
    assert [(r.depth, r.name, r.kind) for r in rows] == [
        (0, "(root)", "Sequential"),
        (1, "0", "Linear"),  # F.linear returned what the Linear did: one row
        (1, "1", "_Remembers"),
        (2, "mul", "elementwise"),  # x * 2 is not what the call returned: its own row
    ]


def test_activation_memory_is_every_tensor_created_at_the_dtype() -> None:
    # per Block, counted from model.py: 14 + 3r tensors of (B, T, C), 7 of (B, T, Hkv*D) (c_k, c_v,
    # k's rotary halves, cat and norm), and -sin twice, (T, D/2)
    b, t, c, r, kv = GQA.batch, GQA.seq, GQA.n_embd, GQA.mlp_ratio, GQA.n_kv_head * GQA.head_dim
    elements = b * t * c * (14 + 3 * r) + 7 * b * t * kv + t * GQA.head_dim
    f32 = build_table(StepTree(traced(GQA))).totals
    bf16 = build_table(StepTree(traced(replace(GQA, dtype="bfloat16")))).totals
    assert (f32.dtype, bf16.dtype) == ("float32", "bfloat16")
    assert f32.activation_bytes == 4 * elements and bf16.activation_bytes == 2 * elements
    assert (bf16.params, bf16.flops) == (f32.params, f32.flops)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_every_device_gives_the_same_table(device: str) -> None:
    probe = build_table(StepTree(traced(GQA)))
    other = build_table(StepTree(trace_config(GQA, device)))
    assert other.rows == probe.rows and other.totals == probe.totals


@pytest.mark.parametrize(
    ("dtype", "size"), [("float32", 4), ("bfloat16", 2), ("float8_e4m3fn", 1), ("bool", 1)]
)
def test_itemsize_reads_the_bit_width(dtype: str, size: int) -> None:
    assert itemsize(dtype) == size


# --- --freeze and --depth -----------------------------------------------------------------------


def test_freeze_moves_parameters_from_trainable_to_frozen() -> None:
    attention = 4 * 64 * 64
    plain = json.loads(ok(*SMALL_ARGS, "--format", "json"))
    frozen = json.loads(ok(*SMALL_ARGS, "--format", "json", "--freeze", "attn.*"))
    assert plain["totals"]["frozen"] == 0
    assert frozen["totals"]["params"] == plain["totals"]["params"]
    assert frozen["totals"]["frozen"] == attention
    assert frozen["totals"]["trainable"] == plain["totals"]["trainable"] - attention
    trainable = {r["path"]: r["trainable"] for r in frozen["rows"] if r["call"] is not None}
    assert trainable["attn"] == trainable["attn.c_q"] == 0
    assert trainable["mlp"] == 2 * 4 * 64 * 64
    text = ok(*SMALL_ARGS, "--freeze", "attn.*", "--depth", "0")
    assert f"frozen {attention:,})" in text


def test_freeze_is_repeatable() -> None:
    data = json.loads(ok(*SMALL_ARGS, "--format", "json", "--freeze", "attn.c_q", "--freeze", "mlp.*"))
    assert data["totals"]["frozen"] == 64 * 64 + 2 * 4 * 64 * 64


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_depth_folds_deeper_rows_into_their_parent(depth: int) -> None:
    t = traced(replace(GQA, n_layer=2))
    full, folded = build_table(StepTree(t)), build_table(StepTree(t), depth)
    assert folded.rows == tuple(r for r in full.rows if r.depth <= depth)
    assert max(r.depth for r in folded.rows) == depth < max(r.depth for r in full.rows)
    assert folded.totals == full.totals


def test_depth_flag_prints_only_the_top_rows() -> None:
    lines = ok(*SMALL_ARGS, "--depth", "1").splitlines()
    assert [len(line) - len(line.lstrip(" ")) for line in lines[2:9]] == [0, 2, 2, 2, 2, 2, 2]
    assert lines[9].startswith("parameters: ")


# --- formats ------------------------------------------------------------------------------------


def test_text_markdown_json_and_csv_carry_the_same_numbers() -> None:
    args = [*SMALL_ARGS, "--n-kv-head", "2", "--freeze", "mlp.c_fc"]
    data = json.loads(ok(*args, "--format", "json"))
    rows, totals = data["rows"], data["totals"]
    assert data["schema"] == "blocktrace.table" and data["version"] == 3
    lines = ok(*args).splitlines()
    assert re.split(r" {2,}", lines[0]) == list(HEADERS)
    for line, row in zip(lines[2:], rows, strict=False):
        assert line.startswith("  " * row["depth"] + row["name"] + "  "), line
        fields = re.split(r" {2,}", line.strip())
        flow = f"{', '.join(row['inputs'])} -> {', '.join(row['outputs'])}"
        assert fields[:3] == [row["name"], row["kind"], flow]
        assert [f for f in fields[3:] if f.startswith("(")] == ([row["weight"]] if row["weight"] else [])
        numbers = [int(f.replace(",", "")) for f in fields[3:] if re.fullmatch(r"[\d,]+", f)]
        if row["call"] is not None:
            assert numbers == [row[n] for n in NUMBERS]
        else:  # an op has no parameters, and its FLOPs are blank where 0
            assert numbers == ([row["flops"]] if row["flops"] else [])
    footer = lines[2 + len(rows) :]
    params, trainable, frozen = (f"{totals[k]:,}" for k in ("params", "trainable", "frozen"))
    assert footer[0] == f"parameters: {params} (trainable {trainable}, frozen {frozen})"
    assert footer[1].startswith(f"forward FLOPs: {totals['flops']:,} (")
    assert footer[2].startswith(f"activations: {totals['activation_bytes']:,} bytes (")

    markdown = [line for line in ok(*args, "--format", "markdown").splitlines() if line.startswith("| ")][1:]
    assert len(markdown) == len(rows)
    for line, row in zip(markdown, rows, strict=True):
        cells = [cell.strip(" ") for cell in line.strip("|").split("|")]
        assert cells[0] == "\u00a0" * 2 * row["depth"] + row["name"]
        assert [int(c.replace(",", "") or 0) for c in cells[4:]] == [row[n] for n in NUMBERS]

    table = list(csv.DictReader(io.StringIO(ok(*args, "--format", "csv"))))
    assert len(table) == len(rows)
    for line, row in zip(table, rows, strict=True):
        assert list(line) == list(CSV_COLUMNS)
        for column in CSV_COLUMNS:
            value = row[column]
            assert line[column] == ("; ".join(value) if isinstance(value, list) else str(value)), column


def test_shapes_concrete_and_both() -> None:
    concrete = json.loads(ok(*SMALL_ARGS, "--depth", "0", "--format", "json", "--shapes", "concrete"))
    both = json.loads(ok(*SMALL_ARGS, "--depth", "0", "--format", "json", "--shapes", "both"))
    assert concrete["rows"][0]["outputs"] == ["(2, 8, 64)"]
    assert both["rows"][0]["outputs"] == ["(B, T, C)=(2, 8, 64)"]


def test_default_table_golden(golden: Callable[[str, str], None]) -> None:
    golden("table_default.txt", ok())


def test_gqa_frozen_markdown_golden(golden: Callable[[str, str], None]) -> None:
    args = [*SMALL_ARGS, "--n-kv-head", "2", "--freeze", "attn.*", "--format", "markdown"]
    golden("table_gqa_frozen_markdown.txt", ok(*args))


# --- where the text goes ------------------------------------------------------------------------


def test_a_pipe_gets_plain_text_as_wide_as_the_table() -> None:
    text = ok(*SMALL_ARGS)
    assert "\x1b" not in text
    assert all(line == line.rstrip() for line in text.splitlines())
    assert len({len(line) for line in text.splitlines()[:2]}) == 1  # the rule spans the header


def _terminal(table: Table, width: int = 100) -> str:
    buffer = io.StringIO()
    print_text(table, Console(file=buffer, force_terminal=True, color_system="standard", width=width))
    return buffer.getvalue()


def test_a_terminal_gets_colour_and_a_fitted_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = _terminal(build_table(StepTree(traced(SMALL))), width=100)
    assert ANSI_COLOUR.search(out)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert max(len(line) for line in plain.splitlines()[:-4]) <= 100


def test_no_color_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = _terminal(build_table(StepTree(traced(SMALL)), 1))
    assert not ANSI_COLOUR.search(out) and "x + attn" in out


def test_ascii_only_streams_get_7_bit_text() -> None:
    to_text(build_table(StepTree(traced(SMALL))), ascii_only=True).encode("ascii")


def test_installed_command_in_a_pipe() -> None:
    env = {k: v for k, v in os.environ.items() if k not in PLAIN_ENV}
    command = [sys.executable, "-m", "blocktrace", "table", *SMALL_ARGS, "--depth", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and done.stdout.splitlines()[2].startswith("(root)")


def test_building_and_formatting_need_no_torch() -> None:
    modules = "blocktrace.views.table.build, blocktrace.views.table.render"
    check = f"import sys, {modules}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], check=False, timeout=60).returncode == 0


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-embd", "770"], "n_embd (770) must be divisible by n_head (6)"),
        ([*SMALL_ARGS, "--freeze", "nope*"], "--freeze 'nope*' matches no module path"),
        (["--depth", "-1"], "--depth"),
        (["--format", "xml"], "--format"),
        (["--dtype", "int8"], "--dtype"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("blocktrace: error: ") and message in result.stderr


# --- a peer -------------------------------------------------------------------------------------


def test_torchinfo_agrees_on_every_module() -> None:
    torchinfo = pytest.importorskip("torchinfo")
    frozen = ("mlp.c_fc", "attn.c_q")
    module = build_module(GQA, "cpu")
    freeze(module, frozen)
    summary = torchinfo.summary(
        module, input_data=list(example_inputs(GQA, "cpu")), depth=100, verbose=0, device="cpu"
    )
    paths = {id(m): p for p, m in module.named_modules()}
    theirs = {
        paths[id(layer.module)]: (tuple(layer.output_size), layer.num_params, layer.trainable_params)
        for layer in summary.summary_list
    }
    table = build_table(StepTree(traced(GQA, frozen)))
    ours = {r.path: (r.outputs[0].shape, r.params, r.trainable) for r in table.rows if r.call is not None}
    assert theirs == ours
    assert (summary.total_params, summary.trainable_params) == (table.totals.params, table.totals.trainable)
