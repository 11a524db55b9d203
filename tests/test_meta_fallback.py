"""Code the meta device cannot run (`.item()`, `torch.nonzero`): a factory's shapes are derived from
the probes' real CPU runs, with one note; a class has no sizes to scale, so it runs once on the CPU
at the sizes given, with one note; `--device meta` asked for refuses in one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from blocktrace.tracing.trace import Trace
from tests.harness import invoke
from tests.hooks import hooked_calls, traced_calls

CODE = """
import torch
from torch import nn


class Gate(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.proj = nn.Linear(C, 2 * C)
        self.out = nn.Linear(C, C)

    def forward(self, x):
        n = int(x.abs().sum().item() > 0)
        a, b = self.proj(x).chunk(2, dim=-1)
        return self.out(a * b + n)


class Picks(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.proj = nn.Linear(C, C)

    def forward(self, x):
        rows = torch.nonzero(x[..., 0] != 0)
        return self.proj(x), rows


def gate(B=2, T=5, C=8):
    return Gate(C), (torch.randn(B, T, C),)


def picks(B=2, T=5, C=8):
    return Picks(C), (torch.randn(B, T, C),)
"""
NAMES = {"gate": "Gate", "picks": "Picks"}


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("meta_fallback") / "fallback.py"
    path.write_text(CODE, encoding="utf-8")
    return path


def _imported(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("test_meta_fallback_code", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("factory", list(NAMES))
def test_a_factory_the_meta_device_cannot_run_is_derived_with_one_note(factory: str, code: Path) -> None:
    result = invoke(["diagram", "--module", f"{code}:{factory}", "--dim", "T=7", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("blocktrace: note: the meta device cannot run"), lines
    traced = Trace.from_dict(json.loads(result.stdout))
    assert traced.symbols == {"B": 2, "T": 7, "C": 8}
    assert traced.inputs[0].symbols == ("B", "T", "C")
    module, args = getattr(_imported(code), factory)(T=7)
    assert traced_calls(traced) == hooked_calls(module, args)


@pytest.mark.parametrize("cls", list(NAMES.values()))
def test_a_class_the_meta_device_cannot_run_runs_on_the_cpu_with_one_note(cls: str, code: Path) -> None:
    args = ["diagram", "--module", f"{code}:{cls}", "--kwargs", '{"C": 8}', "--input", "3,7,8", "--format"]
    refused = invoke([*args, "json", "--device", "meta"])
    assert refused.exit_code == 1 and refused.stdout == ""
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("blocktrace: error: "), lines
    assert lines[0].endswith("without --device meta it runs on the CPU at the sizes given)"), lines
    ran = invoke([*args, "json"])
    assert ran.exit_code == 0, ran.stderr
    (note,) = ran.stderr.splitlines()
    assert note.startswith("blocktrace: note: the meta device cannot run this model (forward failed in")
    traced = Trace.from_dict(json.loads(ran.stdout))
    assert traced.device == "cpu"
    module = getattr(_imported(code), cls)(C=8)
    assert traced_calls(traced) == hooked_calls(module, (torch.randn(3, 7, 8),))
    assert (
        json.loads(invoke([*args, "json", "--device", "cpu"]).stdout)["calls"]
        == json.loads(ran.stdout)["calls"]
    )
