"""Residuals weighted by parameters: nanochat mixes its first stream value x0 back in before every
layer with two learned scalars a layer, and each layer scales its branch by a learned vector
(timm's layer scale)."""

import torch
from torch import nn


class LayerScale(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.gamma = nn.Parameter(1e-5 * torch.ones(n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Layer(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.norm = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))
        self.ls = LayerScale(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ls(self.mlp(self.norm(x)))


class Mixed(nn.Module):
    def __init__(self, n_embd: int, n_layer: int):
        super().__init__()
        self.layers = nn.ModuleList(Layer(n_embd) for _ in range(n_layer))
        self.resid_lambdas = nn.Parameter(torch.ones(n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(n_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x
        for i, layer in enumerate(self.layers):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            x = layer(x)
        return x


def model(B=8, T=256, C=512):
    """Two layers at width C, on B sequences of T vectors."""
    return Mixed(C, 2), (torch.randn(B, T, C),)
