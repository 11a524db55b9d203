"""How a factory's sizes are named where the code divides them: each checked against a real CPU run
of the factory and plain forward hooks, never against numbers blocktrace produced."""

from __future__ import annotations

import json
from pathlib import Path

from blocktrace.tracing.trace import Trace
from tests.harness import invoke
from tests.hooks import hooked_calls, symbols_of, traced_calls
from tests.test_user_module import _imported, _write

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


# grouped-query attention as people write it: H // Hkv repeats, C // H the head dim
GQA = """
import torch
import torch.nn.functional as F
from torch import nn

class Attention(nn.Module):
    def __init__(self, C, H, Hkv):
        super().__init__()
        self.H, self.Hkv, self.D = H, Hkv, C // H
        self.q = nn.Linear(C, C, bias=False)
        self.kv = nn.Linear(C, 2 * Hkv * self.D, bias=False)
        self.o = nn.Linear(C, C, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.H, self.D).transpose(1, 2)
        k, v = self.kv(x).view(B, T, 2 * self.Hkv, self.D).transpose(1, 2).chunk(2, dim=1)
        k = k.repeat_interleave(self.H // self.Hkv, dim=1)
        v = v.repeat_interleave(self.H // self.Hkv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(B, T, C))

def layer(B=2, T=8, C=48, H=6, Hkv=2):
    return Attention(C, H, Hkv), (torch.randn(B, T, C),)
"""


def _ops(trace: Trace, name: str) -> list[tuple[str, ...] | None]:
    return [op.outputs[0].symbols for op in trace.ops if op.name == name]


def test_the_head_dim_is_named_from_what_the_code_divides_by(tmp_path: Path) -> None:
    # T = 384 is a multiple of H and a divisor of C: the head dim is C/H all the same, not T/H*C/T
    example = Path(__file__).parent.parent / "docs" / "examples" / "nanogpt_block.py"
    traced, stderr = _json_trace(["--module", f"{example}:block", "--dim", "T=384"])
    assert stderr == ""
    assert _ops(traced, "view")[:3] == [("B", "T", "H", "C/H")] * 3
    assert traced.symbols == {"B": 8, "T": 384, "C": 768, "H": 12, "C/H": 64}
    assert traced.meanings["C/H"] == "C / H"


def test_grouped_heads_are_named_where_the_group_is_one(tmp_path: Path) -> None:
    # H = Hkv: the code still divides H by Hkv, so the probes keep H a multiple of Hkv
    path = _write(tmp_path, "gqa", GQA)
    for dims, hkv in ((["--dim", "Hkv=2"], 2), (["--dim", "Hkv=6"], 6)):
        traced, stderr = _json_trace(["--module", f"{path}:layer", *dims, "--device", "cpu"])
        assert stderr == ""
        module, args = _imported(path).layer(Hkv=hkv)
        assert traced_calls(traced) == hooked_calls(module, args)
        assert _ops(traced, "chunk") == [("B", "Hkv", "T", "C/H")]
        assert _ops(traced, "repeat_interleave") == [("B", "H", "T", "C/H")] * 2
        assert symbols_of(traced, "kv") == ("B", "T", "2*C/H*Hkv")
        assert traced.symbols["Hkv"] == hkv


# T = G^2 + 1 tokens: a square and one, no product of the sizes
SQUARE = """
import torch
from torch import nn

class Tokens(nn.Module):
    def __init__(self, G, C):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, C))
        self.proj = nn.Linear(C, C)
        self.G = G

    def forward(self, x):
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x.flatten(1, 2)], dim=1)
        return self.proj(x)

def tokens(B=2, G=4, C=12):
    return Tokens(G, C), (torch.randn(B, G, G, C),)
"""


def test_a_size_left_unnamed_is_said_in_one_note(tmp_path: Path) -> None:
    path = _write(tmp_path, "square", SQUARE)
    traced, stderr = _json_trace(["--module", f"{path}:tokens"])
    notes = stderr.splitlines()
    assert len(notes) == 1 and notes[0].startswith("blocktrace: note: ")
    assert "(root)'s output (B, ?, C)" in notes[0] and "shown as numbers" in notes[0]
    module, args = _imported(path).tokens()
    assert traced_calls(traced) == hooked_calls(module, args)
    assert symbols_of(traced, "proj") is None
