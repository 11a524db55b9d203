"""How a factory's sizes are named where the code divides them: each checked against a real CPU run
of the factory and plain forward hooks, never against numbers blocktrace produced."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from blocktrace.tracing.trace import Trace
from tests.harness import invoke
from tests.hooks import hooked_calls, symbols_of, traced_calls

# C // H is computed, never checked: with C and H at independent probe primes it floors to the
# same constant in both probes, and `.item()` keeps the meta device from running it at full size
HEAD_PROJ = """
import torch
from torch import nn

class HeadProj(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.proj = nn.Linear(C, C // H)

    def forward(self, x):
        scale = float(x.abs().amax().item()) or 1.0
        return self.proj(x / scale)

def layer(B=2, T=5, C=48, H=6):
    return HeadProj(C, H), (torch.randn(B, T, C),)
"""

# a module whose one op is kept, not returned
REMEMBERS = """
import torch
from torch import nn

class Remembers(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = None

    def forward(self, x):
        self.seen = x * 2
        return x

class Block(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.rem = Remembers()
        self.fc = nn.Linear(C, C)

    def forward(self, x):
        return x + self.fc(self.rem(x))

def block(B=2, T=5, C=12):
    return Block(C), (torch.randn(B, T, C),)
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    return path


def _imported(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"test_size_names_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _json_trace(args: list[str]) -> tuple[Trace, str]:
    result = invoke(["diagram", *args, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    return Trace.from_dict(json.loads(result.stdout)), result.stderr


def test_a_quotient_the_probes_floor_alike_is_not_scaled_as_a_constant(tmp_path: Path) -> None:
    path = _write(tmp_path, "head_proj", HEAD_PROJ)
    traced, stderr = _json_trace(["--module", f"{path}:layer"])
    assert "shapes derived from 2 small CPU runs" in stderr  # the probes' fit is all there is
    module, args = _imported(path).layer()
    assert traced_calls(traced) == hooked_calls(module, args)  # (2, 5, 8), not (2, 5, 0)
    proj = next(c for c in traced.calls if c.path == "proj")
    assert proj.params == sum(p.numel() for p in module.proj.parameters()) == 392
    assert symbols_of(traced, "proj") == ("B", "T", "C/H")


def test_a_real_cpu_run_names_the_quotient_too(tmp_path: Path) -> None:
    path = _write(tmp_path, "head_proj", HEAD_PROJ)
    traced, _ = _json_trace(["--module", f"{path}:layer", "--device", "cpu", "--dim", "C=96", "--dim", "H=4"])
    module, args = _imported(path).layer(C=96, H=4)
    assert traced_calls(traced) == hooked_calls(module, args)
    assert symbols_of(traced, "proj") == ("B", "T", "C/H")
    assert traced.symbols["C/H"] == 24


def test_a_call_whose_op_is_not_what_it_returns_has_no_composition(tmp_path: Path) -> None:
    path = _write(tmp_path, "remembers", REMEMBERS)
    result = invoke(["diagram", "--module", f"{path}:block", "--formulas"])
    assert result.exit_code == 0, result.stderr
    assert "x_out = x + Linear(x)" in result.stdout
    assert "Remembers(x)" not in result.stdout
