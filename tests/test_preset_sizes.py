"""Each preset comes at the sizes of its reference model: held against transformers' own config
classes, and each Block's traced parameter count against the transformers layer built from that
config and against the model's published total. A size flag given overrides the preset's."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("transformers")

import torch
from torch import nn
from transformers import BertConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, PretrainedConfig
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXLayer, GPTNeoXRotaryEmbedding
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from blocktrace.api.request import model_request
from blocktrace.model import example_inputs
from blocktrace.models.block.config import BlockConfig
from blocktrace.pipeline import trace_config
from blocktrace.views.steps import StepTree
from blocktrace.views.table.build import build_table
from tests.harness import invoke

# huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json (LlamaConfig() is Llama 2 7B)
LLAMA_3_8B = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "max_position_embeddings": 8192, "rope_theta": 500000.0, "vocab_size": 128256,
}  # fmt: skip
# huggingface.co/EleutherAI/pythia-1.4b/blob/main/config.json (GPTNeoXConfig() is GPT-NeoX-20B)
PYTHIA_1_4B = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 16, "num_hidden_layers": 24,
    "max_position_embeddings": 2048, "rotary_pct": 0.25, "use_parallel_residual": True, "vocab_size": 50304,
}  # fmt: skip


def _gpt2_total(block: int, c: PretrainedConfig) -> int:
    """GPT-2's blocks, token and position embeddings, the last LayerNorm."""
    return c.n_layer * block + (c.vocab_size + c.n_positions) * c.n_embd + 2 * c.n_embd


def _llama_total(block: int, c: PretrainedConfig) -> int:
    """Llama 3's layers, its embedding and untied output head, the last RMSNorm."""
    return c.num_hidden_layers * block + 2 * c.vocab_size * c.hidden_size + c.hidden_size


def _neox_total(block: int, c: PretrainedConfig) -> int:
    """Pythia's layers and last LayerNorm: the non-embedding count its paper gives."""
    return c.num_hidden_layers * block + 2 * c.hidden_size


def _bert_total(block: int, c: PretrainedConfig) -> int:
    """BertModel: the layers, word/position/type embeddings and their LayerNorm, the pooler."""
    c_ = c.hidden_size
    embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * c_ + 2 * c_
    return c.num_hidden_layers * block + embeddings + c_ * c_ + c_


# preset -> its reference's config, the transformers layer, the published parameters of a Block and
# of the model (GPT-2 small 124M, Llama 3 8B, Pythia-1.4B's non-embedding 1,208,602,624, BERT-base
# 110M), and how the model's total adds up from a Block.
REFERENCES: dict[str, tuple[Callable[[], PretrainedConfig], type[nn.Module], int, int, Any]] = {
    "gpt2": (GPT2Config, GPT2Block, 7_087_872, 124_439_808, _gpt2_total),
    "llama": (lambda: LlamaConfig(**LLAMA_3_8B), LlamaDecoderLayer, 218_112_000, 8_030_261_248, _llama_total),
    "neox": (lambda: GPTNeoXConfig(**PYTHIA_1_4B), GPTNeoXLayer, 50_358_272, 1_208_602_624, _neox_total),
    "bert": (BertConfig, BertLayer, 7_087_872, 109_482_240, _bert_total),
}


def reference_sizes(preset: str) -> dict[str, Any]:
    """The sizes a preset should have, read from transformers' config of its reference."""
    c = REFERENCES[preset][0]()
    if preset == "gpt2":
        return {"n_embd": c.n_embd, "n_head": c.n_head, "n_kv_head": c.n_head,
                "hidden": c.n_inner or 4 * c.n_embd, "n_layer": c.n_layer, "seq": c.n_positions}  # fmt: skip
    return {
        "n_embd": c.hidden_size,
        "n_head": c.num_attention_heads,
        "n_kv_head": getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
        "hidden": c.intermediate_size,
        "n_layer": c.num_hidden_layers,
        "seq": c.max_position_embeddings,
    }


@pytest.mark.parametrize("preset", list(REFERENCES))
def test_a_preset_has_its_references_sizes(preset: str) -> None:
    config = BlockConfig.from_preset(preset)
    assert {k: getattr(config, k) for k in reference_sizes(preset)} == reference_sizes(preset)
    assert config.batch == 8


