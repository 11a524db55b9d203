"""Sizes named as the model's code relates them, from an --hf config: a head_dim that is not
hidden_size / num_attention_heads (Gemma's 256 beside 3072 and 16 heads, Qwen3's), and a head_dim
the code does not read (GPT-2 divides embed_dim by num_heads). Tiny configs, one layer, on the
meta device named from the probes: about a second each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from blocktrace.models.block.config import BlockConfig
from blocktrace.models.request import ModelRequest
from blocktrace.pipeline import cached_trace
from blocktrace.tracing.trace import Trace
from tests.hooks import symbols_of

GEMMA = {  # q_proj = Linear(hidden_size, num_attention_heads * head_dim) (modeling_gemma.py)
    "model_type": "gemma",
    "architectures": ["GemmaForCausalLM"],
    "hidden_size": 48,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 16,
    "intermediate_size": 80,
    "num_hidden_layers": 1,
    "vocab_size": 97,
}
GPT2 = {  # self.head_dim = self.embed_dim // self.num_heads (modeling_gpt2.py): no head_dim read
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_embd": 48,
    "n_head": 4,
    "head_dim": 20,
    "n_layer": 1,
    "vocab_size": 97,
    "n_positions": 64,
}


def traced(config: dict[str, Any], tmp_path: Path) -> Trace:
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    request = ModelRequest(BlockConfig(), "hf", str(tmp_path), {"batch": 2, "seq": 5})
    return cached_trace(request, "meta", use_cache=False)


def test_a_head_dim_apart_from_the_hidden_size_is_its_own_size(tmp_path: Path) -> None:
    t = traced(GEMMA, tmp_path)
    assert t.symbols["D"] == 16 and t.symbols["C"] == 48 and t.symbols["H"] == 4
    assert symbols_of(t, "model.layers.0.self_attn.q_proj") == ("B", "T", "H*D")
    assert symbols_of(t, "model.layers.0.self_attn.o_proj") == ("B", "T", "C")


def test_a_head_dim_the_code_does_not_read_gives_way_to_the_code_s_division(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = traced(GPT2, tmp_path)
    assert t.symbols["D"] == 12 and t.symbols["H"] == 4  # 48 // 4, not the config's 20
    assert symbols_of(t, "transformer.h.0.attn.c_attn") == ("B", "T", "3C")
    assert "the head dim is named C/H (12)" in capsys.readouterr().err
