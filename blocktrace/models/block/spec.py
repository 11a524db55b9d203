"""The built-in Block families as a model spec (see models/spec.py). No torch at import."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from blocktrace.models.block.config import BlockConfig
from blocktrace.models.spec import Dtype
from blocktrace.sizes.symbols import SymbolSet

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BlockSpec:
    """The built-in Block families, from a BlockConfig."""

    config: BlockConfig
    full_size_trace = False  # the Block's code takes the same path at every size: derived exactly

    @property
    def symbols(self) -> SymbolSet:
        return self.config.symbols

    @property
    def sizes(self) -> dict[str, int]:
        return self.config.dims()

    @property
    def layers(self) -> int:
        return self.config.n_layer

    def at(self, sizes: dict[str, int], layers: int) -> BlockConfig:
        return replace(self.config.with_dims(sizes), n_layer=layers)

    def build(self, sizes: dict[str, int], device: str, layers: int) -> nn.Module:
        from blocktrace.model import build_module

        return build_module(self.at(sizes, layers), device)

    def inputs(self, sizes: dict[str, int], device: str) -> tuple[tuple, dict[str, Any]]:
        from blocktrace.model import example_inputs

        return example_inputs(self.at(sizes, 1), device), {}

    def describe(self) -> dict[str, Any]:
        return self.config.to_dict()

    @property
    def dtype(self) -> Dtype:
        return self.config.dtype
