"""The model seam: what blocktrace needs to know of a model to trace it, whoever wrote the model.

Probing, naming, caching and the memory guard work from this interface alone. The built-in Block
families (`BlockSpec`) are one implementation; a user's module file or a Hugging Face config can be
others. No torch at import: building is done inside the methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from blocktrace.sizes.symbols import SymbolSet

if TYPE_CHECKING:
    from torch import nn


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

    def dtype_bytes(self) -> int:
        """Bytes per element of its weights and activations."""
        ...

    @property
    def full_size_trace(self) -> bool:
        """Whether `--device probe` traces the model at full size on the meta device, the probes only
        naming the sizes: for code whose paths may depend on sizes the probes never take. Its probe
        modules are built on the CPU, buffers and all."""
        ...
