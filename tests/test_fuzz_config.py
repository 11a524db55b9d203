"""config.json as a property: any whole-number field of a real architecture's config (Llama, GPT-2,
BERT, T5) set to zero, a negative, a huge number, a string, null, a float, a list or an object, or
left out, and `blocktrace diagram --hf` on it either draws it or refuses in one line, exit 2, naming
the field. Never a traceback, a Python warning, transformers' logging, a failed run (exit 1), an -o
file after a refusal or a temporary file beside it.

In-process (tests/harness.py), at one layer and a few tokens: the normal suite's examples take a few
seconds; `.ci/run`'s long profile draws more (tests/fuzz.py).
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import profile
from tests.harness import invoke

pytest.importorskip("transformers")

# each with every whole-number field its transformers config class writes (`to_dict()`), at sizes
# that trace in a fraction of a second
CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 48,
        "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 80,
        "vocab_size": 97, "num_hidden_layers": 1, "max_position_embeddings": 64, "bos_token_id": 1,
        "eos_token_id": 2, "pretraining_tp": 1, "chunk_size_feed_forward": 0,
    },
    "gpt2": {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 48, "n_head": 6,
        "n_inner": 80, "n_layer": 1, "vocab_size": 97, "n_positions": 64, "bos_token_id": 96,
        "eos_token_id": 96, "chunk_size_feed_forward": 0,
    },
    "bert": {
        "model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 48,
        "num_attention_heads": 6, "intermediate_size": 80, "vocab_size": 97, "num_hidden_layers": 1,
        "max_position_embeddings": 64, "type_vocab_size": 2, "pad_token_id": 0,
        "chunk_size_feed_forward": 0,
    },
    "t5": {
        "model_type": "t5", "d_model": 32, "d_kv": 8, "d_ff": 48, "num_layers": 1,
        "num_decoder_layers": 1, "num_heads": 4, "vocab_size": 97, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "pad_token_id": 0, "eos_token_id": 1,
        "decoder_start_token_id": 0, "chunk_size_feed_forward": 0,
    },
}  # fmt: skip
FIELDS = [(name, key) for name, config in CONFIGS.items() for key, v in config.items() if type(v) is int]
MISSING = object()  # the field left out
VALUES: list[object] = [
    0, -1, -(2**31), 2**31, 2**40, 2**63, 10**30, "two", "8", None, 2.5, 8.0, [8], {"n": 8}, True, MISSING,
]  # fmt: skip
TOKENS = ["--seq", "4", "--batch", "1"]


def named(name: str, key: str, value: object) -> list[str]:
    """The words a refusal of `key` set to `value` may name it by: the field, its standard name in
    transformers (GPT-2's n_embd is hidden_size), its value; or the memory a real run lacks."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    aliases = CONFIG_MAPPING[CONFIGS[name]["model_type"]].attribute_map
    return [key, *(std for std, own in aliases.items() if own == key), f"({value})", "GiB available"]


@contextmanager
def no_warnings() -> Iterator[list[str]]:
    """What Python's warnings and any logger at WARNING or above said meanwhile."""
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(f"{record.name}: {record.getMessage()}")

    keep = Keep(logging.WARNING)
    loggers = [logging.getLogger(), logging.getLogger("transformers"), logging.getLogger("huggingface_hub")]
    for logger in loggers:
        logger.addHandler(keep)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield said
        finally:
            for logger in loggers:
                logger.removeHandler(keep)
            said += [f"{w.category.__name__}: {w.message}" for w in caught]


@example(case=("llama", "hidden_size", 0), device="probe")  # the ZeroDivisionError
@example(case=("llama", "head_dim", 0), device="cpu")
@example(case=("t5", "d_kv", 0), device="probe")
@example(case=("bert", "type_vocab_size", 2**40), device="cpu")  # the memory guard's build
@example(case=("bert", "chunk_size_feed_forward", None), device="meta")
@example(case=("bert", "pad_token_id", 2**31), device="probe")
@example(case=("t5", "num_decoder_layers", -1), device="meta")
@example(case=("gpt2", "n_layer", MISSING), device="meta")  # transformers' default: traced
@given(
    case=st.sampled_from(FIELDS).flatmap(lambda f: st.sampled_from(VALUES).map(lambda v: (*f, v))),
    device=st.sampled_from(["probe", "meta", "cpu"]),
)
@profile(normal=40, share=0.1)
def test_any_value_of_a_config_field_is_traced_or_refused_in_one_line(
    case: tuple[str, str, object], device: str
) -> None:
    name, key, value = case
    config = dict(CONFIGS[name])
    if value is MISSING:
        del config[key]
    else:
        config[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "model").mkdir()
        (folder / "model" / "config.json").write_text(json.dumps(config))
        out = folder / "out.txt"
        args = ["diagram", "--hf", str(folder / "model"), *TOKENS, "--device", device, "--no-cache"]
        with no_warnings() as said:
            result = invoke([*args, "-o", str(out)])
        context = (
            f"{name} {key}={'missing' if value is MISSING else json.dumps(value)} {device}: {result.stderr}"
        )
        lines = result.stderr.splitlines()
        assert "Traceback" not in result.stderr, context
        assert not said, (context, said)
        assert result.exit_code in (0, 2), context
        if result.exit_code == 0:
            assert out.stat().st_size > 0, context
            assert all(line.startswith("blocktrace: note: ") for line in lines), context
        else:
            assert len(lines) == 1 and lines[0].startswith("blocktrace: error: "), context
            assert not out.exists(), context
            assert value is MISSING or any(n in lines[0] for n in named(name, key, value)), context
        assert sorted(p.name for p in folder.rglob("*")) == sorted(
            ["model", "config.json", *(["out.txt"] if result.exit_code == 0 else [])]
        ), context