@pytest.mark.parametrize(
    ("preset", "rotary"), [("llama", LlamaRotaryEmbedding), ("neox", GPTNeoXRotaryEmbedding)]
)
def test_a_rotary_preset_turns_at_its_references_base(preset: str, rotary: type[nn.Module]) -> None:
    """cos and sin as the reference computes them (rope_theta 500000 for Llama 3, 10000 for
    Pythia), as wide as the part of each head they turn (all of Llama's, a quarter of Pythia's):
    theirs repeat the frequencies twice over that part, ours hold them once."""
    config = BlockConfig.from_preset(preset, seq=11, batch=1, n_layer=1)
    _, (cos, sin) = example_inputs(config, "cpu")
    reference = REFERENCES[preset][0]()
    x = torch.zeros(1, 11, config.head_dim)
    their_cos, their_sin = rotary(reference)(x, torch.arange(11)[None])
    half = config.rotary_dims // 2
    assert their_cos.shape[-1] == 2 * cos.shape[-1] == config.rotary_dims
    assert torch.allclose(cos[0, :, 0], their_cos[0, :, :half], atol=1e-6)
    assert torch.allclose(sin[0, :, 0], their_sin[0, :, :half], atol=1e-6)
    assert config.rope_theta == reference.rope_parameters["rope_theta"]
    other = example_inputs(
        BlockConfig.from_preset(preset, seq=11, batch=1, n_layer=1, rope_theta=10.0), "cpu"
    )
    assert not torch.allclose(other[1][0], cos)  # --rope-theta overrides the preset's


@pytest.mark.parametrize("preset", list(REFERENCES))
def test_a_preset_block_has_its_references_parameters(preset: str) -> None:
    make_config, layer, block, total, add_up = REFERENCES[preset]
    traced = build_table(StepTree(trace_config(BlockConfig.from_preset(preset, n_layer=1), "probe")))
    with torch.device("meta"):
        theirs = layer(make_config(), layer_idx=0) if preset != "bert" else layer(make_config())
    assert traced.totals.params == sum(p.numel() for p in theirs.parameters()) == block
    assert add_up(traced.totals.params, make_config()) == total


def test_the_default_stays_nanochat_and_the_cli_takes_the_preset_s_layers() -> None:
    assert BlockConfig.from_preset("nanochat") == BlockConfig()
    gpt2 = json.loads(invoke(["table", "--preset", "gpt2", "--format", "json"]).stdout)
    assert gpt2["totals"]["params"] == 12 * 7_087_872
    assert {k: gpt2["config"][k] for k in ("n_embd", "n_head", "n_layer", "seq")} == {
        "n_embd": 768, "n_head": 12, "n_layer": 12, "seq": 1024
    }  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"n_embd": 1024}, {"n_embd": 1024, "n_head": 32, "n_kv_head": 8, "hidden": 4096, "seq": 8192}),
        ({"n_head": 16}, {"n_embd": 4096, "n_head": 16, "n_kv_head": 16, "hidden": 14336}),
        ({"n_head": 16, "n_kv_head": 4}, {"n_head": 16, "n_kv_head": 4}),
        ({"n_kv_head": 2}, {"n_head": 32, "n_kv_head": 2}),
        ({"mlp_ratio": 3}, {"hidden": 3 * 4096}),
        ({"mlp_hidden": 100}, {"hidden": 100, "n_embd": 4096}),
        ({"seq": 16, "batch": 1}, {"seq": 16, "batch": 1, "n_layer": 32}),
        ({"n_layer": 2}, {"n_layer": 2, "n_embd": 4096, "hidden": 14336}),
    ],
)
def test_a_size_given_overrides_the_preset_s(given: dict[str, int], expected: dict[str, int]) -> None:
    config = model_request({"preset": "llama", **given}).config
    assert {k: getattr(config, k) for k in expected} == expected


def test_a_size_flag_overrides_the_preset_s_on_the_command_line() -> None:
    args = ["diagram", "--preset", "bert", "--n-layer", "1", "--seq", "7", "--format", "json"]
    config = json.loads(invoke(args).stdout)["config"]
    assert (config["n_layer"], config["seq"], config["n_embd"], config["n_head"]) == (1, 7, 768, 12)


def test_help_says_each_preset_s_sizes() -> None:
    text = " ".join(invoke(["diagram", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "Default: the preset's, nanochat 1, gpt2 12, llama 32, neox 24, bert 12." in text
    assert "nanochat 768, gpt2 768, llama 4096, neox 2048, bert 768" in text
    assert "the preset's (llama 8)" in text and "the preset's (llama 14336)" in text
