"""The names of the tensors a traced module takes, as its forward's parameters call them: `ctx`,
`mask`, a tuple's parts `cos_sin[0]` and `cos_sin[1]`, a dict's `batch["ids"]`."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def input_names(module: nn.Module, args: tuple, kwargs: dict[str, Any], count: int) -> tuple[str, ...] | None:
    """One name per tensor input, in the order the trace lists them (args, then kwargs, each looked
    into as the tracer does), or None where the forward's signature does not bind what was passed or
    the names found are not `count`."""
    try:
        signature = inspect.signature(module.forward)
        signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    given: list[tuple[str, Any]] = []
    params = iter(signature.parameters.values())
    rest = list(args)
    while rest:
        p = next(params, None)
        if p is None or p.kind not in (*_POSITIONAL, inspect.Parameter.VAR_POSITIONAL):
            return None
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            given += [(f"{p.name}[{k}]", a) for k, a in enumerate(rest)]
            break
        given.append((p.name, rest.pop(0)))
    given += list(kwargs.items())
    names: list[str] = []
    for name, value in given:
        _named(name, value, names)
    return tuple(names) if len(names) == count else None


def _named(name: str, value: Any, names: list[str]) -> None:
    if isinstance(value, torch.Tensor):
        if not issubclass(type(value), nn.Parameter):  # the tracer leaves parameters out
            names.append(name)
    elif isinstance(value, dict):
        for key, part in value.items():
            _named(f"{name}[{key!r}]", part, names)
    elif isinstance(value, (tuple, list)):
        for k, part in enumerate(value):
            _named(f"{name}[{k}]", part, names)
