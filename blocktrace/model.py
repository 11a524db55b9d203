"""
The transformer Block families blocktrace builds from flags, written the way their references
write them. The default is nanochat's Block:
- functional RMSNorm with no learnable params
- no bias in linear layers
- rotary embeddings and QK norm
- grouped-query attention (n_kv_head <= n_head) through scaled_dot_product_attention
- relu^2 activation in the MLP
- pre-norm residuals: x = x + attn(norm(x)); x = x + mlp(norm(x))
The other presets (gpt2, llama, neox, bert) are the same parts arranged as their references arrange
them, under their module names: LayerNorm or RMSNorm modules with weights, GELU or SwiGLU MLPs, a
fused qkv projection, post-norm or parallel residuals.
Which parts a family has, and what each is called, is its row in models/block/families.py; this
file builds what a row says. The two entry points come first: build_module() and example_inputs().
This file stays at blocktrace/model.py: `blocktrace source` shows its path and lines to users.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from blocktrace.models.block.config import BlockConfig
from blocktrace.models.block.families import FAMILIES, Activation, Norm, Qkv, Residual

__all__ = [
    "MLP",
    "Block",
    "BlockStack",
    "CausalSelfAttention",
    "ParallelBlock",
    "PostNormBlock",
    "SelfAttention",
    "SingleResidualBlock",
    "build_module",
    "example_inputs",
    "rotary_cos_sin",
]


def build_module(config: BlockConfig, device: str = "meta") -> nn.Module:
    """The module for `config`: a Block, or a BlockStack when n_layer > 1."""
    with torch.device(device):
        module = BLOCKS[config.residual](config) if config.n_layer == 1 else BlockStack(config)
    return partly_rotary(module.to(config.dtype.to_torch()), config)


def example_inputs(config: BlockConfig, device: str = "meta") -> tuple:
    """The positional arguments to call the module with: x (B, T, C), and the rotary cos_sin where
    the Block has rotary embeddings."""
    dtype = config.dtype.to_torch()
    x = torch.randn(config.batch, config.seq, config.n_embd, dtype=dtype, device=device)
    if not config.rotary:
        return (x,)
    return x, rotary_cos_sin(config.seq, config.rotary_dims, dtype, device, config.rope_theta)


def part(role: str) -> property:
    """The submodule that plays `role` (a field of Names), under the name its family gives it."""

    def get(self: nn.Module) -> nn.Module:
        module = self._modules.get(getattr(self.names, role))
        if module is None:
            raise AttributeError(role)  # so that nn.Module.add_module sees the name as free
        return module

    return property(get)


def norm(x: torch.Tensor) -> torch.Tensor:
    # purely functional rmsnorm with no learnable params
    return F.rms_norm(x, (x.size(-1),))


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    # purely functional layernorm with no learnable params
    return F.layer_norm(x, (x.size(-1),))


def functional_norm(config: BlockConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The norm of a family whose norms have no weights: nanochat's norm(), or layer_norm()."""
    return norm if config.norm is Norm.rmsnorm else layer_norm


def make_norm(config: BlockConfig, width: int) -> nn.Module | None:
    """A norm module over `width` where the family's norms have weights; None where they are
    functional (the Block then calls norm() or layer_norm())."""
    if not config.norm_weights:
        return None
    return nn.RMSNorm(width) if config.norm is Norm.rmsnorm else nn.LayerNorm(width, bias=config.bias)


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
    c_q, c_k, c_v, c_attn, c_proj = part("q"), part("k"), part("v"), part("qkv"), part("o")

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.names = FAMILIES[config.preset].names
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.head_dim = config.head_dim
        self.fused = config.qkv is Qkv.fused
        self.rotary = config.rotary
        self.qk_norm = config.qk_norm
        self.causal = config.causal
        C, kv, bias = config.n_embd, self.n_kv_head * self.head_dim, config.bias
        if self.fused:
            self.add_module(self.names.qkv, nn.Linear(C, 3 * C, bias=bias))
        else:
            self.add_module(self.names.q, nn.Linear(C, C, bias=bias))
            self.add_module(self.names.k, nn.Linear(C, kv, bias=bias))
            self.add_module(self.names.v, nn.Linear(C, kv, bias=bias))
        self.add_module(self.names.o, nn.Linear(C, C, bias=bias))
        if self.qk_norm:  # over the head dim: modules with weights, or the functional norm
            self.q_norm = make_norm(config, self.head_dim) or functional_norm(config)
            self.k_norm = make_norm(config, self.head_dim) or functional_norm(config)

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        B, T, C = x.size()
        if self.fused:
            q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) -> (B, T, 3C) -> 3 x (B, T, C)
            q = q.view(B, T, self.n_head, self.head_dim)  # (B, T, C) -> (B, T, H, D)
            k = k.view(B, T, self.n_kv_head, self.head_dim)
            v = v.view(B, T, self.n_kv_head, self.head_dim)
        else:
            q = self.c_q(x).view(B, T, self.n_head, self.head_dim)  # (B, T, C) -> (B, T, H, D)
            k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, C) -> (B, T, Hkv, D)
            v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if self.rotary:
            cos, sin = cos_sin
            q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)  # QK norm
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:  # each of the Hkv key/value heads serves H/Hkv query heads; a no-op when Hkv == H
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=True)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)  # (B, H, T, D) -> (B, T, C)
        return self.c_proj(y)


class SelfAttention(CausalSelfAttention):
    """Attention over the whole sequence, both ways (BERT's): the same code with the causal mask off,
    a class of its own so that a trace names what ran."""


