"""The cache for `--hf` and `--module`: a local config folder is keyed by its config.json's bytes, so
a repeated call skips torch and an edited config is traced afresh; a user's module is never cached."""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from blocktrace import cache
from blocktrace.models.block.config import BlockConfig
from blocktrace.models.request import ModelRequest
from blocktrace.models.spec import Dtype
from tests.harness import invoke
from tests.test_cache import run_cli

pytest.importorskip("transformers")

CONFIG = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_embd": 16,
    "n_head": 2,
    "n_layer": 1,
    "vocab_size": 31,
    "n_positions": 8,
}
FACTORY = """
import torch
from torch import nn

def tiny(B=2, C=8):
    return nn.Linear(C, C), (torch.randn(B, C),)
"""


def _entries() -> list[Path]:
    folder = cache.cache_dir()
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_local_hf_config_is_answered_without_torch_until_it_is_edited(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    args = ["table", "--hf", str(folder), "--seq", "4", "--batch", "2"]
    first = invoke(args)
    assert first.exit_code == 0, first.stderr
    assert len(_entries()) == 1
    again, imported = run_cli(args, os.environ["XDG_CACHE_HOME"])
    assert not imported and again == first.stdout.rstrip("\n")

    (folder / "config.json").write_text(json.dumps({**CONFIG, "n_embd": 24}), encoding="utf-8")
    edited = invoke(args)
    assert edited.exit_code == 0, edited.stderr
    assert len(_entries()) == 2 and edited.stdout != first.stdout
    assert "C=24" in edited.stdout and "C=16" in first.stdout


def test_a_users_module_is_never_cached(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(FACTORY, encoding="utf-8")
    for _ in range(2):
        result = invoke(["diagram", "--module", f"{tmp_path / 'tiny.py'}:tiny"])
        assert result.exit_code == 0, result.stderr
    assert _entries() == []


def _written(folder: Path, **edits: int) -> str:
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**CONFIG, **edits}), encoding="utf-8")
    return str(folder)


def _other_transformers(request: ModelRequest, _: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRequest:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.0")  # read as the key is made
    return request


Change = Callable[[ModelRequest, Path, pytest.MonkeyPatch], ModelRequest]
CHANGES: dict[str, Change] = {
    "folder": lambda request, tmp_path, _: replace(request, target=_written(tmp_path / "copy")),
    "config": lambda request, tmp_path, _: replace(request, target=_written(tmp_path / "tiny", n_embd=24)),
    "transformers": _other_transformers,
    "batch": lambda request, *_: replace(request, flags={**request.flags, "batch": 3}),
    "seq": lambda request, *_: replace(request, flags={**request.flags, "seq": 5}),
    # --dtype given, as the request of `--hf X --dtype bfloat16` carries it; not given: the config's
    "dtype": lambda request, *_: replace(request, flags={**request.flags, "dtype": Dtype.bfloat16}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_part_of_an_hf_request_is_in_its_key(
    change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = ModelRequest(BlockConfig(), "hf", _written(tmp_path / "tiny"), {"batch": 2, "seq": 4})
    key = request.cache_key()
    assert key is not None
    other = CHANGES[change](request, tmp_path, monkeypatch).cache_key()
    assert other is not None and cache.key(other, "probe", ()) != cache.key(key, "probe", ())


def test_a_config_replaced_while_torch_is_imported_is_not_traced_under_the_old_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blocktrace import pipeline

    folder = Path(_written(tmp_path / "tiny"))
    hashed = (folder / "config.json").read_bytes()
    load_torch = pipeline.load_torch

    def replaced_meanwhile() -> None:  # called after the key is taken, before the config is loaded
        load_torch()
        (folder / "config.json").write_text(json.dumps({**CONFIG, "n_embd": 24}), encoding="utf-8")

    monkeypatch.setattr(pipeline, "load_torch", replaced_meanwhile)
    request = ModelRequest(BlockConfig(), "hf", str(folder), {"batch": 2, "seq": 4})
    traced = pipeline.cached_trace(request)
    assert traced.config["config"]["n_embd"] == 16  # the bytes hashed, not the file's new ones

    (folder / "config.json").write_bytes(hashed)
    key = request.cache_key()
    assert key is not None
    served = cache.load(key, "probe", ())
    assert served is not None and served.config["config"]["n_embd"] == 16
