"""The built-in Block families: the structural choices as str Enums, and one row per family in
FAMILIES (its choices, its part names, its reference's sizes, its line of --preset's help), keyed by
its Preset member.
Validation, the Block's code and the CLI read them from here. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Norm(StrEnum):
    rmsnorm = "rmsnorm"
    layernorm = "layernorm"


class Activation(StrEnum):
    relu2 = "relu2"  # relu(x).square()
    gelu = "gelu"
    silu = "silu"
    swiglu = "swiglu"  # down(silu(gate(x)) * up(x))


class Residual(StrEnum):
    pre = "pre"  # x + f(norm(x))
    post = "post"  # norm(x + f(x))
    parallel = "parallel"  # x + attn(norm(x)) + mlp(norm(x))
    single = "single"  # x + mlp(attn(norm(x)))
    none = "none"  # attn(norm(x)), then mlp(norm(x)): no skip at all


class Qkv(StrEnum):
    separate = "separate"
    fused = "fused"  # one C -> 3C projection


class Preset(StrEnum):
    nanochat = "nanochat"
    gpt2 = "gpt2"
    llama = "llama"
    neox = "neox"
    bert = "bert"


@dataclass(frozen=True)
class Names:
    """What each part is called in one family. The Block's code calls the parts by nanochat's names
    (self.c_q, self.c_fc); a trace shows the family's (q_proj, up_proj), as its reference does."""

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


@dataclass(frozen=True)
class Sizes:
    """One published model's sizes, from its config.json; a size flag given overrides one. Its
    vocabulary and position embeddings are outside the Block, so not here."""

    reference: str  # the model, for --preset's help and the docs
    n_embd: int
    n_head: int
    n_layer: int
    seq: int  # its context length, max_position_embeddings
    n_kv_head: int | None = None  # None: n_head
    mlp_hidden: int | None = None  # None: 4 n_embd
    rope_theta: float | None = None  # its rotary base, where it is not 10000
    rotary_pct: float | None = None  # the part of each head its rotary embedding turns, where not all

    def given(self, flags: dict[str, Any]) -> dict[str, Any]:
        """These sizes as config fields, less those `flags` (the flags given) decide: the reference's
        key/value heads are for its own n_head, its MLP width for its own n_embd."""
        sizes: dict[str, Any] = {
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_layer": self.n_layer,
            "seq": self.seq,
        }
        if self.n_kv_head is not None and "n_head" not in flags:
            sizes["n_kv_head"] = self.n_kv_head
        if self.mlp_hidden is not None and not {"n_embd", "mlp_ratio"} & set(flags):
            sizes["mlp_hidden"] = self.mlp_hidden
        if self.rope_theta is not None:
            sizes["rope_theta"] = self.rope_theta
        if self.rotary_pct is not None:
            sizes["rotary_pct"] = self.rotary_pct
        return sizes


# blocktrace's own sizes, where no preset gives its reference's: BlockConfig's defaults, here so that
# --help can name them without importing the config
OWN_SIZES = Sizes("nanochat's Block at GPT-2 width", n_embd=768, n_head=6, n_layer=1, seq=1024)
ROPE_THETA = 10000.0  # the rotary base, where a preset gives none
ROTARY_PCT = 1.0  # the part of each head the rotary embedding turns, where a preset gives none


@dataclass(frozen=True)
class Family:
    """A preset: the structure of the reference it is named after; the flags override its choices."""

    summary: str  # its part of --preset's help
    norm: Norm
    activation: Activation
    residual: Residual
    bias: bool
    qk_norm: bool
    rotary: bool
    causal: bool
    qkv: Qkv
    norm_weights: bool  # the norms are modules with parameters (False: nanochat's functional norm())
    names: Names
    gelu: str = "none"  # F.gelu's approximate: "tanh" where the reference's gelu is the tanh form
    sizes: Sizes | None = None  # None: blocktrace's own defaults (BlockConfig's)

    def choices(self) -> dict[str, Any]:
        """The config fields this family sets."""
        return {
            "norm": self.norm, "activation": self.activation, "residual": self.residual, "bias": self.bias,
            "qk_norm": self.qk_norm, "rotary": self.rotary, "causal": self.causal, "qkv": self.qkv,
            "norm_weights": self.norm_weights,
        }  # fmt: skip


