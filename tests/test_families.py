"""Every Block family and flag combination traces, draws, tables and writes formulas from its data
flow, and the probe-derived trace equals the meta and real CPU traces of the same module."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from blocktrace.cli import app
from blocktrace.errors import ConfigError
from blocktrace.model import build_module
from blocktrace.models.block.config import BlockConfig
from blocktrace.models.block.families import Activation, Norm, Preset, Qkv, Residual
from blocktrace.pipeline import trace_config
from blocktrace.tracing.tracer import trace
from blocktrace.views.diagram.formulas import formulas
from blocktrace.views.diagram.layout import layout
from blocktrace.views.diagram.render import render, to_text
from blocktrace.views.steps import StepTree
from blocktrace.views.table.build import build_table
from blocktrace.views.table.render import to_text as table_text
from tests.models import same

ADDS_PER_LAYER = {"pre": 2, "post": 2, "parallel": 1, "single": 1, "none": 0}


@st.composite
def configs(draw: st.DrawFn) -> BlockConfig:
    """Any valid family at small sizes: a preset, any of its choices overridden, GQA where it can be,
    a head dim the rotary part (half a head, or the preset's: neox's quarter) turns evenly."""
    preset = draw(st.sampled_from(list(Preset)))
    rotary_pct = draw(st.sampled_from([None, 1.0, 0.5]))
    turned = BlockConfig.from_preset(preset).rotary_pct if rotary_pct is None else rotary_pct
    qkv = draw(st.sampled_from(list(Qkv)))
    n_kv_head = draw(st.integers(1, 3))
    n_head = n_kv_head * (1 if qkv == "fused" else draw(st.integers(1, 3)))
    step = int(2 / turned)
    n_embd = n_head * step * draw(st.integers(1, 8 // step or 1))
    return BlockConfig.from_preset(
        preset,
        rotary_pct=rotary_pct,
        n_embd=n_embd,
        n_head=n_head,
        n_kv_head=n_kv_head,
        seq=draw(st.integers(1, 9)),
        batch=draw(st.integers(1, 3)),
        mlp_hidden=draw(st.sampled_from([None, n_embd * 3, n_embd + 2])),
        n_layer=draw(st.integers(1, 3)),
        qkv=qkv,
        norm=draw(st.sampled_from([None, *Norm])),
        activation=draw(st.sampled_from([None, *Activation])),
        residual=draw(st.sampled_from([None, *Residual])),
        bias=draw(st.sampled_from([None, True, False])),
        qk_norm=draw(st.sampled_from([None, True, False])),
        rotary=draw(st.sampled_from([None, True, False])),
        causal=draw(st.sampled_from([None, True, False])),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs())
def test_probe_meta_and_cpu_agree_on_every_family(config: BlockConfig) -> None:
    probe = trace_config(config, "probe")
    assert probe.device == "probe", "the probes must fit every family"
    same(probe, trace_config(config, "meta"))
    same(probe, trace_config(config, "cpu"))
    assert len(probe.residual_adds) == ADDS_PER_LAYER[config.residual] * config.n_layer
    drawing = to_text(render(layout(StepTree(probe, collapse=False))))
    assert drawing.count("(+)") == len(probe.residual_adds)
    tree = StepTree(probe)
    rows = build_table(tree, collapse=False).rows  # every layer's rows
    assert sum(r.kind == "residual add" for r in rows) == len(probe.residual_adds)
    # one formula per value of one layer's stream a residual add makes: x_mid, ..., x_out
    stream = [line for line in formulas(tree) if line.startswith("x_")]
    assert len(stream) == ADDS_PER_LAYER[config.residual]
    assert not stream or stream[-1].startswith("x_out = ")  # --residual none: no add, no formula
    assert all(d is not None for t in probe.tensors() for d in [t.symbols])


SMALL = {"n_embd": 32, "n_head": 4, "seq": 6, "batch": 2, "n_layer": 1}


def family(preset: str = "nanochat", **flags: object):
    return trace_config(BlockConfig.from_preset(preset, **{**SMALL, **flags}), "probe")


def test_attention_is_named_causal_only_where_the_mask_ran() -> None:
    bidirectional = family(causal=False)
    assert {c.type for c in bidirectional.calls if c.path == "attn"} == {"SelfAttention"}
    sdpa = next(o for o in bidirectional.ops if o.name == "scaled_dot_product_attention")
    assert sdpa.attrs["is_causal"] is False
    assert {c.type for c in family("bert", causal=True).calls if c.path == "attention"} == {
        "CausalSelfAttention"
    }


@pytest.mark.parametrize(
    ("preset", "flags", "expected"),
    [
        (
            "nanochat",
            {},
            [
                "x_mid = x + CausalSelfAttention(RMSNorm(x), cos_sin[0], cos_sin[1])",
                "x_out = x_mid + MLP(RMSNorm(x_mid))",
            ],
        ),
        (
            "gpt2",
            {},
            ["x_mid = x + CausalSelfAttention(LayerNorm(x))", "x_out = x_mid + MLP(LayerNorm(x_mid))"],
        ),
        (
            "bert",
            {},
            ["x_mid = LayerNorm(x + SelfAttention(x))", "x_out = LayerNorm(x_mid + MLP(x_mid))"],
        ),
        (
            "neox",
            {},
            ["x_out = x + PartialRotaryAttention(LayerNorm(x), cos_sin[0], cos_sin[1]) + MLP(LayerNorm(x))"],
        ),
        (
            "nanochat",
            {"residual": "single"},
            ["x_out = x + MLP(CausalSelfAttention(RMSNorm(x), cos_sin[0], cos_sin[1]))"],
        ),
        (
            "nanochat",
            {"residual": "post"},
            [
                "x_mid = RMSNorm(x + CausalSelfAttention(x, cos_sin[0], cos_sin[1]))",
                "x_out = RMSNorm(x_mid + MLP(x_mid))",
            ],
        ),
    ],
)
def test_formulas_are_written_from_the_data_flow(preset: str, flags: dict, expected: list[str]) -> None:
    lines = formulas(StepTree(family(preset, **flags)))
    assert lines[: len(expected)] == expected
    assert not any(line.startswith("x_") for line in lines[len(expected) :])


def test_a_stack_collapsed_in_the_drawing_has_the_formulas_of_one_block() -> None:
    lines = formulas(StepTree(family(n_layer=3)))
    assert lines[0] == "each of h.0 … h.2 (Block × 3):"
    # each Block is called block(x, cos_sin), as Block.forward(x, cos_sin) names it
    assert [line for line in lines if line.startswith(("x", "cos_sin"))] == [
        "x_mid = x + CausalSelfAttention(RMSNorm(x), cos_sin[0], cos_sin[1])",
        "x_out = x_mid + MLP(RMSNorm(x_mid))",
        "cos_sin[0]: input 2, (1, T, 1, D/2)",
        "cos_sin[1]: input 3, (1, T, 1, D/2)",
    ]
    expanded = [
        line for line in formulas(StepTree(family(n_layer=3), collapse=False)) if line.startswith("x_")
    ]
    assert len(expanded) == 6 and expanded[-1] == "x_out = x_5 + MLP(RMSNorm(x_5))"


def drawing(preset: str = "nanochat", **flags: object) -> str:
    return to_text(render(layout(StepTree(family(preset, **flags)))))


def test_post_norm_draws_the_norm_on_the_stream_after_the_add() -> None:
    lines = drawing("bert").splitlines()
    plus = [i for i, line in enumerate(lines) if "(+)" in line]
    norms = [i for i, line in enumerate(lines) if "LayerNorm" in line]
    assert len(plus) == 2 and len(norms) == 2
    assert plus[0] < norms[0] < plus[1] < norms[1]  # each norm right after its add
    assert "attention_norm" in lines[norms[0] + 1] and "output_norm" in lines[norms[1] + 1]


def test_parallel_draws_the_branches_side_by_side_into_one_add() -> None:
    lines = drawing("neox").splitlines()
    assert sum("(+)" in line for line in lines) == 1
    fork = next(line for line in lines if "├" in line)
    assert "┬" in fork  # the second branch leaves the stream where the highway does
    join = next(line for line in lines if "(+)" in line)
    assert "┴" in join  # ... and comes back into the same (+)
    attention = next(i for i, line in enumerate(lines) if "PartialRotaryAttention" in line)
    mlp = next(i for i, line in enumerate(lines) if "│            MLP            │" in line)
    assert lines[attention].index("PartialRotaryAttention") < lines[mlp].index("MLP")  # further right
    caption = "x + attention(input_layernorm(x), cos_sin[0], cos_sin[1]) + mlp(post_attention_layernorm(x))"
    assert caption in "\n".join(lines)


def test_single_residual_is_one_highway_around_both_sublayers() -> None:
    text = drawing(residual="single")
    assert text.count("(+)") == text.count("├") == 1
    assert text.index("CausalSelfAttention") < text.index("MLP") < text.index("(+)")
    assert "x + mlp(attn(norm(x), cos_sin[0], cos_sin[1]))" in text


def test_f_is_named_when_the_mlp_width_is_no_multiple_of_c() -> None:
    t = family("llama", mlp_hidden=100)
    up = next(c for c in t.calls if c.path == "mlp.up_proj")
    assert up.outputs[0].symbols == ("B", "T", "F") and up.weights[0].symbols == ("F", "C")
    assert t.symbols["F"] == 100 and "F" in t.meanings
    assert "r" not in t.symbols
    wide = family("llama", mlp_hidden=96)  # 3C: a multiple, written as such
    assert next(c for c in wide.calls if c.path == "mlp.up_proj").outputs[0].symbols == ("B", "T", "3C")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "bogus"], "--preset must be one of nanochat, gpt2, llama, neox, bert, not 'bogus'"),
        (["--residual", "sideways"], "--residual must be one of pre, post, parallel, single, none, not"),
        (["--mlp-hidden", "0"], "--mlp-hidden must be a positive integer, got 0"),
        (["--mlp-hidden", "-5"], "--mlp-hidden must be a positive integer, got -5"),
        (
            ["--qkv", "fused", "--n-head", "6", "--n-kv-head", "2"],
            "qkv fused projects n_head key and value heads",
        ),
        (["--n-embd", "30", "--n-head", "2"], "must be even for rotary embeddings"),
        (["--n-layer", "1025"], "n_layer (1025) is over 1024, the most layers blocktrace traces"),
        (["--seq", str(2**40), "--batch", str(2**20)], "over torch's int64 limit"),
    ],
)
def test_bad_family_flags_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["diagram", *args, "--no-cache"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_odd_head_dims_draw_without_rotary() -> None:
    t = family("gpt2", n_embd=30, n_head=2)  # D = 15: fine without rotary embeddings
    assert t.device == "probe" and t.symbols["D"] == 15
    with pytest.raises(ConfigError, match="even for rotary"):
        BlockConfig.from_preset("llama", n_embd=30, n_head=2)


@pytest.mark.parametrize("preset", list(Preset))
def test_every_preset_tables_with_its_own_parameter_count(preset: str) -> None:
    table = build_table(StepTree(family(preset)))
    module = build_module(BlockConfig.from_preset(preset, **SMALL), "meta")
    assert table.totals.params == sum(p.numel() for p in module.parameters())
    assert "residual add" in table_text(table)


def test_each_op_is_defined_in_the_form_that_ran() -> None:
    gpt2 = formulas(StepTree(family("gpt2")))  # GPT-2's gelu_new: the tanh form
    assert [line for line in gpt2 if line.startswith("gelu(x)")] == [
        "gelu(x) = x * Phi(x), computed as 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"
    ]
    bert = formulas(StepTree(family("bert")))
    assert [line for line in bert if line.startswith("gelu(x)")] == ["gelu(x) = x * Phi(x)"]


class SharedNorm(torch.nn.Module):
    """GPT-J's block: one norm feeds both branches of a parallel residual."""

    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = torch.nn.LayerNorm(8)
        self.attn, self.mlp = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
        self.drop = torch.nn.Dropout(0.1)  # eval mode: hands back its input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        return self.drop(self.attn(h)) + self.mlp(h) + x


def test_a_value_read_twice_is_named_once() -> None:
    lines = formulas(StepTree(trace(SharedNorm(), (torch.randn(2, 3, 8),))))
    assert lines[:2] == ["h = LayerNorm(x)", "x_out = x + Dropout(Linear(h)) + Linear(h)"]
