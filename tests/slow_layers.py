"""Three layers that each take a quarter of a second: a run long enough for the progress line to
follow them (tests/test_cli_conventions.py)."""

from __future__ import annotations

import time

import torch
from torch import nn


class Slow(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.25)
        return x * 2


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Slow() for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def slow_stack() -> tuple[nn.Module, tuple[torch.Tensor]]:
    return Stack(), (torch.zeros(2, 4),)
