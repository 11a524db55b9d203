"""Structures the layout must draw, defined here from the Block's own parts."""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from blocktrace.model import MLP, Block, CausalSelfAttention, example_inputs, norm
from blocktrace.models.block.config import BlockConfig
from blocktrace.pipeline import trace_config
from blocktrace.sizes.fit import structure
from blocktrace.tracing.trace import Trace


@cache
def traced(config: BlockConfig, frozen: tuple[str, ...] = ()) -> Trace:
    """The default (probe) trace of `config`, once per test session: a Trace is immutable."""
    return trace_config(config, "probe", frozen)


SMALL = BlockConfig(n_embd=32, n_head=4, n_kv_head=2, seq=6, batch=2)


class SingleResidual(nn.Module):
    """x = x + mlp(attn(norm(x))): one residual around both sub-layers."""

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return x + self.mlp(self.attn(norm(x), cos_sin))


class TwoBlocks(nn.Module):
    def __init__(self, config: BlockConfig):
        super().__init__()
        self.h = nn.ModuleList([Block(config), Block(config)])

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        for block in self.h:
            x = block(x, cos_sin)
        return x


def structures(config: BlockConfig = SMALL) -> dict[str, tuple[nn.Module, tuple, int]]:
    """name -> (module, args, residual adds it has)."""
    x, cos_sin = example_inputs(config, "cpu")
    return {
        "block": (Block(config), (x, cos_sin), 2),
        "mlp": (MLP(config), (x,), 0),
        "single_residual": (SingleResidual(config), (x, cos_sin), 1),
        "two_blocks": (TwoBlocks(config), (x, cos_sin), 4),
    }


def same(a: Trace, b: Trace) -> None:
    """Two traces of the same code agree: structure, every shape and name, parameters, legend."""
    assert structure(a) == structure(b)
    assert [m.shape for m in a.tensors()] == [m.shape for m in b.tensors()]
    assert [m.symbols for m in a.tensors()] == [m.symbols for m in b.tensors()]
    assert [(c.params, c.trainable, c.weights) for c in a.calls] == [
        (c.params, c.trainable, c.weights) for c in b.calls
    ]
    assert a.symbols == b.symbols
