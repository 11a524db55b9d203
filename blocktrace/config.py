"""The Block's hyper-parameters and the probe input, validated. No torch here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A configuration a Block cannot be built from; the message is one sentence for the user."""


@dataclass(frozen=True)
class BlockConfig:
    n_embd: int = 768  # C: width of the residual stream
    n_head: int = 6  # H: number of query heads
    n_kv_head: int = 0  # Hkv: number of key/value heads (GQA when < n_head); 0 means n_head
    seq: int = 1024  # T: tokens per sequence in the probe input
    batch: int = 8  # B: sequences per batch in the probe input
    mlp_ratio: int = 4  # the MLP widens C to mlp_ratio * C
    n_layer: int = 1  # Blocks chained one after another
    dtype: str = "float32"  # dtype of weights and activations

    def __post_init__(self) -> None:
        if self.n_kv_head == 0 and isinstance(self.n_head, int):
            object.__setattr__(self, "n_kv_head", self.n_head)
        for name in ("n_embd", "n_head", "n_kv_head", "seq", "batch", "mlp_ratio", "n_layer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head})")
        if self.head_dim % 2:
            raise ConfigError(
                f"head dim n_embd/n_head = {self.n_embd}/{self.n_head} = {self.head_dim} "
                "must be even for rotary embeddings"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def dims(self) -> dict[str, int]:
        """The independent sizes every tensor shape in a Block is built from."""
        return {
            "B": self.batch,
            "T": self.seq,
            "Hkv": self.n_kv_head,
            "G": self.n_head // self.n_kv_head,  # query heads per key/value head
            "D": self.head_dim,
            "r": self.mlp_ratio,
        }

    def with_dims(self, dims: dict[str, int]) -> BlockConfig:
        """The config whose dims() are `dims` (the inverse of dims())."""
        n_head = dims["Hkv"] * dims["G"]
        return replace(
            self,
            batch=dims["B"],
            seq=dims["T"],
            n_kv_head=dims["Hkv"],
            n_head=n_head,
            n_embd=n_head * dims["D"],
            mlp_ratio=dims["r"],
        )

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)
