"""A forward that fails on the CPU as it does on the meta device is the model's error: it does not
blame the meta device. One that fails on meta alone still says where it failed."""

from __future__ import annotations

from pathlib import Path

from tests.harness import invoke, one_error

MODELS = """
import torch
from torch import nn


class Refuses(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.proj = nn.Linear(C, C)

    def forward(self, x):
        raise ValueError("this layer wants a mask")


class MetaOnly(Refuses):
    def forward(self, x):
        if x.device.type == "meta":
            raise ValueError("kernel wants bfloat16")
        return self.proj(x)


def refuses(B=2, C=8):
    return Refuses(C), (torch.randn(B, C),)


def meta_only(B=2, C=8):
    return MetaOnly(C), (torch.randn(B, C),)
"""


def test_an_error_the_cpu_makes_too_does_not_blame_the_meta_device(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(MODELS, encoding="utf-8")
    result = invoke(["diagram", "--module", f"{tmp_path / 'models.py'}:refuses"])
    line = one_error(result, 1, "this layer wants a mask")
    assert "meta" not in line


def test_an_error_of_the_meta_device_alone_says_so(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(MODELS, encoding="utf-8")
    result = invoke(["diagram", "--module", f"{tmp_path / 'models.py'}:meta_only", "--device", "meta"])
    one_error(result, 1, "kernel wants bfloat16", "(on the meta device)")


def test_an_error_of_the_meta_device_alone_falls_back_to_the_probes(tmp_path: Path) -> None:
    # a kernel the meta device lacks (grouped_mm at float32) fails there alone: the probes, which ran
    # the code on the CPU, give the shapes, and one note says so
    (tmp_path / "models.py").write_text(MODELS, encoding="utf-8")
    result = invoke(["table", "--module", f"{tmp_path / 'models.py'}:meta_only"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("blocktrace: note: the meta device cannot run this model (")
    assert "kernel wants bfloat16" in result.stderr and result.stderr.count("\n") == 1
    assert "(B, C) -> (B, C)" in result.stdout
