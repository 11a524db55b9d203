"""
A nanochat-style transformer Block, written the way nanochat writes it, for blocktrace to trace.
Notable features:
- functional RMSNorm with no learnable params
- no bias in linear layers
- rotary embeddings and QK norm
- grouped-query attention (n_kv_head <= n_head) through scaled_dot_product_attention
- relu^2 activation in the MLP
- pre-norm residuals: x = x + attn(norm(x)); x = x + mlp(norm(x))
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch
import torch.nn as nn
import torch.nn.functional as F

from blocktrace.config import BlockConfig, ConfigError


def norm(x: torch.Tensor) -> torch.Tensor:
    # purely functional rmsnorm with no learnable params
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    assert x.ndim == 4  # multihead attention
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]  # split the last dim into two halves
    y1 = x1 * cos + x2 * sin  # rotate pairs of dims
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], 3)  # re-assemble


def rotary_cos_sin(
    seq: int, head_dim: int, dtype: torch.dtype, device: torch.device | str, base: float = 10000
) -> tuple[torch.Tensor, torch.Tensor]:
    channel_range = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
    inv_freq = 1.0 / (base ** (channel_range / head_dim))
    t = torch.arange(seq, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # (T, D/2)
    cos, sin = freqs.cos().to(dtype), freqs.sin().to(dtype)
    return cos[None, :, None, :], sin[None, :, None, :]  # (1, T, 1, D/2): broadcast over B and H


class CausalSelfAttention(nn.Module):
    def __init__(self, config: BlockConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.head_dim
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, T, _ = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)  # (B, T, C) -> (B, T, H, D)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, C) -> (B, T, Hkv, D)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q), norm(k)  # QK norm
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)
        # each of the Hkv key/value heads serves H/Hkv query heads; a no-op when Hkv == H
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)  # (B, H, T, D) -> (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: BlockConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)  # (B, T, C) -> (B, T, 4C)
        x = F.relu(x).square()
        x = self.c_proj(x)  # (B, T, 4C) -> (B, T, C)
        return x


class Block(nn.Module):
    def __init__(self, config: BlockConfig):
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(norm(x), cos_sin)
        x = x + self.mlp(norm(x))
        return x


class BlockStack(nn.Module):
    """n_layer Blocks applied one after another, as in nanochat's GPT.transformer.h."""

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        for block in self.h:
            x = block(x, cos_sin)
        return x


def freeze(module: nn.Module, patterns: tuple[str, ...]) -> None:
    """requires_grad=False for the parameters of every module whose path matches a glob pattern."""
    paths = dict(module.named_modules())
    for pattern in patterns:
        matched = [m for path, m in paths.items() if path and fnmatchcase(path, pattern)]
        if not matched:
            examples = ", ".join(list(paths)[1:4])
            raise ConfigError(f"--freeze {pattern!r} matches no module path (e.g. {examples})")
        for m in matched:
            m.requires_grad_(False)


def build_module(config: BlockConfig, device: str = "meta") -> nn.Module:
    """The module for `config`: a Block, or a BlockStack when n_layer > 1."""
    with torch.device(device):
        module = Block(config) if config.n_layer == 1 else BlockStack(config)
    return module.to(getattr(torch, config.dtype))


def example_inputs(config: BlockConfig, device: str = "meta") -> tuple[torch.Tensor, tuple]:
    """The positional arguments to call the module with: x (B, T, C) and the rotary cos_sin."""
    dtype = getattr(torch, config.dtype)
    x = torch.randn(config.batch, config.seq, config.n_embd, dtype=dtype, device=device)
    return x, rotary_cos_sin(config.seq, config.head_dim, dtype, device)
