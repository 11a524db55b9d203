"""A corpus of transformers architectures nobody here wrote, each from a tiny config.json written
here with transformers' own config class (nothing is downloaded): `blocktrace diagram --hf DIR`
draws it, or refuses in one line that names the reason and the flag that works; then every module
call's output shapes equal plain forward hooks on the model transformers builds from that folder, and
the parameter total equals sum(p.numel())."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from blocktrace.models.block.config import BlockConfig
from blocktrace.models.request import ModelRequest
from blocktrace.pipeline import cached_trace
from blocktrace.views.stats import totals
from tests.harness import invoke
from tests.hooks import hooked_calls, traced_calls

B, T = 2, 6
IDS = torch.zeros(B, T, dtype=torch.long)
DEC = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48, "num_hidden_layers": 2,
       "vocab_size": 97, "max_position_embeddings": 64}  # fmt: skip
ENC_DEC = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 4,
           "decoder_attention_heads": 4, "encoder_ffn_dim": 48, "decoder_ffn_dim": 48, "vocab_size": 97,
           "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}  # fmt: skip
GQA = {**DEC, "num_key_value_heads": 2}
MOE = {"num_local_experts": 4, "num_experts_per_tok": 2}

# name -> (the config, the causal LM class if any, the forward's inputs as the model's code reads them)
CORPUS: dict[str, tuple[Callable[[], Any], str | None, dict[str, torch.Tensor]]] = {
    "llama": (lambda: transformers.LlamaConfig(**GQA), "LlamaForCausalLM", {"input_ids": IDS}),
    "mistral": (
        lambda: transformers.MistralConfig(**GQA, sliding_window=4),
        "MistralForCausalLM",
        {"input_ids": IDS},
    ),
    "qwen3": (lambda: transformers.Qwen3Config(**GQA, head_dim=8), "Qwen3ForCausalLM", {"input_ids": IDS}),
    "qwen2": (lambda: transformers.Qwen2Config(**GQA), "Qwen2ForCausalLM", {"input_ids": IDS}),
    "gemma3": (  # a sliding window: the cache's update() keeps a slice, and returns the whole
        lambda: transformers.Gemma3TextConfig(**GQA, head_dim=8, sliding_window=4),
        "Gemma3ForCausalLM",
        {"input_ids": IDS},
    ),
    "gemma2": (  # eager attention adds a mask made from the input: 3 layers feed it through 2 of them
        lambda: transformers.Gemma2Config(**{**GQA, "num_hidden_layers": 3}, head_dim=8),
        "Gemma2ForCausalLM",
        {"input_ids": IDS},
    ),
    "phi": (
        lambda: transformers.PhiConfig(**DEC, partial_rotary_factor=0.5),
        "PhiForCausalLM",
        {"input_ids": IDS},
    ),
    "gptj": (
        lambda: transformers.GPTJConfig(
            n_embd=32, n_head=4, n_layer=2, vocab_size=97, rotary_dim=4, n_positions=64
        ),
        "GPTJForCausalLM",
        {"input_ids": IDS},
    ),
    "falcon": (lambda: transformers.FalconConfig(**DEC), "FalconForCausalLM", {"input_ids": IDS}),
    "olmo2": (lambda: transformers.Olmo2Config(**GQA), "Olmo2ForCausalLM", {"input_ids": IDS}),
    "mixtral": (lambda: transformers.MixtralConfig(**GQA, **MOE), "MixtralForCausalLM", {"input_ids": IDS}),
    "qwen2_moe": (
        lambda: transformers.Qwen2MoeConfig(
            **GQA,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=24,
            shared_expert_intermediate_size=40,
        ),
        "Qwen2MoeForCausalLM",
        {"input_ids": IDS},
    ),
    "deepseek_v3": (  # multi-head latent attention; layer 0 dense, layer 1 routed and shared experts
        lambda: transformers.DeepseekV3Config(
            **GQA,
            first_k_dense_replace=1,
            n_routed_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=24,
            n_shared_experts=1,
            n_group=2,
            topk_group=1,
            q_lora_rank=16,
            kv_lora_rank=8,
            qk_rope_head_dim=4,
            qk_nope_head_dim=4,
            v_head_dim=8,
        ),
        "DeepseekV3ForCausalLM",
        {"input_ids": IDS},
    ),
    "bert": (lambda: transformers.BertConfig(**DEC), None, {"input_ids": IDS}),
    "distilbert": (
        lambda: transformers.DistilBertConfig(dim=32, n_heads=4, hidden_dim=48, n_layers=2, vocab_size=97),
        None,
        {"input_ids": IDS},
    ),
    "modernbert": (
        lambda: transformers.ModernBertConfig(
            **{**DEC, "num_hidden_layers": 3},
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
        ),
        None,
        {"input_ids": IDS},
    ),
    "t5": (
        lambda: transformers.T5Config(d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4, vocab_size=97),
        None,
        {"input_ids": IDS, "decoder_input_ids": IDS},
    ),
    "bart": (
        lambda: transformers.BartConfig(**ENC_DEC, max_position_embeddings=64),
        None,
        {"input_ids": IDS, "decoder_input_ids": IDS},
    ),
    "vit": (
        lambda: transformers.ViTConfig(**{**DEC, "num_hidden_layers": 1}, image_size=32, patch_size=8),
        None,
        {"pixel_values": torch.zeros(B, 3, 32, 32)},
    ),
    "whisper": (
        lambda: transformers.WhisperConfig(
            **ENC_DEC, num_mel_bins=16, max_source_positions=30, max_target_positions=40
        ),
        None,
        {"input_features": torch.zeros(B, 16, 60), "decoder_input_ids": IDS},
    ),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


def _folder(name: str, root: Path) -> Path:
    path = root / name
    if not path.exists():
        config = CORPUS[name][0]()
        causal = CORPUS[name][1]
        config.architectures = [causal] if causal else None
        config.save_pretrained(path)
    return path


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_model_draws_or_refuses_in_one_line_and_its_shapes_are_the_hooks(name: str, root: Path) -> None:
    folder = _folder(name, root)
    result = invoke(["diagram", "--hf", str(folder), "--batch", str(B), "--seq", str(T)])
    assert "Traceback" not in result.stderr
    device = "probe"
    if result.exit_code != 0:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("blocktrace: error: "), result.stderr
        assert "--device cpu" in lines[0], lines[0]  # the flag that works
        device = "cpu"
    else:
        assert "output" in result.stdout
    # the drawing's own trace, from the cache it was kept in (each test has a cache of its own)
    trace = cached_trace(ModelRequest(BlockConfig(), "hf", str(folder), {"batch": B, "seq": T}), device)
    auto = AutoModelForCausalLM if CORPUS[name][1] else AutoModel
    model = auto.from_config(AutoConfig.from_pretrained(folder)).eval()
    attention = trace.config.get("attention")  # built with eager attention, the default's not on meta
    if attention is None:
        assert traced_calls(trace) == hooked_calls(model, (), CORPUS[name][2])
    else:  # every call's output that of a CPU run of the default; eager's attention returns its weights too
        built = auto.from_config(AutoConfig.from_pretrained(folder), attn_implementation=attention).eval()
        assert traced_calls(trace) == hooked_calls(built, (), CORPUS[name][2])
        assert _main(traced_calls(trace)) == _main(hooked_calls(model, (), CORPUS[name][2]))
    assert totals(trace).params == sum(p.numel() for p in model.parameters())


def _main(calls: list) -> list:
    """Each call's path, type and first output's shape."""
    return [(path, kind, shapes[:1]) for path, kind, shapes in calls]
