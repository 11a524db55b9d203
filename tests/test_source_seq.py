"""`--source-seq S`: an encoder-decoder's encoder on S source tokens and its decoder on --seq T at
full size (without it, S = T there; only the probes tell them apart). Checked against plain
forward hooks on transformers' own T5Model fed input_ids (B, S) and decoder_input_ids (B, T), on
the meta device named from the probes and on the CPU; refused in one line where it does not apply.
A tiny one-layer T5: about 3 s."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from blocktrace.models.block.config import BlockConfig
from blocktrace.models.request import ModelRequest
from blocktrace.pipeline import cached_trace
from tests.harness import invoke, one_error
from tests.hooks import hooked_calls, symbols_of, traced_calls

T5 = {"d_model": 32, "d_kv": 8, "d_ff": 48, "num_layers": 1, "num_heads": 4, "vocab_size": 97}
B, S, T = 2, 7, 4


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("t5")
    transformers.T5Config(**T5).save_pretrained(path)
    return path


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_the_encoder_runs_at_s_and_the_decoder_at_t(t5: Path, device: str) -> None:
    request = ModelRequest(BlockConfig(), "hf", str(t5), {"batch": B, "seq": T, "source_seq": str(S)})
    trace = cached_trace(request, device, use_cache=False)
    model = transformers.T5Model(transformers.T5Config.from_pretrained(t5)).eval()
    ids, decoder_ids = torch.zeros(B, S, dtype=torch.long), torch.zeros(B, T, dtype=torch.long)
    assert traced_calls(trace) == hooked_calls(model, (ids,), {"decoder_input_ids": decoder_ids})
    assert trace.symbols["S"] == S and trace.symbols["T"] == T
    assert symbols_of(trace, "encoder") == ("B", "S", "C") and symbols_of(trace, "decoder") == ("B", "T", "C")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--source-seq", "0"], "--source-seq must be a positive integer, got '0'"),
        (["--source-seq", "six"], "--source-seq must be a positive integer, got 'six'"),
    ],
)
def test_a_bad_source_length_is_one_line(t5: Path, extra: list[str], words: str) -> None:
    one_error(invoke(["diagram", "--hf", str(t5), *extra]), 2, words)


def test_it_is_refused_where_there_is_no_source(tmp_path: Path) -> None:
    transformers.GPT2Config(n_embd=32, n_head=4, n_layer=1, vocab_size=97).save_pretrained(tmp_path)
    one_error(invoke(["diagram", "--hf", str(tmp_path), "--source-seq", "5"]), 2, "no encoder-decoder")
    one_error(invoke(["diagram", "--source-seq", "5"]), 2, "--source-seq is for --hf")
