"""A pre-norm Block that attends to a context it is given (cross-attention, as a decoder attends to
an encoder's output, or an image model to a text's) and returns, beside its output, an auxiliary
head's prediction from it."""

import torch
from torch import nn


class CrossBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int, n_aux: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.cross = nn.MultiheadAttention(n_embd, n_head, batch_first=True)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))
        self.aux_head = nn.Linear(n_embd, n_aux)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.cross(self.ln_1(x), context, context, need_weights=False)[0]
        x = x + self.mlp(self.ln_2(x))
        return x, self.aux_head(x)


def block(B=8, T=256, S=77, C=512, H=8):
    """The Block at width C with H heads, its input (B sequences of T tokens) and a context of S."""
    return CrossBlock(C, H, 3), (torch.randn(B, T, C), torch.randn(B, S, C))
