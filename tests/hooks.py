"""An independent record of a forward pass, made with nothing but PyTorch's forward hooks: every
module call's path, class and output shapes, in the order the calls began. Tests hold blocktrace's
traces against it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from blocktrace.tracing.trace import Trace

Call = tuple[str, str, tuple[tuple[int, ...], ...]]


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):  # transformers' ModelOutput is an OrderedDict
        for v in value.values():
            yield from _tensors(v)


def hooked_calls(module: nn.Module, args: tuple = (), kwargs: dict | None = None) -> list[Call]:
    """(path, class name, output shapes) of every module call of `module(*args, **kwargs)`."""
    names = {m: path for path, m in module.named_modules()}
    calls: list[Call | None] = []
    open_calls: list[int] = []

    def pre(m: nn.Module, _args: tuple) -> None:
        open_calls.append(len(calls))
        calls.append(None)  # a call's place is when it began; its outputs come when it returns

    def post(m: nn.Module, _args: tuple, output: Any) -> None:
        shapes = tuple(tuple(t.shape) for t in _tensors(output) if not isinstance(t, nn.Parameter))
        calls[open_calls.pop()] = (names[m], type(m).__name__, shapes)

    handles = [
        h for m in module.modules() for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))
    ]
    try:
        with torch.no_grad():
            module.eval()(*args, **(kwargs or {}))
    finally:
        for h in handles:
            h.remove()
    assert all(c is not None for c in calls)
    return calls  # type: ignore[return-value]


def traced_calls(trace: Trace) -> list[Call]:
    return [(c.path, c.type, tuple(t.shape for t in c.outputs)) for c in trace.calls]


def symbols_of(trace: Trace, path: str, output: int = 0) -> tuple[str, ...] | None:
    """The symbolic shape of the first call of `path`'s output."""
    return next(c.outputs[output].symbols for c in trace.calls if c.path == path)
