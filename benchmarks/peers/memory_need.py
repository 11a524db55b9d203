"""Estimate, from shapes alone, the peak memory a forward of the Block with real tensors would hold.

The forward runs on the meta device (no memory at any size) under a TorchFunctionMode that adds the
bytes of every tensor a torch function returns with storage of its own (views share their base's),
and subtracts them when that tensor is freed, as eager execution would free it. The peak of those
live bytes plus the weights and the inputs is printed, in bytes, on stdout. Attention counts as its
output only, as with the fused kernels a real run uses; allocator slack and library overhead are not
counted, so this is a lower bound on what a real run adds to the process.

Usage: python benchmarks/peers/memory_need.py --n-embd 8192 --n-head 64 --n-kv-head 8 --seq 131072 --batch 1
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import common
import torch
from torch.overrides import TorchFunctionMode


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a value that may be a tensor or a (nested) tuple, list or dict of them."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


def nbytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


class LiveBytes(TorchFunctionMode):
    """Counts the bytes held by tensors that torch functions create, and their peak."""

    def __init__(self, held: list[torch.Tensor]) -> None:
        super().__init__()
        self.static = sum(nbytes(t) for t in held)  # weights and inputs: alive throughout
        self.seen = {id(t) for t in held}
        self.live: dict[int, int] = {}
        self.peak = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = func(*args, **(kwargs or {}))
        for tensor in tensors_in(result):
            self._track(tensor)
        self.peak = max(self.peak, sum(self.live.values()))
        return result

    def _track(self, tensor: torch.Tensor) -> None:
        key = id(tensor)
        if tensor._base is not None or key in self.seen or key in self.live:
            return  # a view, an input or weight, or a tensor already counted (in-place, no-op)
        self.live[key] = nbytes(tensor)
        weakref.finalize(tensor, self.live.pop, key, None)


def main() -> None:
    args = common.parser(__doc__).parse_args()
    module, inputs = common.block_and_inputs(common.config_from(args), "meta")
    held = [*module.parameters(), *module.buffers(), *tensors_in(inputs)]
    with torch.no_grad():
        counter = LiveBytes(held)
        with counter:
            module(*inputs)
    print(counter.static + counter.peak)


if __name__ == "__main__":
    common.run(main)
