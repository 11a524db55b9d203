"""transformers' own layers (LlamaDecoderLayer, GPT2Block, GPTNeoXLayer, BertLayer) traced through
`--module` with the factories below, which this file holds; every module call against plain forward
hooks on the same layer run on the CPU, and the head dim named from the factory's sizes."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch
from torch import nn
from transformers import BertConfig, GPT2Config, GPTNeoXConfig, LlamaConfig
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXLayer, GPTNeoXRotaryEmbedding
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from blocktrace.models.user_module import module_spec
from blocktrace.pipeline import trace_spec
from tests.hooks import hooked_calls, symbols_of, traced_calls

Made = tuple[nn.Module, tuple, dict]


def llama_layer(B: int = 2, T: int = 5, D2: int = 4, F: int = 80) -> Made:
    # sizes that hold whatever values the probes pick (each parameter a free size): an even head dim
    Hkv, H, D = 2, 6, 2 * D2
    config = LlamaConfig(
        hidden_size=H * D, num_attention_heads=H, num_key_value_heads=Hkv, head_dim=D, intermediate_size=F
    )
    x = torch.randn(B, T, H * D)
    cos_sin = LlamaRotaryEmbedding(config)(x, torch.arange(T)[None])
    return LlamaDecoderLayer(config, layer_idx=0), (x,), {"position_embeddings": cos_sin}


def gpt2_block(B: int = 2, T: int = 5, D: int = 8, F: int = 80) -> Made:
    H = 6
    config = GPT2Config(n_embd=H * D, n_head=H, n_inner=F)
    return GPT2Block(config, layer_idx=0), (torch.randn(B, T, H * D),), {}


def neox_layer(B: int = 2, T: int = 5, D8: int = 1, F: int = 80) -> Made:
    # a quarter of the head dim is rotated, in pairs: the head dim is a multiple of 8
    H = 6
    C = H * 8 * D8
    config = GPTNeoXConfig(
        hidden_size=C, num_attention_heads=H, intermediate_size=F, use_parallel_residual=True, rotary_pct=0.25
    )
    x = torch.randn(B, T, C)
    cos_sin = GPTNeoXRotaryEmbedding(config)(x, torch.arange(T)[None])
    return GPTNeoXLayer(config, layer_idx=0), (x,), {"position_embeddings": cos_sin}


def bert_layer(B: int = 2, T: int = 5, D: int = 8, F: int = 80) -> Made:
    H = 6
    config = BertConfig(hidden_size=H * D, num_attention_heads=H, intermediate_size=F)
    return BertLayer(config), (torch.randn(B, T, H * D),), {}


FACTORIES = {
    "llama_layer": llama_layer,
    "gpt2_block": gpt2_block,
    "neox_layer": neox_layer,
    "bert_layer": bert_layer,
}
# an output whose width the factory's sizes name
NAMED = {
    "llama_layer": ("self_attn.k_proj", ("B", "T", "4D2")),
    "gpt2_block": ("attn.c_attn", ("B", "T", "18D")),
    "neox_layer": ("attention.query_key_value", ("B", "T", "144D8")),
    "bert_layer": ("intermediate.dense", ("B", "T", "F")),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_layer_has_the_shapes_forward_hooks_see(name: str) -> None:
    layer, args, kwargs = FACTORIES[name]()
    expected = hooked_calls(layer, args, kwargs)
    spec = module_spec(f"{__file__}:{name}")
    assert spec.divides == {}  # every size is free: no probe can break the layer
    for device in ("probe", "cpu"):
        traced = trace_spec(spec, device)
        assert traced_calls(traced) == expected, device
        path, symbols = NAMED[name]
        assert symbols_of(traced, path) == symbols, device
    assert len(expected) >= 8