class MLP(nn.Module):
    c_fc, c_gate, c_proj = part("up"), part("gate"), part("down")

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.names = FAMILIES[config.preset].names
        self.activation = config.activation
        self.gelu = FAMILIES[config.preset].gelu  # F.gelu's approximate
        C, F_, bias = config.n_embd, config.hidden, config.bias
        if self.activation is Activation.swiglu:
            self.add_module(self.names.gate, nn.Linear(C, F_, bias=bias))
        self.add_module(self.names.up, nn.Linear(C, F_, bias=bias))
        self.add_module(self.names.down, nn.Linear(F_, C, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "swiglu":
            return self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x))  # (B, T, F) gated, -> (B, T, C)
        x = self.c_fc(x)  # (B, T, C) -> (B, T, F)
        if self.activation == "relu2":
            x = F.relu(x).square()
        elif self.activation == "gelu":
            x = F.gelu(x, approximate=self.gelu)
        else:
            x = F.silu(x)
        x = self.c_proj(x)  # (B, T, F) -> (B, T, C)
        return x


class Block(nn.Module):
    """Pre-norm, as nanochat, GPT-2 and Llama: each sub-layer reads the normed stream and adds to it."""

    attn, mlp = part("attn"), part("mlp")

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.names = FAMILIES[config.preset].names
        attention = CausalSelfAttention if config.causal else SelfAttention
        self.add_module(self.names.attn, attention(config))
        self.add_module(self.names.mlp, MLP(config))
        self.norm_fn = functional_norm(config)
        if config.norm_weights:
            self.add_module(self.names.norm_1, make_norm(config, config.n_embd))
            if config.residual is not Residual.single:  # one norm before the one branch
                self.add_module(self.names.norm_2, make_norm(config, config.n_embd))

    @property
    def norm_1(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The first norm: the family's module, or the functional norm where norms have no weights."""
        module = self._modules.get(self.names.norm_1)
        return self.norm_fn if module is None else module

    @property
    def norm_2(self) -> Callable[[torch.Tensor], torch.Tensor]:
        module = self._modules.get(self.names.norm_2)
        return self.norm_fn if module is None else module

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), cos_sin)
        x = x + self.mlp(self.norm_2(x))
        return x


class PostNormBlock(Block):
    """Post-norm, as BERT: the norm comes after each add, on the stream itself."""

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = self.norm_1(x + self.attn(x, cos_sin))
        x = self.norm_2(x + self.mlp(x))
        return x


class ParallelBlock(Block):
    """Parallel, as GPT-NeoX and GPT-J: attention and MLP read the same x, into one add."""

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return x + self.attn(self.norm_1(x), cos_sin) + self.mlp(self.norm_2(x))


class SingleResidualBlock(Block):
    """One residual around both sub-layers: the MLP reads attention's output, not the stream."""

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return x + self.mlp(self.attn(self.norm_1(x), cos_sin))


BLOCKS: dict[Residual, type[Block]] = {
    Residual.pre: Block,
    Residual.post: PostNormBlock,
    Residual.parallel: ParallelBlock,
    Residual.single: SingleResidualBlock,
}


class BlockStack(nn.Module):
    """n_layer Blocks applied one after another, as in nanochat's GPT.transformer.h."""

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.h = nn.ModuleList(BLOCKS[config.residual](config) for _ in range(config.n_layer))

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        for block in self.h:
            x = block(x, cos_sin)
        return x


class NoResidualBlock(Block):
    """No skip at all: each sub-layer replaces the stream, the comparison for why a Block has them."""

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = self.attn(self.norm_1(x), cos_sin)
        x = self.mlp(self.norm_2(x))
        return x


BLOCKS[Residual.none] = NoResidualBlock


# Rotating part of each head (GPT-NeoX's rotary_pct). `blocktrace source` points users at the lines
# above by number, so what follows is added below them.


def partly_rotary(module: nn.Module, config: BlockConfig) -> nn.Module:
    """`module`, each attention rotating config.rotary_dims of each head where those are fewer than
    the head's (the rotary tables example_inputs makes are that wide)."""
    if 0 < config.rotary_dims < config.head_dim:
        for attention in module.modules():
            if isinstance(attention, CausalSelfAttention):
                attention.__class__ = PartialRotaryAttention  # the same parts: only forward differs
    return module


def apply_partial_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # as GPT-NeoX: the tables say how many of the first dims turn, the rest pass through
    d = 2 * cos.size(-1)
    x_rot, x_pass = x[..., :d], x[..., d:]  # (B, T, H, D) -> (B, T, H, d), (B, T, H, D - d)
    return torch.cat([apply_rotary_emb(x_rot, cos, sin), x_pass], dim=-1)


class PartialRotaryAttention(CausalSelfAttention):
    """Attention whose rotary embedding turns only the first rotary_pct of each head (GPT-NeoX's
    and Pythia's 0.25) and passes the rest through: the same parts as CausalSelfAttention."""

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        B, T, C = x.size()
        if self.fused:
            q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) -> (B, T, 3C) -> 3 x (B, T, C)
        else:
            q, k, v = self.c_q(x), self.c_k(x), self.c_v(x)
        q = q.view(B, T, self.n_head, self.head_dim)  # (B, T, C) -> (B, T, H, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim)
        v = v.view(B, T, self.n_kv_head, self.head_dim)
        cos, sin = cos_sin
        q, k = apply_partial_rotary_emb(q, cos, sin), apply_partial_rotary_emb(k, cos, sin)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)  # QK norm
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=not self.fused)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)  # (B, H, T, D) -> (B, T, C)
        return self.c_proj(y)
