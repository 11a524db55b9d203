"""Blocks written the way people write them, for the corpus (tests/test_corpus_blocks.py): in the
styles of timm, nanoGPT and nanochat's latest gpt.py, a cross-attention block, a residual sum with a
term from a side input, blocks returning a dict and a tuple, an encoder taking its mask as a keyword,
a top-k mixture of experts, and DiT's adaLN-modulated block. Each is small and runs on the CPU in
milliseconds; the tests' expectations cite these lines."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Fused qkv, heads split by reshape, torch's SDPA; an optional boolean mask keeps what is True."""

    def __init__(self, c: int, h: int, causal: bool = False) -> None:
        super().__init__()
        self.h, self.causal = h, causal
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# --- timm: layer scale and drop path on each branch (timm/models/vision_transformer.py Block) ---------
class LayerScale(nn.Module):
    def __init__(self, c: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Drops whole samples' branches while training; the identity in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class TimmBlock(nn.Module):
    def __init__(self, c: int = 16, h: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(c)
        self.attn = SelfAttention(c, h)
        self.ls1 = LayerScale(c)
        self.drop_path1 = DropPath(0.1)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = Mlp(c, 4 * c)
        self.ls2 = LayerScale(c)
        self.drop_path2 = DropPath(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))  # residual 1
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))  # residual 2
        return x


# --- nanoGPT (karpathy/nanoGPT model.py): token + position embeddings, pre-norm blocks ---------------
class CausalSelfAttention(nn.Module):
    def __init__(self, c: int, h: int) -> None:
        super().__init__()
        self.n_head = h
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.resid_dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(c, dim=2)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (B, H, T, D)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class NanoMLP(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * c, c)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class NanoBlock(nn.Module):
    def __init__(self, c: int, h: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(c)
        self.attn = CausalSelfAttention(c, h)
        self.ln_2 = nn.LayerNorm(c)
        self.mlp = NanoMLP(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class NanoGPT(nn.Module):
    def __init__(self, vocab: int = 50, block: int = 16, c: int = 16, h: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(block, c)
        self.drop = nn.Dropout(0.1)
        self.h = nn.ModuleList(NanoBlock(c, h) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        self.lm_head = nn.Linear(c, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(0, idx.size(1), dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # token + position: no residual
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# --- nanochat's latest gpt.py, in its style: value embeddings, a smear gate, windowed attention, ------
# --- and x = resid_lambda * x + x0_lambda * x0 before every block ------------------------------------
def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))  # functional, no parameters


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3)  # (B, T, H, D)


def window_mask(t: int, window: int, device: torch.device) -> torch.Tensor:
    """Causal, and at most `window` tokens back: what flash attention's window_size keeps."""
    i = torch.arange(t, device=device)
    back = i[:, None] - i[None, :]
    return (back >= 0) & (back < window)  # (T, T)


class ChatAttention(nn.Module):
    def __init__(self, c: int, h: int, ve_gate: int = 4) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.ve_gate_channels = h, c // h, ve_gate
        self.c_q = nn.Linear(c, c, bias=False)
        self.c_k = nn.Linear(c, c, bias=False)
        self.c_v = nn.Linear(c, c, bias=False)
        self.c_proj = nn.Linear(c, c, bias=False)
        self.ve_gate = nn.Linear(ve_gate, h, bias=False)

    def forward(
        self, x: torch.Tensor, ve: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], window: int
    ) -> torch.Tensor:
        b, t, c = x.size()
        q = self.c_q(x).view(b, t, self.n_head, self.head_dim)
        k = self.c_k(x).view(b, t, self.n_head, self.head_dim)
        v = self.c_v(x).view(b, t, self.n_head, self.head_dim)
        gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate_channels]))  # (B, T, H)
        v = v + gate.unsqueeze(-1) * ve.view(b, t, self.n_head, self.head_dim)  # value embeddings mixed in
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q), norm(k)  # QK norm
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(t, window, x.device))
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class ChatMLP(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c, bias=False)
        self.c_proj = nn.Linear(4 * c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class ChatBlock(nn.Module):
    def __init__(self, c: int, h: int) -> None:
        super().__init__()
        self.attn = ChatAttention(c, h)
        self.mlp = ChatMLP(c)

    def forward(
        self, x: torch.Tensor, ve: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], window: int
    ) -> torch.Tensor:
        x = x + self.attn(norm(x), ve, cos_sin, window)
        x = x + self.mlp(norm(x))
        return x


