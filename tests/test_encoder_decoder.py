"""Encoder-decoders drawn whole: the encoder's stream (its layers, its residuals) as a section of its
own before the decoder's, its output named by the source length S and read by each decoder layer's
cross-attention; the header counts both. Expectations read from transformers' modeling_bart.py and
modeling_t5.py. About 15 s: three --hf runs of tiny configs."""

from __future__ import annotations

from pathlib import Path

import transformers

from blocktrace.models.hf import HFSpec, load_config
from blocktrace.models.hf_inputs import MainInput
from blocktrace.sizes.fit import fit_probes, probe_trace
from blocktrace.sizes.stack import repeat
from tests.harness import invoke

BART = {"d_model": 32, "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 48,
        "decoder_ffn_dim": 48, "vocab_size": 97, "max_position_embeddings": 64, "pad_token_id": 1,
        "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}  # fmt: skip


def _bart(root: Path, layers: int) -> Path:
    path = root / f"bart{layers}"
    transformers.BartConfig(**BART, encoder_layers=layers, decoder_layers=layers).save_pretrained(path)
    return path


def _lines(args: list[str], note: str | None = None) -> list[str]:
    result = invoke(["diagram", *args, "--batch", "2", "--seq", "6", "--formulas"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == ([f"blocktrace: note: {note}"] if note else [])
    return [line.strip(" │") for line in result.stdout.splitlines()]


def test_a_one_layer_bart_draws_its_encoder_before_its_decoder_and_counts_both(tmp_path: Path) -> None:
    # on meta, with eager attention: sdpa's mask asks .item() (masking_utils._ignore_causal_mask_sdpa);
    # test_corpus_configs checks its shapes against plain hooks on a CPU run of the default
    eager = (
        'traced with attn_implementation="eager", which transformers offers for this model: its default '
        "attention cannot run on the meta device"
    )
    lines = _lines(["--hf", str(_bart(tmp_path, 1))], eager)
    # BartEncoderLayer: 2 sums (self_attn, fc); BartDecoderLayer: 3 (self_attn, encoder_attn, fc)
    assert "(float32, the config names no dtype; eager attention)" in lines[0]
    assert "encoder: 2 residual adds, decoder: 3 (shapes from the meta device)" in lines[0]
    assert lines[2] == "input  (B, S)"  # input_ids, the source
    encoder = lines.index("[encoder.layers.0: BartEncoderLayer]")
    end = lines.index("encoder output (B, S, C): output 2, read below as encoder")
    assert lines[end + 2] == "decoder_input_ids  (B, T)"  # the target, BartModel.forward's name
    assert encoder < end < lines.index("[decoder.layers.0: BartDecoderLayer]")
    assert sum("(+)" in line for line in lines[:end]) == 2 and sum("(+)" in line for line in lines[end:]) == 3
    # the encoder's output, (B, S, C), comes into the decoder's cross-attention beside its (B, T, C)
    assert sum("◄─ encoder (B, S, C)" in line for line in lines) == 1
    assert "S = 6   source length: the encoder's tokens (--seq)" in lines
    formulas = lines[lines.index("encoder (BartEncoder):") :]
    # BartEncoder.forward: inputs_embeds read twice, by embed_positions (for its shape) and the add
    assert formulas[1:5] == [
        "h = BartScaledWordEmbedding(x)",
        "x_1 = dropout(LayerNorm(add(h, embed_positions)))",
        "x_2 = LayerNorm(x_1 + dropout(BartAttention(x_1)))",
        "x_out = LayerNorm(x_2 + dropout(Linear(dropout(GELUActivation(Linear(x_2))))))",
    ]
    assert (
        formulas[5] == "decoder:"
        and "x_3 = LayerNorm(x_2 + dropout(BartAttention(x_2, encoder)))" in formulas
    )
    assert not any(line.startswith("not drawn:") for line in lines)


def test_two_layers_each_are_named_and_collapsed_in_both_streams(tmp_path: Path) -> None:
    lines = _lines(["--hf", str(_bart(tmp_path, 2)), "--device", "cpu"])
    assert "encoder: 4 residual adds, decoder: 6" in lines[0]
    assert "[encoder.layers.0 … encoder.layers.1: BartEncoderLayer × 2]" in lines
    assert "[decoder.layers.0 … decoder.layers.1: BartDecoderLayer × 2]" in lines
    assert "encoder output (B, S, C): output 2, read below as encoder" in lines
    assert lines[-1] != "" and "output (B, T, C)" in lines


def test_a_two_layer_t5_whose_first_block_differs_is_named(tmp_path: Path) -> None:
    """T5Stack: block 0 has the relative attention bias, the others read what it computed
    (modeling_t5.py: has_relative_attention_bias=bool(i == 0)), so its blocks are no twins: the
    probes run both layers. T5LayerSelfAttention, (T5LayerCrossAttention,) T5LayerFF: h + f(h)."""
    path = tmp_path / "t5"
    transformers.T5Config(
        d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, vocab_size=97
    ).save_pretrained(path)
    lines = _lines(["--hf", str(path)])
    assert "encoder: 4 residual adds, decoder: 6 (shapes from the meta device)" in lines[0]
    assert lines[2] == "input  (B, S)" and "output (B, T, C)" in lines
    assert "decoder_input_ids  (B, T)" in lines  # T5Model.forward(input_ids, ..., decoder_input_ids)
    # T5Stack.forward (modeling_t5.py:729-743): the first block returns self_attention_position_bias
    # (and, in the decoder, cross_attention_position_bias), handed to every later block: a side
    # output of block 0's attention, a side input of block 1's
    made = "not drawn: {} leaves {}.block.0 beside its stream, made by {}.block.0.layer.{}.{} (T5Attention); "
    read = "drawn where it is read, as block.0"
    assert [line for line in lines if line.startswith("not drawn:")] == [
        made.format("(1, H, S, S)", "encoder", "encoder", 0, "SelfAttention") + read,
        made.format("(1, H, T, T)", "decoder", "decoder", 0, "SelfAttention") + read,
        made.format("(1, H, T, S)", "decoder", "decoder", 1, "EncDecAttention") + read,
    ]
    arrows = [line.split("◄─ ")[1].split("  ")[0] for line in lines if "◄─ block.0" in line]
    assert arrows == ["block.0 (1, H, S, S)", "block.0 (1, H, T, T)", "block.0 (1, H, T, S)"]
    assert "x_4 = x_3 + Dropout(T5Attention(T5LayerNorm(x_3), block.0))" in lines  # the encoder's block 1


def test_the_source_length_is_seq_at_full_size_and_the_encoder_s_ids_are_s_long() -> None:
    config = transformers.BartConfig(**BART)
    assert MainInput("input_ids", True).values(config, 6) == {"S": 6}
    assert MainInput("input_ids", False).values(config, 6) == {}
    (ids,), kwargs = MainInput("input_ids", True).tensors({"B": 2, "S": 5, "T": 3}, "cpu", None)
    assert ids.shape == (2, 5) and kwargs["decoder_input_ids"].shape == (2, 3)


def test_a_stack_of_two_runs_of_layers_is_fitted_from_one_layer_of_each(tmp_path: Path) -> None:
    """The probes build one encoder and one decoder layer; the 2+2 model's fit maps each of its
    layers onto its run's probed one, the decoder's run first collapsed, then the encoder's."""
    spec = HFSpec.from_config("bart", load_config(str(_bart(tmp_path, 2))), 2, 6, None)
    unit = fit_probes(spec)
    assert unit is not None
    model, _ = probe_trace(spec, spec.sizes, spec.build(spec.sizes, "cpu", spec.layers))
    fitted = repeat(unit, model, True, spec.sizes, spec.layers)
    assert fitted is not None
    for layer, length_name in (("encoder.layers", "S"), ("decoder.layers", "T")):  # layer 1 as layer 0
        for name in ("fc1", "self_attn.q_proj"):
            mine = next(c for c in model.calls if c.path == f"{layer}.1.{name}").outputs[0].id
            twin = next(c for c in unit.probe.calls if c.path == f"{layer}.0.{name}").outputs[0].id
            assert fitted.dims[mine] == unit.dims[twin]
            length = fitted.dims[mine][1]
            assert length is not None and length.powers == ((length_name, 1),)
