"""A rotary embedding that turns part of each head (GPT-NeoX's `rotary_pct`; the neox preset takes
Pythia-1.4B's 0.25): held against transformers' GPTNeoXLayer built from Pythia's config, value for
value on the CPU with the same weights, and against plain forward hooks on our own module."""

from __future__ import annotations

import json

import pytest
import torch

from blocktrace.model import apply_partial_rotary_emb, build_module, example_inputs
from blocktrace.models.block.config import BlockConfig
from blocktrace.pipeline import trace_config
from tests.harness import TINY, invoke, one_error
from tests.models import same
from tests.test_faithful import hooked_output_shapes

pytest.importorskip("transformers")

from transformers import GPTNeoXConfig
from transformers.models.gpt_neox.modeling_gpt_neox import (
    GPTNeoXLayer,
    GPTNeoXRotaryEmbedding,
    apply_rotary_pos_emb,
)

from tests.test_preset_sizes import PYTHIA_1_4B

# Pythia-1.4B's layer at a width that runs in milliseconds: 2 heads of 32, 8 of them turned
SMALL = {"n_embd": 64, "n_head": 2, "seq": 7, "batch": 2, "n_layer": 1}
# a nanochat Block turning half of each head: separate q, k, v, grouped-query heads, QK-norm
HALF = BlockConfig(n_embd=48, n_head=6, n_kv_head=2, seq=5, batch=3, rotary_pct=0.5)


def pythia(config: BlockConfig) -> GPTNeoXConfig:
    c = GPTNeoXConfig(**{**PYTHIA_1_4B, "hidden_size": config.n_embd, "intermediate_size": config.hidden,
                         "num_attention_heads": config.n_head})  # fmt: skip
    c._attn_implementation = "sdpa"
    return c


def test_the_neox_preset_turns_pythia_s_quarter_of_each_head() -> None:
    config = BlockConfig.from_preset("neox")
    assert (config.rotary_pct, config.head_dim, config.rotary_dims) == (0.25, 128, 32)
    assert BlockConfig.from_preset("neox", rotary_pct=1).rotary_dims == 128
    assert {BlockConfig.from_preset(p).rotary_pct for p in ("nanochat", "gpt2", "llama", "bert")} == {1.0}


def test_the_neox_layer_computes_what_pythia_s_computes() -> None:
    """Our weights copied into GPTNeoXLayer: the same output. Their fused projection holds each
    head's q, k, v together where ours holds all q, then all k, then all v; and nanochat turns the
    other way (families.md), which is their turn with sin negated."""
    config = BlockConfig.from_preset("neox", **SMALL)
    torch.manual_seed(0)
    ours = build_module(config, "cpu").eval()
    theirs = GPTNeoXLayer(pythia(config), layer_idx=0).eval()
    state = dict(ours.state_dict())
    H, D, C = config.n_head, config.head_dim, config.n_embd
    for name in ("weight", "bias"):
        fused = state[f"attention.query_key_value.{name}"]
        state[f"attention.query_key_value.{name}"] = (
            fused.view(3, H, D, -1).transpose(0, 1).reshape(3 * C, -1).squeeze(-1)
        )
    theirs.load_state_dict(state)
    x, (cos, sin) = example_inputs(config, "cpu")
    position_ids = torch.arange(config.seq)[None]
    their_cos, their_sin = GPTNeoXRotaryEmbedding(pythia(config))(x, position_ids)
    assert their_cos.shape[-1] == config.rotary_dims == 8 == 2 * cos.shape[-1]
    with torch.no_grad():
        got = ours(x, (cos, sin))
        want = theirs(x, attention_mask=None, position_embeddings=(their_cos, -their_sin))
        whole = build_module(BlockConfig.from_preset("neox", **SMALL, rotary_pct=1), "cpu")
        whole.load_state_dict(ours.state_dict())
        turned_whole = whole(*example_inputs(BlockConfig.from_preset("neox", **SMALL, rotary_pct=1), "cpu"))
    want = want[0] if isinstance(want, tuple) else want
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert not torch.allclose(turned_whole, want, atol=1e-3)  # the whole head turned is not Pythia's


