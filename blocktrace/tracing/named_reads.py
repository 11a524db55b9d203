"""What the model's own tensors are called where its ops read them: a buffer by its path (the ops
take it as a value, so it is named by its tensor id: `cos`), a parameter by its path and, for a
slice of it, the index the code wrote (`resid_lambdas[0]`). An op's parameters are not values of
the data flow (a Linear's weight is no input of the stream), so an op that reads one keeps where,
among the tensors it took, each parameter stood (OpCall.params): its formula writes them there."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from blocktrace.tracing.trace import ParameterRead, TensorMeta


@dataclass
class NamedReads:
    buffers: dict[str, str]  # str(tensor id) -> the buffer's path ("cos", "h.0.attn.bias")
    parameters: dict[int, str]  # id(parameter) -> its path ("resid_lambdas", "ls1.gamma")

    @classmethod
    def of(cls, module: nn.Module, meta: Callable[[torch.Tensor], TensorMeta]) -> NamedReads:
        """Each buffer tagged before the forward (what is sliced from it is named by it: cos[…]),
        each parameter known by its first path (a tied one by the module that owns it first)."""
        buffers = {str(meta(b).id): name for name, b in module.named_buffers()}
        return cls(buffers, {id(p): name for name, p in module.named_parameters()})

    def read(self, op: str, tensors: Sequence[torch.Tensor], args: tuple) -> tuple[ParameterRead, ...]:
        """The parameters an op took, by name, where they stood among `tensors`."""
        found = []
        for k, t in enumerate(tensors):
            name = self.parameters.get(id(t))
            if name is not None:
                found.append(
                    ParameterRead(k, _sliced(name, args[1:]) if op == "getitem" and k == 0 else name)
                )
        return tuple(found)


def _sliced(name: str, index: tuple[Any, ...]) -> str:
    """`resid_lambdas[0]` for a parameter read at a number the code wrote; `gamma[…]` otherwise."""
    at = index[0] if len(index) == 1 else None
    return f"{name}[{at}]" if isinstance(at, int) and not isinstance(at, bool) else f"{name}[…]"
