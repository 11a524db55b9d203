"""`--module CLASS` with keyword inputs: `--input NAME=SHAPE`."""

from __future__ import annotations

from pathlib import Path

from tests.harness import invoke

MASKED = """
import torch
from torch import nn


class Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x, *, mask):
        return self.proj(x).masked_fill(mask[..., None], 0.0)
"""


def test_a_module_class_takes_keyword_inputs(tmp_path: Path) -> None:
    (tmp_path / "masked.py").write_text(MASKED, encoding="utf-8")
    target = f"{tmp_path / 'masked.py'}:Masked"
    result = invoke(["table", "--module", target, "--input", "2,5,8", "--input", "mask=2,5:bool"])
    assert result.exit_code == 0, result.stderr
    assert "(2, 5, 8) -> (2, 5, 8)" in result.stdout
    bad = invoke(["table", "--module", target, "--input", "2,5,8", "--input", "1mask=2,5:bool"])
    assert bad.exit_code == 2 and "NAME=SHAPE" in bad.stderr, bad.stderr
