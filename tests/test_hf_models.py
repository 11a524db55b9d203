"""Whole transformers models traced with `--hf`, from tiny config.json files written here at sizes
blocktrace never saw (hidden 48, 6 heads, 2 kv heads, intermediate 80, vocab 97, 3 layers): every
module call, on the meta device at full size (named from the probes) and on the CPU, against plain
forward hooks on the same model built by transformers itself; parameter totals against transformers'
own count; and the drawing's claims (residual adds, one "× N" section, names from the config, side
computations off the stream). A 70B-class Llama is traced on the meta device only."""

from __future__ import annotations

import json
import resource
from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from blocktrace.models.block.config import BlockConfig
from blocktrace.models.request import ModelRequest
from blocktrace.pipeline import cached_trace
from blocktrace.tracing.trace import Trace
from blocktrace.views.stats import totals
from blocktrace.views.steps import StepKind, StepTree
from tests.harness import invoke
from tests.hooks import hooked_calls, symbols_of, traced_calls

B, T = 2, 5
SIZES = {"hidden_size": 48, "num_attention_heads": 6, "intermediate_size": 80, "vocab_size": 97}
CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_embd": 48,
        "n_head": 6,
        "n_inner": 80,
        "n_layer": 3,
        "vocab_size": 97,
        "n_positions": 64,
    },
    "llama": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        **SIZES,
        "num_key_value_heads": 2,
        "num_hidden_layers": 3,
    },
    "neox": {
        "model_type": "gpt_neox",
        "architectures": ["GPTNeoXForCausalLM"],
        **SIZES,
        "num_hidden_layers": 3,
        "use_parallel_residual": True,
        "rotary_pct": 0.25,
    },
    "bert": {"model_type": "bert", "architectures": ["BertForMaskedLM"], **SIZES, "num_hidden_layers": 3},
}
# where each model keeps its layers, and (path, symbols) of a few outputs the config names
LAYERS = {
    "gpt2": "transformer.h",
    "llama": "model.layers",
    "neox": "gpt_neox.layers",
    "bert": "encoder.layer",
}
NAMED = {
    "gpt2": [("lm_head", ("B", "T", "V")), ("transformer.h.0.attn.c_attn", ("B", "T", "3C"))],
    "llama": [
        ("lm_head", ("B", "T", "V")),
        ("model.layers.0.self_attn.k_proj", ("B", "T", "Hkv*D")),
        ("model.layers.2.mlp.gate_proj", ("B", "T", "F")),
    ],
    "neox": [
        ("lm_head", ("B", "T", "V")),
        ("gpt_neox.layers.1.attention.query_key_value", ("B", "T", "3C")),
    ],
    "bert": [("encoder.layer.0.intermediate.dense", ("B", "T", "F")), ("pooler", ("B", "C"))],
}
ADDS_PER_LAYER = {"gpt2": 2, "llama": 2, "neox": 1, "bert": 2}  # NeoX: x + attn(ln1 x) + mlp(ln2 x) is one


def folder(name: str, root: Path) -> str:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(CONFIGS[name]), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf")


@cache
def _traced(name: str, root: Path, device: str) -> Trace:
    request = ModelRequest(BlockConfig(), "hf", folder(name, root), {"batch": B, "seq": T})
    return cached_trace(request, device, use_cache=False)


@cache
def _reference(name: str, root: Path) -> torch.nn.Module:
    """The same model, built by transformers from the same config.json, as the spec builds it."""
    config = AutoConfig.from_pretrained(folder(name, root))
    auto = AutoModel if name == "bert" else AutoModelForCausalLM  # BertForMaskedLM is not causal
    return auto.from_config(config).eval()


