"""`--hf` builds the model at the dtype its config names (`torch_dtype`, `dtype` in transformers 5)
unless --dtype is given, and the header says which; the cache keeps the two apart."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("transformers")

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from blocktrace.models.hf import config_dtype
from blocktrace.models.spec import Dtype
from tests.harness import invoke, tiny_llama

LLAMA = tiny_llama()
SMALL = ["--seq", "5", "--batch", "2"]


def _folder(tmp_path: Path, **extra: object) -> str:
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, **extra}), encoding="utf-8")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"dtype": torch.bfloat16}, (Dtype.bfloat16, "the config's")),
        ({"torch_dtype": "float16"}, (Dtype.float16, "the config's")),  # transformers 4
        ({"dtype": None, "torch_dtype": "bfloat16"}, (Dtype.bfloat16, "the config's")),
        ({"dtype": None}, (Dtype.float32, "the config names no dtype")),
        ({}, (Dtype.float32, "the config names no dtype")),
        ({"dtype": torch.float64}, (Dtype.float32, "not the config's float64")),
    ],
)
def test_the_config_s_dtype_is_read_from_either_field(fields: dict, expected: tuple) -> None:
    assert config_dtype(SimpleNamespace(**fields)) == expected


def test_the_model_is_built_at_the_config_s_dtype_and_the_header_says_so(tmp_path: Path) -> None:
    folder = _folder(tmp_path, torch_dtype="bfloat16")
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):  # transformers' own reading of the config, for comparison
        reference = AutoModelForCausalLM.from_config(config, dtype=config.dtype)
    assert {p.dtype for p in reference.parameters()} == {torch.bfloat16}
    result = invoke(["diagram", "--hf", folder, *SMALL])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("LlamaForCausalLM (bfloat16, the config's): ")
    trace = json.loads(invoke(["diagram", "--hf", folder, *SMALL, "--format", "json"]).stdout)
    logits = trace["outputs"][0]
    assert logits["dtype"] == "bfloat16" and trace["config"]["dtype_source"] == "the config's"


def test_dtype_given_wins_and_is_not_taken_from_the_cache_of_the_config_s(tmp_path: Path) -> None:
    folder = _folder(tmp_path, torch_dtype="bfloat16")
    assert invoke(["diagram", "--hf", folder, *SMALL]).exit_code == 0  # cached at bfloat16
    given = invoke(["diagram", "--hf", folder, *SMALL, "--dtype", "float32"])
    assert given.stdout.startswith("LlamaForCausalLM (float32, --dtype): "), given.stderr
    again = invoke(["diagram", "--hf", folder, *SMALL])
    assert again.stdout.startswith("LlamaForCausalLM (bfloat16, the config's): ")


def test_a_config_without_a_dtype_is_float32_and_says_so(tmp_path: Path) -> None:
    result = invoke(["diagram", "--hf", _folder(tmp_path), *SMALL])
    assert result.stdout.startswith("LlamaForCausalLM (float32, the config names no dtype): "), result.stderr
