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
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
import torch.nn as nn
import torch.nn.functional as F

from blocktrace.config import BlockConfig, ConfigError


@dataclass(frozen=True)
class Names:
    """Module names of one family, so a trace reads like the reference code."""

    attn: str
    q: str
    k: str
    v: str
    qkv: str  # the fused projection C -> 3C
    o: str
    mlp: str
    up: str  # C -> F
    gate: str  # C -> F, gated by silu (SwiGLU)
    down: str  # F -> C
    norm_1: str  # before (or, post-norm, after) attention
    norm_2: str  # before (or after) the MLP


NAMES = {
    "nanochat": Names("attn", "c_q", "c_k", "c_v", "c_attn", "c_proj", "mlp", "c_fc", "c_gate", "c_proj",
                      "ln_1", "ln_2"),
    "gpt2": Names("attn", "c_q", "c_k", "c_v", "c_attn", "c_proj", "mlp", "c_fc", "c_gate", "c_proj",
                  "ln_1", "ln_2"),
    "llama": Names("self_attn", "q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "mlp", "up_proj",
                   "gate_proj", "down_proj", "input_layernorm", "post_attention_layernorm"),
    "neox": Names("attention", "query", "key", "value", "query_key_value", "dense", "mlp", "dense_h_to_4h",
                  "dense_gate", "dense_4h_to_h", "input_layernorm", "post_attention_layernorm"),
    "bert": Names("attention", "query", "key", "value", "query_key_value", "dense", "mlp", "intermediate",
                  "gate", "output", "attention_norm", "output_norm"),
}  # fmt: skip


def norm(x: torch.Tensor) -> torch.Tensor:
    # purely functional rmsnorm with no learnable params
    return F.rms_norm(x, (x.size(-1),))


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    # purely functional layernorm with no learnable params
    return F.layer_norm(x, (x.size(-1),))


def make_norm(config: BlockConfig, width: int) -> nn.Module | None:
    """A norm module over `width` where the family's norms have weights; None where they are
    functional (the Block then calls norm() or layer_norm())."""
    if not config.norm_weights:
        return None
    return nn.RMSNorm(width) if config.norm == "rmsnorm" else nn.LayerNorm(width, bias=config.bias)


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
        self.names = NAMES[config.preset]
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.head_dim
        self.fused = config.qkv == "fused"
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
        if self.qk_norm and config.norm_weights:
            self.q_norm = make_norm(config, self.head_dim)
            self.k_norm = make_norm(config, self.head_dim)
        self.qk_norm_fn = norm if config.norm == "rmsnorm" else layer_norm

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        B, T, C = x.size()
        if self.fused:
            q, k, v = getattr(self, self.names.qkv)(x).split(C, dim=2)  # (B, T, 3C) -> 3 x (B, T, C)
            q = q.view(B, T, self.n_head, self.head_dim)  # (B, T, C) -> (B, T, H, D)
            k = k.view(B, T, self.n_kv_head, self.head_dim)
            v = v.view(B, T, self.n_kv_head, self.head_dim)
        else:
            q = getattr(self, self.names.q)(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
            k = getattr(self, self.names.k)(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, D)
            v = getattr(self, self.names.v)(x).view(B, T, self.n_kv_head, self.head_dim)
        if self.rotary:
            cos, sin = cos_sin
            q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        if self.qk_norm and hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)  # QK norm, with weights
        elif self.qk_norm:
            q, k = self.qk_norm_fn(q), self.qk_norm_fn(k)  # QK norm
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:  # each of the Hkv key/value heads serves H/Hkv query heads; a no-op when Hkv == H
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=True)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)  # (B, H, T, D) -> (B, T, C)
        return getattr(self, self.names.o)(y)


class MLP(nn.Module):
    def __init__(self, config: BlockConfig):
        super().__init__()
        self.names = NAMES[config.preset]
        self.activation = config.activation
        self.gelu = "tanh" if config.preset == "gpt2" else "none"  # GPT-2's gelu_new is the tanh form
        C, F_, bias = config.n_embd, config.hidden, config.bias
        if self.activation == "swiglu":
            self.add_module(self.names.gate, nn.Linear(C, F_, bias=bias))
        self.add_module(self.names.up, nn.Linear(C, F_, bias=bias))
        self.add_module(self.names.down, nn.Linear(F_, C, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, down = getattr(self, self.names.up), getattr(self, self.names.down)
        if self.activation == "swiglu":  # down(silu(gate(x)) * up(x))
            return down(F.silu(getattr(self, self.names.gate)(x)) * up(x))
        x = up(x)  # (B, T, C) -> (B, T, F)
        if self.activation == "relu2":
            x = F.relu(x).square()
        elif self.activation == "gelu":
            x = F.gelu(x, approximate=self.gelu)
        else:
            x = F.silu(x)
        x = down(x)  # (B, T, F) -> (B, T, C)
        return x


class Block(nn.Module):
    def __init__(self, config: BlockConfig):
        super().__init__()
        self.names = NAMES[config.preset]
        self.residual = config.residual
        self.add_module(self.names.attn, CausalSelfAttention(config))
        self.add_module(self.names.mlp, MLP(config))
        self.norm_fn = norm if config.norm == "rmsnorm" else layer_norm
        if config.norm_weights:
            self.add_module(self.names.norm_1, make_norm(config, config.n_embd))
            if config.residual != "single":  # one norm before the one branch
                self.add_module(self.names.norm_2, make_norm(config, config.n_embd))

    def norm_1(self, x: torch.Tensor) -> torch.Tensor:
        module = self._modules.get(self.names.norm_1)
        return self.norm_fn(x) if module is None else module(x)

    def norm_2(self, x: torch.Tensor) -> torch.Tensor:
        module = self._modules.get(self.names.norm_2)
        return self.norm_fn(x) if module is None else module(x)

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        attn, mlp = getattr(self, self.names.attn), getattr(self, self.names.mlp)
        if self.residual == "pre":
            x = x + attn(self.norm_1(x), cos_sin)
            x = x + mlp(self.norm_2(x))
        elif self.residual == "post":
            x = self.norm_1(x + attn(x, cos_sin))
            x = self.norm_2(x + mlp(x))
        elif self.residual == "parallel":
            x = x + attn(self.norm_1(x), cos_sin) + mlp(self.norm_2(x))
        else:  # single: one residual around both sub-layers
            x = x + mlp(attn(self.norm_1(x), cos_sin))
        return x


class BlockStack(nn.Module):
    """n_layer Blocks applied one after another, as in nanochat's GPT.transformer.h."""

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
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


def example_inputs(config: BlockConfig, device: str = "meta") -> tuple:
    """The positional arguments to call the module with: x (B, T, C), and the rotary cos_sin where
    the Block has rotary embeddings."""
    dtype = getattr(torch, config.dtype)
    x = torch.randn(config.batch, config.seq, config.n_embd, dtype=dtype, device=device)
    if not config.rotary:
        return (x,)
    return x, rotary_cos_sin(config.seq, config.head_dim, dtype, device)