@pytest.mark.parametrize("device", ["probe", "cpu"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_call_has_the_shapes_forward_hooks_see(name: str, device: str, root: Path) -> None:
    model = _reference(name, root)
    expected = hooked_calls(model, (torch.zeros(B, T, dtype=torch.long),))
    assert traced_calls(_traced(name, root, device)) == expected
    assert len(expected) > 30  # every layer's modules, not only the root's


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_totals_are_transformers_own(name: str, root: Path) -> None:
    model = _reference(name, root)
    unique = sum(p.numel() for p in model.parameters())  # a tied weight is one parameter
    assert totals(_traced(name, root, "probe")).params == unique == model.num_parameters()
    assert totals(_traced(name, root, "cpu")).params == unique


def test_gpt2_ties_its_head_to_its_embedding(root: Path) -> None:
    model = _reference("gpt2", root)
    assert model.lm_head.weight is model.transformer.wte.weight
    traced = _traced("gpt2", root, "probe")
    every_weight = sum(w.shape[0] * w.shape[1] for c in traced.calls for w in c.weights if len(w.shape) == 2)
    assert totals(traced).params < every_weight  # the (V, C) matrix, listed twice, is counted once


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_probe_named_trace_is_the_meta_trace(name: str, root: Path) -> None:
    probed, meta = _traced(name, root, "probe"), _traced(name, root, "meta")
    assert probed.calls == meta.calls and probed.ops == meta.ops
    assert probed.residual_adds == meta.residual_adds


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_drawing_finds_the_layers_and_names_them(name: str, root: Path) -> None:
    traced = _traced(name, root, "probe")
    assert len(traced.residual_adds) == 3 * ADDS_PER_LAYER[name]
    if name == "neox":
        assert all(len(r.branches) == 2 for r in traced.residual_adds)  # attention and MLP, in parallel
    for path, symbols in NAMED[name]:
        assert symbols_of(traced, path) == symbols, path
    assert traced.symbols["C"] == 48 and traced.symbols["V"] == 97 and traced.symbols["F"] == 80
    sections = [s for s in StepTree(traced).stream if s.kind == StepKind.section and "×" in s.title]
    assert [(s.label, s.title.split(" × ")[1]) for s in sections] == [
        (f"{LAYERS[name]}.0 … {LAYERS[name]}.2", "3")
    ]


@pytest.mark.parametrize("name", ["llama", "neox"])
def test_side_computations_are_not_on_the_stream(name: str, root: Path) -> None:
    traced = _traced(name, root, "probe")
    rotary = next(c for c in traced.calls if c.type.endswith("RotaryEmbedding"))
    arange = next(o for o in traced.ops if o.name == "arange")
    steps = StepTree(traced, collapse=False).stream
    assert all(s.call is None or s.call.index != rotary.index for s in steps)
    assert all(arange not in s.ops for s in steps)
    assert any(s.kind == StepKind.residual for s in steps)  # the stream itself is there


# Llama-3-70B's shape; on the meta device nothing is allocated, so a toy's cost
LLAMA_70B = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 8192,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
}


def test_a_70b_llama_is_traced_exactly_without_its_memory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_70B), encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    request = ModelRequest(BlockConfig(), "hf", str(tmp_path), {"batch": 1, "seq": 4096})
    traced = cached_trace(request, "probe", use_cache=False)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 2 * 2**20, f"{grown} KiB"  # the fp32 weights alone are 280 GB

    C, H, Hkv, F, V, L = 8192, 64, 8, 28672, 128256, 80
    D = C // H
    attention = C * C + 2 * C * Hkv * D + C * C  # q, k, v, o; no biases
    mlp = 3 * C * F  # gate, up, down
    assert totals(traced).params == V * C + L * (attention + mlp + 2 * C) + C + V * C
    assert totals(traced).params == 70_553_706_496
    calls = {c.path: c for c in traced.calls}
    assert calls["lm_head"].outputs[0].shape == (1, 4096, V)
    assert calls["lm_head"].outputs[0].symbols == ("B", "T", "V")
    assert calls["model.layers.79.self_attn.k_proj"].outputs[0].shape == (1, 4096, Hkv * D)
    assert calls["model.layers.79.mlp.up_proj"].outputs[0].symbols == ("B", "T", "F")
    assert len(traced.residual_adds) == 2 * L


def test_the_model_s_own_sizes_bound_the_input_not_the_block_s(root: Path) -> None:
    # 4e15 tokens of width 48 fit in int64 where the built-in Block's 3072-wide MLP would not; 1e18 do not
    llama = folder("llama", root)
    fits = invoke(["table", "--hf", llama, "--batch", str(4 * 10**15), "--seq", "1", "--depth", "0"])
    assert fits.exit_code == 0, fits.stderr
    refused = invoke(["table", "--hf", llama, "--batch", str(10**18), "--seq", "1"])
    assert refused.exit_code == 2 and "over torch's int64 limit" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1


def test_a_config_with_one_entry_per_layer_is_probed_with_its_first(tmp_path: Path) -> None:
    # Qwen2's layer_types must have one entry per layer: a one-layer probe keeps the first
    config = {
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 48,
        "num_attention_heads": 6, "num_key_value_heads": 2, "intermediate_size": 80, "num_hidden_layers": 3,
        "vocab_size": 97, "tie_word_embeddings": True,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    result = invoke(["table", "--hf", str(tmp_path), "--seq", "5", "--batch", "2", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["symbols"]["Hkv"] == 2 and table["symbols"]["V"] == 97
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tmp_path))
    assert table["totals"]["params"] == sum(p.numel() for p in model.parameters())
