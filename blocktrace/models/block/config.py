"""The Block's hyper-parameters, its family (preset and structural choices), and the probe input,
validated; and the size symbols a Block's shapes are named with. No torch here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from fractions import Fraction
from functools import cache
from typing import Any

from blocktrace.errors import ConfigError
from blocktrace.models.block.families import (
    FAMILIES,
    OWN_SIZES,
    ROPE_THETA,
    ROTARY_PCT,
    Activation,
    Norm,
    Preset,
    Qkv,
    Residual,
)
from blocktrace.models.spec import Dtype, choice
from blocktrace.sizes.symbols import Composite, Symbol, SymbolSet

# A stack is traced layer by layer at its smallest sizes: bounded so that a call ends in seconds.
MAX_LAYERS = 1024
# torch sizes a tensor's storage in bytes, as an int64: at up to 8 bytes an element, no tensor (nor a
# product of sizes that names one) may have more elements than this.
MAX_ELEMENTS = (2**63 - 1) // 8

# The basis every Block's shapes are products of, with the sizes of the two probes (see symbols.py):
# every product of sizes differs between the probes, and of such assignments these keep a probe
# Block's weights and activations small.
_B = Symbol("B", "batch", (11, 17))
_T = Symbol("T", "sequence length", (19, 13))
_HKV = Symbol("Hkv", "n_kv_head", (3, 5))
_G = Symbol("G", "n_head / n_kv_head", (5, 11))
_H = Symbol("H", "n_head", (3, 5))  # the basis where key/value heads are query heads (fused qkv)
_R = Symbol("r", "mlp_hidden / n_embd", (13, 7), by_value=True)
_F = Symbol("F", "mlp_hidden, the MLP's inner width", (23, 29))
_ORDER = ("B", "T", "C", "F", "H", "Hkv", "G", "D")
_C_GQA = Composite("C", "n_embd", (("Hkv", 1), ("G", 1), ("D", 1)))
_H_GQA = Composite("H", "n_head", (("Hkv", 1), ("G", 1)))
_C_MHA = Composite("C", "n_embd", (("H", 1), ("D", 1)))


@cache
def symbol_set(grouped: bool, multiple: bool, d_step: int = 2) -> SymbolSet:
    """The size symbols of a Block with grouped-query heads or not, an MLP width a multiple of C or
    not, and a head dim the probes keep a multiple of `d_step` (2 for rotary embeddings: what they
    turn must stay even, a quarter of each head, Pythia's, makes it 8)."""
    d = Symbol("D", "head dim, C / H", (7, 3), step=d_step)
    basis = (_B, _T, _HKV, _G, d) if grouped else (_B, _T, _H, d)
    composites = (_C_GQA, _H_GQA) if grouped else (_C_MHA,)
    return SymbolSet((*basis, _R if multiple else _F), composites, _ORDER)


@dataclass(frozen=True)
class BlockConfig:
    n_embd: int = OWN_SIZES.n_embd  # C: width of the residual stream
    n_head: int = OWN_SIZES.n_head  # H: number of query heads
    n_kv_head: int | None = None  # Hkv: number of key/value heads (GQA when < n_head); None: n_head
    seq: int = OWN_SIZES.seq  # T: tokens per sequence in the probe input
    batch: int = 8  # B: sequences per batch in the probe input
    mlp_ratio: int = 4  # the MLP widens C to mlp_ratio * C, unless mlp_hidden says otherwise
    mlp_hidden: int | None = None  # F: the MLP's inner width; None: mlp_ratio * n_embd
    n_layer: int = OWN_SIZES.n_layer  # Blocks chained one after another
    dtype: Dtype = Dtype.float32  # dtype of weights and activations
    preset: Preset = Preset.nanochat  # the family: module names, and whether norms have weights
    norm: Norm = Norm.rmsnorm  # before each sub-layer (after, post-norm)
    activation: Activation = Activation.relu2  # the MLP's
    residual: Residual = Residual.pre  # how the sub-layers add to the stream
    bias: bool = False  # biases in the Linears
    qk_norm: bool = True  # normalise q and k per head
    rotary: bool = True  # rotary position embeddings on q and k
    rope_theta: float = ROPE_THETA  # the base of the rotary frequencies
    rotary_pct: float = ROTARY_PCT  # the part of each head turned, from its first dim (GPT-NeoX's)
    causal: bool = True  # causal attention mask
    qkv: Qkv = Qkv.separate  # separate q, k, v projections, or one fused C -> 3C
    norm_weights: bool = False  # norms are modules with a weight (and a bias for layernorm)

    def __post_init__(self) -> None:
        if self.n_kv_head is None and _is_int(self.n_head):
            object.__setattr__(self, "n_kv_head", self.n_head)
        for name in ("n_embd", "n_head", "n_kv_head", "seq", "batch", "mlp_ratio", "n_layer"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.mlp_hidden is not None and (not _is_int(self.mlp_hidden) or self.mlp_hidden <= 0):
            raise ConfigError(f"mlp_hidden must be a positive integer, got {self.mlp_hidden!r}")
        theta = self.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 < theta < float("inf"):
            raise ConfigError(f"rope_theta must be a number above 0, got {theta!r}")
        pct = self.rotary_pct
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct <= 1:
            raise ConfigError(f"rotary_pct must be a number above 0 and at most 1, got {pct!r}")
        for name, kind in (
            ("dtype", Dtype), ("preset", Preset), ("norm", Norm), ("activation", Activation),
            ("residual", Residual), ("qkv", Qkv),
        ):  # fmt: skip
            object.__setattr__(self, name, choice(kind, getattr(self, name), name))
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.kv_heads:
            raise ConfigError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head})")
        if self.qkv is Qkv.fused and self.n_kv_head != self.n_head:
            raise ConfigError(
                f"qkv fused projects n_head key and value heads; it cannot have n_kv_head ({self.n_kv_head}) "
                f"< n_head ({self.n_head}): use qkv separate for grouped-query attention"
            )
        if self.rotary and self.head_dim % 2:
            raise ConfigError(
                f"head dim n_embd/n_head = {self.n_embd}/{self.n_head} = {self.head_dim} "
                "must be even for rotary embeddings"
            )
        if self.rotary and self.rotary_pct < 1:
            self._check_rotary_part()
        if self.n_layer > MAX_LAYERS:
            raise ConfigError(
                f"n_layer ({self.n_layer}) is over {MAX_LAYERS}, the most layers blocktrace traces"
            )
        self._check_sizes()

    def _check_rotary_part(self) -> None:
        """The dims rotary_pct turns are a whole, even number, as GPT-NeoX's rotate_half needs; and
        they are a fraction of the head with a power of two below, so that the probes' head dims (a
        prime times a power of two, see symbols.py) turn an even number of dims too."""
        turned = self.rotary_pct * self.head_dim
        whole = round(turned)
        # 0.7 * 180 is 125.99999999999999; 1e-9 of a head is 0 dims, a part that turns nothing
        if abs(turned - whole) > 1e-9 * self.head_dim or whole % 2 or whole == 0:
            raise ConfigError(
                f"rotary_pct ({self.rotary_pct:g}) of the head dim ({self.head_dim}) is {turned:g} dims; "
                "the rotary embedding turns an even number of them (rotary_pct 1 turns the whole head)"
            )
        part = Fraction(whole, self.head_dim)
        if part.denominator & (part.denominator - 1):
            raise ConfigError(
                f"rotary_pct ({self.rotary_pct:g}) turns {part} of each head: blocktrace draws parts with "
                "a power of two below (1/2, 1/4, 3/8, ...), which its probes' head dims can turn too"
            )

    def _check_sizes(self) -> None:
        """Every tensor a Block makes must be indexable by torch's int64, and so must be every
        product of sizes its shapes are named with."""
        b, t, c, f, h = self.batch, self.seq, self.n_embd, self.hidden, self.n_head
        largest = {
            "batch * seq * mlp_hidden": b * t * f,
            "batch * seq * 3 * n_embd": b * t * 3 * c,
            "batch * n_head * seq * seq (attention scores)": b * h * t * t,
            "n_embd * mlp_hidden": c * f,
        }
        for what, elements in largest.items():
            if elements > MAX_ELEMENTS:
                raise ConfigError(
                    f"{what} = {elements} elements is over torch's int64 limit; use smaller sizes"
                )

    @classmethod
    def from_preset(cls, preset: str = Preset.nanochat, **overrides: Any) -> BlockConfig:
        """The config of `preset` at its reference's sizes, with every override that is not None in
        its place."""
        family = FAMILIES[choice(Preset, preset, "preset")]
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(sorted(unknown))}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        sizes = family.sizes.given(chosen) if family.sizes else {}
        return cls(**{**family.choices(), **sizes, "preset": preset, **chosen})

    @property
    def kv_heads(self) -> int:
        """Hkv: n_kv_head, which is n_head where it was not given."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden(self) -> int:
        """F, the MLP's inner width."""
        return self.mlp_ratio * self.n_embd if self.mlp_hidden is None else self.mlp_hidden

    @property
    def grouped(self) -> bool:
        """Whether key/value heads are a basis size of their own (separate projections can group)."""
        return self.qkv is Qkv.separate

    @property
    def symbols(self) -> SymbolSet:
        """The size symbols this Block's shapes are named with."""
        return symbol_set(self.grouped, self.hidden % self.n_embd == 0, self.head_dim_step)

    @property
    def rotary_dims(self) -> int:
        """The dims of each head the rotary embedding turns, the first of them: head dim x rotary_pct."""
        return round(self.rotary_pct * self.head_dim) if self.rotary else 0

    @property
    def head_dim_step(self) -> int:
        """What every probe's head dim is a multiple of: 2 for an even rotary part, and 2 x b for
        rotary_pct a / b, so that a probe turns a whole, even part of each head too."""
        if not self.rotary:
            return 2
        return 2 * Fraction(self.rotary_dims, self.head_dim).denominator

    def dims(self) -> dict[str, int]:
        """The independent sizes every tensor shape in a Block is built from (the symbols' basis)."""
        sizes = {
            "B": self.batch,
            "T": self.seq,
            "H": self.n_head,
            "Hkv": self.kv_heads,
            "G": self.n_head // self.kv_heads,  # query heads per key/value head
            "D": self.head_dim,
            "r": self.hidden // self.n_embd,
            "F": self.hidden,
        }
        return {name: sizes[name] for name in self.symbols.names}

    def with_dims(self, dims: dict[str, int]) -> BlockConfig:
        """The config whose dims() are `dims` (the inverse of dims())."""
        n_head = dims["H"] if "H" in dims else dims["Hkv"] * dims["G"]
        n_embd = n_head * dims["D"]
        return replace(
            self,
            batch=dims["B"],
            seq=dims["T"],
            n_kv_head=dims.get("Hkv", n_head),
            n_head=n_head,
            n_embd=n_embd,
            mlp_ratio=dims.get("r", self.mlp_ratio),
            mlp_hidden=dims.get("F"),
        )

    def to_dict(self) -> dict[str, int | str | bool | float]:
        """Plain JSON-able values; the trace schema writes an unset mlp_hidden as 0."""
        out = {k: v.value if isinstance(v, StrEnum) else v for k, v in asdict(self).items()}
        return {**out, "mlp_hidden": self.mlp_hidden or 0}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
