"""The names of the tensors a traced module takes, as its forward's parameters call them: `ctx`,
`mask`, a tuple's parts `cos_sin[0]` and `cos_sin[1]`, a dict's `batch["ids"]`.

Every module call is named so; the forward's signature is bound once per forward and pattern of
call (how many positional arguments, which keywords), not once per call."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)

# (forward's function, positional count, keywords) -> the positional arguments' names (a starred
# parameter's parts xs[0], xs[1]); None where the signature does not bind such a call
_PLANS: dict[tuple[Any, int, tuple[str, ...]], tuple[str, ...] | None] = {}


def input_names(module: nn.Module, args: tuple, kwargs: dict[str, Any], count: int) -> tuple[str, ...] | None:
    """One name per tensor input, in the order the trace lists them (args, then kwargs, each looked
    into as the tracer does), or None where the forward's signature does not bind what was passed or
    the names found are not `count`."""
    forward = module.forward
    key = (getattr(forward, "__func__", forward), len(args), tuple(kwargs))
    try:
        plan = _PLANS[key]
    except KeyError:
        plan = _PLANS[key] = _plan(forward, len(args), key[2])
    except TypeError:  # a forward that cannot be a key: bound each call
        plan = _plan(forward, len(args), key[2])
    if plan is None:
        return None
    names: list[str] = []
    for name, value in zip(plan, args, strict=True):
        _named(name, value, names)
    for name, value in kwargs.items():
        _named(name, value, names)
    return tuple(names) if len(names) == count else None


def _plan(forward: Any, positional: int, keywords: tuple[str, ...]) -> tuple[str, ...] | None:
    """Each positional argument's parameter name."""
    try:
        signature = inspect.signature(forward)
        signature.bind(*range(positional), **dict.fromkeys(keywords))
    except (TypeError, ValueError):
        return None
    plan: list[str] = []
    for p in signature.parameters.values():
        if len(plan) == positional:
            break
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            plan += [f"{p.name}[{k}]" for k in range(positional - len(plan))]
        elif p.kind in _POSITIONAL:
            plan.append(p.name)
        else:
            return None
    return tuple(plan) if len(plan) == positional else None


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
