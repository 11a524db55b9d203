"""`--module` with factories written here: what blocktrace does where its probes cannot run the code."""

from __future__ import annotations

from pathlib import Path

from tests.harness import invoke

GQA = """
import torch
from torch import nn

class KProj(nn.Module):
    def __init__(self, C, H, Hkv):
        super().__init__()
        if H % Hkv or C % H:
            raise ValueError("heads must divide")
        self.k = nn.Linear(C, Hkv * (C // H))

    def forward(self, x):
        return self.k(x)

def layer(B=2, T=5, C=48, H=6, Hkv=2):
    return KProj(C, H, Hkv), (torch.randn(B, T, C),)

def five_tokens(B=2, T=5, C=48, H=6, Hkv=2):
    if T != 5:
        raise ValueError("this layer takes 5 tokens")
    return layer(B, T, C, H, Hkv)
"""


def test_a_real_cpu_run_needs_no_probe_to_run_the_code(tmp_path: Path) -> None:
    # the probes, at other sizes, fail; the module itself runs at its own
    (tmp_path / "gqa.py").write_text(GQA, encoding="utf-8")
    result = invoke(["table", "--module", f"{tmp_path / 'gqa.py'}:five_tokens", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "(2, 5, 48) -> (2, 5, 16)" in result.stdout


def test_sizes_that_must_divide_each_other_are_named_even_where_two_are_equal(tmp_path: Path) -> None:
    # B = Hkv = 2: C divides by H and H by Hkv, not by B; the probes keep both, and name the rest
    (tmp_path / "gqa.py").write_text(GQA, encoding="utf-8")
    result = invoke(["table", "--module", f"{tmp_path / 'gqa.py'}:layer"])
    assert result.exit_code == 0, result.stderr
    assert "(B, T, C) -> (B, T, C/H*Hkv)" in result.stdout
