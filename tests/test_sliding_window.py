"""A sliding-window config (Mistral's `sliding_window`) is named: its cache, made for every layer
before the layers run, is traced by probes of the whole stack, and a `.to(device)` the CPU hands back
where the meta device copies is one value for the names; the window itself is the size of no shape
(the mask is (B, 1, T, T), transformers' DynamicSlidingWindowLayer keeps the last W - 1 positions),
said in one note. About 4 s: one --hf run of a tiny config."""

from __future__ import annotations

from pathlib import Path

import transformers

from tests.harness import invoke

NOTE = (
    "blocktrace: note: the sliding window (sliding_window = 4) is the size of no shape, so no dim is named "
    "for it: the mask is (B, 1, T, T), the window in its values, and where T is longer the cache keeps the "
    "last W - 1 = 3 positions, shown as that number"
)


def test_a_sliding_window_mistral_is_named_and_says_why_the_window_is_not(tmp_path: Path) -> None:
    config = transformers.MistralConfig(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        num_hidden_layers=2, vocab_size=97, max_position_embeddings=64, sliding_window=4,
    )  # fmt: skip
    config.save_pretrained(tmp_path)
    result = invoke(["diagram", "--hf", str(tmp_path), "--batch", "2", "--seq", "6"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [NOTE]  # no "dims are shown as numbers"
    text = result.stdout
    assert "◄─ sdpa_mask (B, 1, T, T)" in text  # create_sliding_window_causal_mask's
    assert "update()            (), 2×(B, Hkv, T, D) -> 2×(B, Hkv, T, D)" in text
    assert "MistralDecoderLayer × 2" in text