_NANOCHAT_NAMES = Names(
    "attn", "c_q", "c_k", "c_v", "c_attn", "c_proj", "mlp", "c_fc", "c_gate", "c_proj", "ln_1", "ln_2"
)
FAMILIES: dict[Preset, Family] = {
    Preset.nanochat: Family(
        "nanochat (one Block, C 768, 6 heads: functional RMSNorm, ReLU squared, QK-norm, rotary, GQA)",
        Norm.rmsnorm, Activation.relu2, Residual.pre, bias=False, qk_norm=True, rotary=True, causal=True,
        qkv=Qkv.separate, norm_weights=False, names=_NANOCHAT_NAMES,
    ),
    Preset.gpt2: Family(  # transformers' GPT2Block; its gelu_new is the tanh form
        "gpt2 (GPT-2 small: LayerNorm, fused c_attn, GELU, biases)",
        Norm.layernorm, Activation.gelu, Residual.pre, bias=True, qk_norm=False, rotary=False, causal=True,
        qkv=Qkv.fused, norm_weights=True, names=_NANOCHAT_NAMES, gelu="tanh",
        # huggingface.co/openai-community/gpt2, config.json (Radford et al. 2019, the 117M model)
        sizes=Sizes("GPT-2 small", n_embd=768, n_head=12, n_layer=12, seq=1024),
    ),
    Preset.llama: Family(  # transformers' LlamaDecoderLayer
        "llama (Llama 3 8B: RMSNorm, SwiGLU, rotary, GQA)",
        Norm.rmsnorm, Activation.swiglu, Residual.pre, bias=False, qk_norm=False, rotary=True, causal=True,
        qkv=Qkv.separate, norm_weights=True,
        names=Names("self_attn", "q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "mlp", "up_proj",
                    "gate_proj", "down_proj", "input_layernorm", "post_attention_layernorm"),
        # huggingface.co/meta-llama/Meta-Llama-3-8B, config.json
        sizes=Sizes("Llama 3 8B", n_embd=4096, n_head=32, n_kv_head=8, mlp_hidden=14336, n_layer=32,
                    seq=8192, rope_theta=500000.0),
    ),
    Preset.neox: Family(  # transformers' GPTNeoXLayer with use_parallel_residual=True
        "neox (Pythia-1.4B: attention and MLP in parallel, one add)",
        Norm.layernorm, Activation.gelu, Residual.parallel, bias=True, qk_norm=False, rotary=True,
        causal=True, qkv=Qkv.fused, norm_weights=True,
        names=Names("attention", "query", "key", "value", "query_key_value", "dense", "mlp", "dense_h_to_4h",
                    "dense_gate", "dense_4h_to_h", "input_layernorm", "post_attention_layernorm"),
        # huggingface.co/EleutherAI/pythia-1.4b, config.json (Biderman et al. 2023, table 1); its
        # "rotary_pct": 0.25 turns 32 of each head's 128 dims
        sizes=Sizes("Pythia-1.4B", n_embd=2048, n_head=16, n_layer=24, seq=2048, rotary_pct=0.25),
    ),
    Preset.bert: Family(  # transformers' BertLayer
        "bert (BERT-base: post-norm, bidirectional)",
        Norm.layernorm, Activation.gelu, Residual.post, bias=True, qk_norm=False, rotary=False,
        causal=False, qkv=Qkv.separate, norm_weights=True,
        names=Names("attention", "query", "key", "value", "query_key_value", "dense", "mlp", "intermediate",
                    "gate", "output", "attention_norm", "output_norm"),
        # huggingface.co/google-bert/bert-base-uncased, config.json (Devlin et al. 2019, BERT-base)
        sizes=Sizes("BERT-base", n_embd=768, n_head=12, n_layer=12, seq=512),
    ),
}  # fmt: skip