def test_the_tables_are_gpt_neox_s() -> None:
    config = BlockConfig.from_preset("neox", **SMALL)
    _, (cos, sin) = example_inputs(config, "cpu")
    x = torch.zeros(1, config.seq, config.head_dim)
    their_cos, their_sin = GPTNeoXRotaryEmbedding(pythia(config))(x, torch.arange(config.seq)[None])
    half = config.rotary_dims // 2
    assert cos.shape == (1, config.seq, 1, half)
    assert torch.allclose(cos[0, :, 0], their_cos[0, :, :half], atol=1e-6)
    assert torch.allclose(sin[0, :, 0], their_sin[0, :, :half], atol=1e-6)
    # q turned as GPT-NeoX turns it (theirs is (B, H, T, D), nanochat's way is sin negated): the
    # layer's output alone cannot tell, as q . k is the same for any order of the dims of both
    q = torch.randn(2, config.seq, config.n_head, config.head_dim)
    theirs, _ = apply_rotary_pos_emb(q.transpose(1, 2), q.transpose(1, 2), their_cos, -their_sin)
    assert torch.allclose(apply_partial_rotary_emb(q, cos, sin), theirs.transpose(1, 2), atol=1e-6)


@pytest.mark.parametrize(
    "config", [BlockConfig.from_preset("neox", **SMALL), HALF], ids=["neox-quarter", "nanochat-half"]
)
def test_probe_meta_and_cpu_agree_with_plain_hooks(config: BlockConfig) -> None:
    probe, meta, cpu = (trace_config(config, d) for d in ("probe", "meta", "cpu"))
    assert probe.device == "probe"  # fitted from the probes, not a fallback
    same(probe, cpu)
    same(meta, cpu)
    traced: dict[str, list[tuple[int, ...]]] = {}
    for c in probe.calls:
        traced.setdefault(c.path, []).append(c.outputs[0].shape)
    assert traced == hooked_output_shapes(config)
    assert probe.inputs[1].shape == (1, config.seq, 1, config.rotary_dims // 2)


def test_help_says_the_preset_s_part() -> None:
    text = " ".join(invoke(["diagram", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "--rotary-pct" in text and "Default: the preset's (neox 0.25), else 1." in text


def test_the_drawing_names_the_turned_part() -> None:
    args = [
        "diagram",
        "--preset",
        "neox",
        *["--n-embd", "256", "--n-head", "4", "--seq", "64", "--n-layer", "1"],
    ]
    text = invoke(args).stdout
    assert "PartialRotaryAttention" in text and "(1, T, 1, D/8)" in text and "(1, T, 1, D/2)" not in text
    whole = invoke([*args, "--rotary-pct", "1"]).stdout
    assert "CausalSelfAttention" in whole and "(1, T, 1, D/2)" in whole
    assert json.loads(invoke([*args, "--format", "json"]).stdout)["config"]["rotary_pct"] == 0.25


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--rotary-pct", "0"], ("rotary_pct must be a number above 0 and at most 1, got 0.0",)),
        (["--rotary-pct", "1.5"], ("rotary_pct must be a number above 0 and at most 1, got 1.5",)),
        (["--rotary-pct", "nan"], ("rotary_pct must be a number above 0 and at most 1",)),
        (["--rotary-pct", "0.125"], ("rotary_pct (0.125) of the head dim (8) is 1 dims",)),  # D = 32/4
        (["--rotary-pct", "0.3"], ("is 2.4 dims",)),
        (["--rotary-pct", "1e-9"], ("is 8e-09 dims",)),  # above 0, yet no dim to turn
        (["--n-embd", "480", "--n-head", "6", "--rotary-pct", "0.4"], ("turns 2/5 of each head",)),
        # 0.7 x 180 is 125.99999999999999 in floats: still 126 dims, 7/10 of the head
        (["--n-embd", "360", "--n-head", "2", "--rotary-pct", "0.7"], ("turns 7/10 of each head",)),
    ],
)
def test_a_part_that_cannot_turn_is_one_line(flags: list[str], words: tuple[str, ...]) -> None:
    one_error(invoke(["diagram", *TINY, *flags]), 2, *words)
