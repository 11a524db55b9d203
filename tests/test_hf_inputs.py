"""`--hf` feeds each architecture what its forward takes, built from its config (pixel values for
ViT, audio features for Whisper, decoder ids for an encoder-decoder), and reads configs as
transformers writes them (Falcon's read-only head_dim, BART's decoder, heads that do not group).
The configs are transformers' own classes at tiny sizes, saved into temporary folders; the expected
inputs are written from the models' code, and the shapes checked against plain forward hooks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from transformers import AutoModel

from blocktrace.models.block.config import BlockConfig
from blocktrace.models.hf import HFSpec, load_config
from blocktrace.models.request import ModelRequest
from blocktrace.models.spec import Dtype
from blocktrace.pipeline import cached_trace
from blocktrace.views.stats import totals
from tests.harness import invoke
from tests.hooks import hooked_calls, symbols_of, traced_calls

B, T = 2, 6
SMALL = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48, "num_hidden_layers": 1}
ENC_DEC = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 4,
           "decoder_attention_heads": 4, "encoder_ffn_dim": 48, "decoder_ffn_dim": 48, "vocab_size": 97,
           "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}  # fmt: skip
IDS = torch.zeros(B, T, dtype=torch.long)
# config, and what the model's forward takes: from ViTEmbeddings (B, num_channels, image_size,
# image_size), WhisperEncoder (B, num_mel_bins, 2 * max_source_positions), T5's and BART's decoders
MODELS: dict[str, tuple[Callable[[], Any], dict[str, torch.Tensor]]] = {
    "vit": (
        lambda: transformers.ViTConfig(**SMALL, image_size=32, patch_size=8, num_channels=3),
        {"pixel_values": torch.zeros(B, 3, 32, 32)},
    ),
    "whisper": (
        lambda: transformers.WhisperConfig(
            **ENC_DEC, num_mel_bins=16, max_source_positions=30, max_target_positions=40
        ),
        {"input_features": torch.zeros(B, 16, 60), "decoder_input_ids": IDS},
    ),
    "t5": (
        lambda: transformers.T5Config(d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4, vocab_size=97),
        {"input_ids": IDS, "decoder_input_ids": IDS},
    ),
    "falcon": (lambda: transformers.FalconConfig(**SMALL, vocab_size=97), {"input_ids": IDS}),
}


def _folder(name: str, root: Path) -> str:
    path = root / name
    if not path.exists():
        MODELS[name][0]().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-inputs")


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_is_fed_what_its_forward_takes_and_traced_as_hooks_see_it(name: str, root: Path) -> None:
    folder = _folder(name, root)
    spec = HFSpec.from_config(folder, load_config(folder), B, T, Dtype.float32)
    (main,), kwargs = spec.inputs(spec.sizes, "cpu")
    expected_inputs = MODELS[name][1]
    fed = {spec.main.name: main.shape} | {k: v.shape for k, v in kwargs.items()}
    assert fed == {k: v.shape for k, v in expected_inputs.items()}
    trace = cached_trace(ModelRequest(BlockConfig(), "hf", folder, {"batch": B, "seq": T}), use_cache=False)
    model = AutoModel.from_config(load_config(folder)).eval()
    assert traced_calls(trace) == hooked_calls(model, (), expected_inputs)
    assert totals(trace).params == sum(p.numel() for p in model.parameters())
    assert trace.device == "meta"  # traced at full size, the probes naming it


def test_the_inputs_dims_are_named_from_the_config(root: Path) -> None:
    request = ModelRequest(BlockConfig(), "hf", _folder("vit", root), {"batch": B})
    trace = cached_trace(request, use_cache=False)
    assert trace.inputs[0].symbols == ("B", "Ch", "I", "I")
    assert symbols_of(trace, "embeddings.patch_embeddings") == ("B", "N^2", "C")
    request = ModelRequest(BlockConfig(), "hf", _folder("whisper", root), {"batch": B, "seq": T})
    trace = cached_trace(request, use_cache=False)
    assert trace.inputs[0].symbols == ("B", "M", "2S")
    assert symbols_of(trace, "encoder.conv2") == ("B", "C", "S")


def test_a_read_only_config_property_is_left_to_the_config(root: Path) -> None:
    # FalconConfig.head_dim is a property without a setter: hidden_size // num_attention_heads
    result = invoke(["diagram", "--hf", _folder("falcon", root), "--batch", "2", "--seq", "6"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


def test_heads_that_do_not_group_stay_ungrouped_in_the_probes(tmp_path: Path) -> None:
    transformers.LlamaConfig(**SMALL, num_key_value_heads=4, vocab_size=97).save_pretrained(tmp_path)
    spec = HFSpec.from_config(str(tmp_path), load_config(str(tmp_path)), B, T, Dtype.float32)
    assert "G" not in spec.symbols.names
    for probe in spec.symbols.probes():
        config = spec.at(probe, 1)
        assert config.num_key_value_heads == config.num_attention_heads


def test_an_encoder_decoders_decoder_is_probed_at_the_encoders_sizes(tmp_path: Path) -> None:
    transformers.BartConfig(**ENC_DEC, max_position_embeddings=64).save_pretrained(tmp_path)
    spec = HFSpec.from_config(str(tmp_path), load_config(str(tmp_path)), B, T, Dtype.float32)
    for probe in spec.symbols.probes():
        config = spec.at(probe, 1)
        assert config.decoder_attention_heads == config.encoder_attention_heads == probe["H"]
        assert config.decoder_ffn_dim == config.encoder_ffn_dim == probe["F"]
        assert config.decoder_layers == config.encoder_layers == 1


ROTARY = {
    # phi-2: partial_rotary_factor in rope_parameters (transformers 5); a cos table of D/2
    "phi": (lambda: transformers.PhiConfig(**SMALL, vocab_size=97, partial_rotary_factor=0.5), "D/2"),
    # GPT-J: rotary_dim, a quarter of each head here as in GPT-J-6B (64 of 256): a cos table of D/8
    "gptj": (
        lambda: transformers.GPTJConfig(
            n_embd=64, n_head=4, n_layer=1, vocab_size=97, rotary_dim=4, n_positions=32
        ),
        "D/8",
    ),
}


@pytest.mark.parametrize("name", list(ROTARY))
def test_a_rotary_share_of_each_head_is_kept_in_the_probes(name: str, tmp_path: Path) -> None:
    ROTARY[name][0]().save_pretrained(tmp_path)
    trace = cached_trace(
        ModelRequest(BlockConfig(), "hf", str(tmp_path), {"batch": B, "seq": T}), use_cache=False
    )
    assert symbols_of(trace, "rotary_emb") == ("1", "T", ROTARY[name][1])


def test_a_trace_the_probes_cannot_name_says_so(tmp_path: Path) -> None:
    # a sequence no longer than the window's W - 1 = 3: the full-size cache keeps it whole, where the
    # probes' longer sequences are sliced, so no probe runs the same code
    transformers.MistralConfig(**{**SMALL, "num_hidden_layers": 2}, num_key_value_heads=2, vocab_size=97,
                               sliding_window=4).save_pretrained(tmp_path)  # fmt: skip
    result = invoke(["table", "--hf", str(tmp_path), "--batch", "2", "--seq", "3"])
    assert result.exit_code == 0, result.stderr
    numbers, window = result.stderr.splitlines()
    assert numbers.startswith("blocktrace: note: the dims are shown as numbers")
    assert window.startswith("blocktrace: note: the sliding window (sliding_window = 4)")