class NanoChat(nn.Module):
    def __init__(self, vocab: int = 50, c: int = 16, h: int = 4, layers: int = 2, seq: int = 16) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.smear_gate = nn.Linear(4, 1, bias=False)
        self.smear_lambda = nn.Parameter(torch.zeros(1))
        self.h = nn.ModuleList(ChatBlock(c, h) for _ in range(layers))
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(vocab, c) for i in range(layers)})
        self.resid_lambdas = nn.Parameter(torch.ones(layers))
        self.x0_lambdas = nn.Parameter(torch.zeros(layers))
        self.lm_head = nn.Linear(c, vocab, bias=False)
        self.window_sizes = [seq // 2 if i % 2 == 0 else seq for i in range(layers)]  # short, long
        d = c // h
        freqs = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
        angles = torch.outer(torch.arange(seq).float(), freqs)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)  # (1, T, 1, D/2)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.size(1)
        cos_sin = self.cos[:, :t], self.sin[:, :t]
        x = norm(self.wte(idx))
        # smear: each token takes in a gated share of the one before it
        gate = self.smear_lambda * torch.sigmoid(self.smear_gate(x[:, 1:, :4]))  # (B, T-1, 1)
        x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
        x0 = x
        for i, block in enumerate(self.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0  # x0 mixed back in: no residual
            x = block(x, self.value_embeds[str(i)](idx), cos_sin, self.window_sizes[i])
        x = norm(x)
        softcap = 15
        return softcap * torch.tanh(self.lm_head(x) / softcap)


# --- a decoder block reading a context beside its stream -------------------------------------------
class CrossAttention(nn.Module):
    def __init__(self, c: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.to_q = nn.Linear(c, c, bias=False)
        self.to_kv = nn.Linear(c, 2 * c, bias=False)
        self.to_out = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q = self.to_q(x).view(b, t, self.h, c // self.h).transpose(1, 2)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        k = k.reshape(b, -1, self.h, c // self.h).transpose(1, 2)  # (B, H, S, D)
        v = v.reshape(b, -1, self.h, c // self.h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(y.transpose(1, 2).reshape(b, t, c))


class CrossAttentionBlock(nn.Module):
    def __init__(self, c: int = 16, h: int = 4) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = SelfAttention(c, h, causal=True)
        self.cross = CrossAttention(c, h)
        self.mlp = Mlp(c, 4 * c)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.cross(self.norm2(x), context)
        x = x + self.mlp(self.norm3(x))
        return x


# --- a residual sum with a third term from a side input, q, k, v made by a generator over one split ---
class SideTermBlock(nn.Module):
    """Pre-norm; x + proj(attention) + the context's mean projection: two adds in one line, one sum."""

    def __init__(self, c: int = 16, h: int = 4, s: int = 8) -> None:
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.ctx = nn.Linear(s, c)
        self.fc = nn.Linear(c, 4 * c)
        self.out = nn.Linear(4 * c, c)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(a) + self.ctx(context).mean(1, keepdim=True)  # (B, 1, C) beside the branch
        x = x + self.out(F.gelu(self.fc(self.ln2(x))))
        return x


def side_term_block(
    B: int = 8, T: int = 256, C: int = 512, H: int = 8, S: int = 77, E: int = 64
) -> tuple[SideTermBlock, tuple[torch.Tensor, torch.Tensor]]:
    """The block at width C with H heads, on B sequences of T tokens and a context of S vectors of E."""
    return SideTermBlock(C, H, E), (torch.randn(B, T, C), torch.randn(B, S, E))


# --- blocks returning more than their stream -------------------------------------------------------
class DictBlock(nn.Module):
    """Returns the stream and an auxiliary head's logits, by name."""

    def __init__(self, c: int = 16, h: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = SelfAttention(c, h)
        self.mlp = Mlp(c, 2 * c)
        self.aux_head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x + self.attn(self.norm1(x))
        aux = self.aux_head(x)  # read off the middle of the stream
        x = x + self.mlp(self.norm2(x))
        return {"hidden": x, "aux": aux}


class TupleBlock(nn.Module):
    """Returns (stream, attention probabilities), as eager attention layers do."""

    def __init__(self, c: int = 16, h: int = 4) -> None:
        super().__init__()
        self.h = h
        self.norm = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.out = nn.Linear(c, c)

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, c = x.shape
        q, k, v = (y.view(b, t, self.h, -1).transpose(1, 2) for y in self.qkv(x).chunk(3, dim=-1))
        probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c // self.h), dim=-1)  # (B, H, T, T)
        return self.out((probs @ v).transpose(1, 2).reshape(b, t, c)), probs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, probs = self.attend(self.norm(x))
        return x + y, probs


# --- a sliding-window key/value cache, as transformers' DynamicSlidingWindowLayer.update() -----------
class SlidingWindowCache:
    """Keeps the last `window - 1` keys and values for the next call; returns all it was given."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def update(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys = keys[:, :, -self.window + 1 :, :]  # (B, H, W-1, D)
        self.values = values[:, :, -self.window + 1 :, :]
        return keys, values


class CachedAttentionBlock(nn.Module):
    def __init__(self, c: int = 16, h: int = 4, window: int = 4) -> None:
        super().__init__()
        self.h = h
        self.norm = nn.LayerNorm(c)
        self.q, self.k, self.v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.proj = nn.Linear(c, c)
        self.cache = SlidingWindowCache(window)

    def heads(self, y: torch.Tensor) -> torch.Tensor:
        b, t, c = y.shape
        return y.view(b, t, self.h, c // self.h).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        k, v = self.cache.update(self.heads(k), self.heads(v))
        y = F.scaled_dot_product_attention(self.heads(q), k, v, is_causal=True)
        return x + self.proj(y.transpose(1, 2).reshape(b, t, c))


# --- an encoder layer whose padding mask comes as a keyword -----------------------------------------
class MaskedEncoderLayer(nn.Module):
    """Post-norm, as BERT is: x = norm(x + attn(x, mask)); x = norm(x + ffn(x))."""

    def __init__(self, c: int = 16, h: int = 4) -> None:
        super().__init__()
        self.attn = SelfAttention(c, h)
        self.norm1 = nn.LayerNorm(c)
        self.ffn = Mlp(c, 2 * c)
        self.norm2 = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[:, None, None, :]  # (B, 1, 1, T): the keys each query may read
        x = self.norm1(x + self.attn(x, keep))
        return self.norm2(x + self.ffn(x))


# --- a top-k mixture of experts, router and experts loop as Mixtral's reference code writes it ------
class TopKMoE(nn.Module):
    def __init__(self, c: int = 16, experts: int = 4, k: int = 2) -> None:
        super().__init__()
        self.k = k
        self.router = nn.Linear(c, experts, bias=False)
        self.experts = nn.ModuleList(Mlp(c, 2 * c) for _ in range(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        tokens = x.reshape(-1, c)  # (B*T, C)
        weights, chosen = torch.topk(torch.softmax(self.router(tokens), dim=-1), self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == e)
            if token.numel():
                out.index_add_(0, token, weights[token, slot, None] * expert(tokens[token]))
        return out.reshape(b, t, c)


class MoEBlock(nn.Module):
    def __init__(self, c: int = 16, h: int = 4) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = SelfAttention(c, h, causal=True)
        self.moe = TopKMoE(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.moe(self.norm2(x))
        return x


# --- DiT's adaLN-Zero block: a condition modulates each branch (facebookresearch/DiT models.py) -----
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    def __init__(self, c: int = 16, h: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(c, h)
        self.norm2 = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(c, 4 * c)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(
            6, dim=1
        )
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


# --- cross-attention whose keys and values are one projection of the context, cut in two ----------
class KvCrossBlock(nn.Module):
    """q from the stream; k and v from one Linear of the context, split by chunk, each cut into
    heads by a helper method beside the stream."""

    def __init__(self, c: int = 32, h: int = 4) -> None:
        super().__init__()
        self.h = h
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.q, self.kv, self.o = nn.Linear(c, c), nn.Linear(c, 2 * c), nn.Linear(c, c)
        self.fc, self.proj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.view(b, n, self.h, c // self.h).transpose(1, 2)  # (B, N, C) -> (B, H, N, D)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        q = self.heads(self.q(self.norm1(x)))
        k, v = self.kv(ctx).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(q, self.heads(k), self.heads(v))
        x = x + self.o(y.transpose(1, 2).reshape(x.shape))
        return x + self.proj(F.gelu(self.fc(self.norm2(x))))


# --- q, k and v made by a helper that calls three modules, on the stream and on a context ----------
class QkvHelperBlock(nn.Module):
    """project() calls q, k and v on what it is given and returns all three; forward uses q from the
    stream's projection and k, v from the context's."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.q, self.k, self.v, self.o = (nn.Linear(c, c) for _ in range(4))

    def project(self, h: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q(h), self.k(ctx), self.v(ctx)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(self.norm(x), ctx)
        return x + self.o(F.scaled_dot_product_attention(q, k, v))
