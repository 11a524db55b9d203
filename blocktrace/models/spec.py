"""The model seam: what blocktrace needs to know of a model to trace it, whoever wrote the model.

Probing, naming, caching and the memory guard work from this interface alone. The built-in Block
families (`BlockSpec`) are one implementation; a user's module file or a Hugging Face config can be
others. No torch at import: building is done inside the methods.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from blocktrace.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from blocktrace.sizes.symbols import SymbolSet


class Dtype(StrEnum):
    """The dtypes a model's weights and activations can be built at."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"

    def to_torch(self) -> torch.dtype:
        import torch

        return getattr(torch, self.value)

    @property
    def itemsize(self) -> int:
        """Bytes per element, as torch's dtype says."""
        return self.to_torch().itemsize


class Device(StrEnum):
    """Where a model is traced: derived from two small CPU probes, or run at full size."""

    probe = "probe"  # shapes derived from two tiny CPU runs
    meta = "meta"  # PyTorch's meta device: shapes without memory
    cpu = "cpu"
    cuda = "cuda"


Choice = TypeVar("Choice", bound=StrEnum)


def choice(kind: type[Choice], value: Any, name: str) -> Choice:
    """`value` as a member of `kind`, or a ConfigError that names `name` and every choice."""
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be one of {', '.join(kind)}, got {value!r}") from None


class ModelSpec(Protocol):
    """A model to trace, at sizes given by its own size symbols."""

    @property
    def symbols(self) -> SymbolSet:
        """Its size symbols: the basis every shape is a product of, with meanings and probe sizes."""
        ...

    @property
    def sizes(self) -> dict[str, int]:
        """The requested value of each basis symbol."""
        ...

    @property
    def layers(self) -> int:
        """How many times the model repeats its unit one after another (1: no stack)."""
        ...

    def build(self, sizes: dict[str, int], device: str, layers: int) -> nn.Module:
        """The module at `sizes`, with `layers` repeated units, its parameters on `device`."""
        ...

    def inputs(self, sizes: dict[str, int], device: str) -> tuple[tuple, dict[str, Any]]:
        """The positional and keyword arguments to call the module built at `sizes` with."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the trace records as its config, JSON-able; also the spec's part of the cache key."""
        ...

    @property
    def dtype(self) -> Dtype:
        """The dtype of its weights and floating-point activations."""
        ...

    @property
    def full_size_trace(self) -> bool:
        """Whether `--device probe` traces the model at full size on the meta device, the probes only
        naming the sizes: for code whose paths may depend on sizes the probes never take. Its probe
        modules are built on the CPU, buffers and all."""
        ...
