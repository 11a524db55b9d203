"""Tracing what a Python caller holds: a live nn.Module with its inputs, or a function of sizes.

A live module is traced where its tensors are, or on a copy on the meta device (`device="meta"`)
whose parameters are meta tensors, so that nothing is allocated at its size. The module comes back
as it was: the tracer removes its hooks and restores each `.training` flag, and runs under no_grad.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from blocktrace.errors import ConfigError, TraceError, error_line
from blocktrace.models.spec import Device, Dtype, choice
from blocktrace.tracing.trace import Trace

if TYPE_CHECKING:
    from torch import nn


def is_module(obj: Any) -> bool:
    """Whether `obj` is an nn.Module; never imports torch (a caller holding one has imported it)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def trace_live(module: nn.Module, args: tuple, kwargs: dict[str, Any], device: str | None) -> Trace:
    """The trace of `module(*args, **kwargs)`: where its tensors are (device None), or on a meta copy."""
    from blocktrace.tracing.tracer import trace

    if device is not None and device != Device.meta:
        raise ConfigError(
            f"device={device!r}: a live module is traced where its tensors are (device=None) or on "
            "the meta device (device='meta')"
        )
    if device == Device.meta:
        module, args, kwargs = _on_meta(module, args, kwargs)
    traced = trace(module, args, kwargs)
    return replace(traced, config={"module": f"{type(module).__module__}.{type(module).__qualname__}"})


def _on_meta(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[nn.Module, tuple, dict]:
    """A copy of `module` whose parameters and buffers are meta tensors (tied ones stay tied: the
    copy maps each tensor once), and the inputs on the meta device; nothing is copied at its size."""
    import copy
    import itertools

    import torch
    from torch.utils._pytree import tree_map

    memo: dict[int, Any] = {}
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        meta = tensor.detach().to("meta")
        is_parameter = isinstance(tensor, torch.nn.Parameter)
        memo[id(tensor)] = torch.nn.Parameter(meta, tensor.requires_grad) if is_parameter else meta
    try:
        copied = copy.deepcopy(module, memo)
    except Exception as error:
        raise TraceError(
            f"device='meta': the module cannot be copied ({error_line(error, named=True)}); trace it "
            "where it is (device=None)"
        ) from error

    def to_meta(value: Any) -> Any:
        return value.to("meta") if isinstance(value, torch.Tensor) else value

    return copied, tree_map(to_meta, args), tree_map(to_meta, kwargs)


def factory_trace(
    factory: Callable[..., Any], dims: Mapping[str, int], dtype: str, device: str, freeze: tuple[str, ...]
) -> Trace:
    """The named trace of a function of sizes, as `--module FILE.py:FUNCTION --dim NAME=SIZE` traces it."""
    from blocktrace.models.user_module import factory_spec, parse_dims
    from blocktrace.pipeline import load_torch, trace_spec

    load_torch()
    target = f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"
    requested = parse_dims(tuple(f"{name}={size}" for name, size in dims.items()))
    spec = factory_spec(target, factory, requested, choice(Dtype, dtype, "dtype"))
    return trace_spec(spec, choice(Device, device, "device"), freeze)
