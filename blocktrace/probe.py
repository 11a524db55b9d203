"""Shapes at any size, from two small probes.

The Block is traced twice on the CPU with tiny sizes whose basis sizes are primes (symbols.PROBE_DIMS).
Every tensor dimension is fitted as a product of basis sizes (symbols.fit) and must agree with both
probes. That fit names the dimension (B, T, 4C, ...) and, evaluated at the requested sizes, gives its
exact size there, so a 70B-class config costs what a toy one does. The parameters come from the
full-size module built on the meta device, which allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import torch
from torch import nn

from blocktrace.config import BlockConfig
from blocktrace.model import build_module, example_inputs
from blocktrace.symbols import PROBE_DIMS, Dim, fit, legend
from blocktrace.trace import TensorMeta, Trace, Weight
from blocktrace.tracer import parameters, trace


@dataclass(frozen=True)
class ShapeFit:
    probe: Trace  # the trace of the first probe
    dims: dict[int, tuple[Dim | None, ...]]  # tensor id -> one fitted Dim per axis (None: no fit)
    weights: dict[tuple[int, int], tuple[Dim | None, ...]]  # (call, weight) -> the same, per axis

    @property
    def complete(self) -> bool:
        return all(d is not None for dims in self.dims.values() for d in dims)


def structure(trace: Trace) -> Trace:
    """The trace without sizes: what must match between traces of the same code at other sizes."""
    bare = trace.map_tensors(lambda t: TensorMeta(t.id, (0,) * len(t.shape), t.dtype))
    return replace(
        bare,
        device="",
        calls=tuple(replace(c, params=0, trainable=0, weights=()) for c in bare.calls),
    )


def probe_module(config: BlockConfig) -> nn.Module:
    """The module for `config` on the CPU, every parameter of one shape sharing one zero tensor:
    shapes do not depend on values, and a deep stack then costs one Block of memory."""
    module = build_module(config, "meta")
    shared: dict[tuple[int, ...], torch.Tensor] = {}
    for m in module.modules():
        for name, p in list(m.named_parameters(recurse=False)):
            data = shared.setdefault(tuple(p.shape), torch.zeros(p.shape, dtype=p.dtype))
            setattr(m, name, nn.Parameter(data, requires_grad=p.requires_grad))
    return module


def fit_shapes(config: BlockConfig) -> ShapeFit | None:
    """Fit every dimension of `config`'s trace from the probes; None if the probes differ in
    structure (the code takes other paths at other sizes)."""
    traces = []
    for dims in PROBE_DIMS:
        probe = config.with_dims(dims)
        traces.append(trace(probe_module(probe), example_inputs(probe, "cpu")))
    if any(structure(t) != structure(traces[0]) for t in traces[1:]):
        return None
    shapes = [{t.id: t.shape for t in tr.tensors()} for tr in traces]
    weights = [{(c.index, i): w.shape for c in tr.calls for i, w in enumerate(c.weights)} for tr in traces]
    return ShapeFit(traces[0], _fit_all(shapes), _fit_all(weights))


def _fit_all(shapes: list[dict]) -> dict:
    """key -> fitted dims, from key -> shape in each probe."""
    return {
        key: tuple(fit([s[key][axis] for s in shapes]) for axis in range(len(shape)))
        for key, shape in shapes[0].items()
    }


def derived_trace(config: BlockConfig, shape_fit: ShapeFit, module: nn.Module) -> Trace | None:
    """The full-size trace of `config` from the probes' fit, or None where the fit is incomplete.
    `module` is the full-size module (on meta): the parameters are read from it."""
    if not shape_fit.complete:
        return None
    sizes = config.dims()

    def scaled(t: TensorMeta) -> TensorMeta:
        values = [d.value(sizes) for d in shape_fit.dims[t.id]]  # type: ignore[union-attr]
        return TensorMeta(t.id, tuple(int(v) for v in values), t.dtype)

    if any(v.denominator != 1 for dims in shape_fit.dims.values() for v in _values(dims, sizes)):
        return None
    modules = dict(module.named_modules())
    full = shape_fit.probe.map_tensors(scaled)
    calls = tuple(replace(c, **_params(modules[c.path])) for c in full.calls)
    return replace(full, calls=calls, device="probe")


def _values(dims: tuple[Dim | None, ...], sizes: dict[str, int]) -> list[Fraction]:
    return [d.value(sizes) for d in dims if d is not None]


def _params(module: nn.Module) -> dict:
    params, trainable, weights = parameters(module)
    return {"params": params, "trainable": trainable, "weights": weights}


def named(trace: Trace, config: BlockConfig, shape_fit: ShapeFit | None) -> Trace:
    """`trace` with symbolic names on every dimension whose fit gives its size, and the legend."""
    named_trace = replace(trace, config=config.to_dict())
    if shape_fit is None or structure(trace) != structure(shape_fit.probe):
        return named_trace
    sizes = config.dims()
    used: list[Dim] = []

    def names(dims: tuple[Dim | None, ...], shape: tuple[int, ...]) -> tuple[str, ...] | None:
        if any(d is None or d.value(sizes) != n for d, n in zip(dims, shape, strict=True)):
            return None
        used.extend(dims)  # type: ignore[arg-type]
        return tuple(d.name(sizes) for d in dims)  # type: ignore[union-attr]

    def named_weight(call: int, index: int, w: Weight) -> Weight:
        return replace(w, symbols=names(shape_fit.weights[call, index], w.shape))

    named_trace = named_trace.map_tensors(lambda t: replace(t, symbols=names(shape_fit.dims[t.id], t.shape)))
    calls = tuple(
        replace(c, weights=tuple(named_weight(c.index, i, w) for i, w in enumerate(c.weights)))
        for c in named_trace.calls
    )
    return replace(named_trace, calls=calls, symbols=legend(used, sizes))
