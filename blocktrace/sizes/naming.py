"""A trace named from a fit: every dimension whose fit gives its traced size gets its symbolic name,
and the derived trace scales the probe's shapes to the requested sizes exactly."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING, TypedDict

from blocktrace.sizes.fit import ShapeFit, fit_probes, structure
from blocktrace.sizes.stack import repeat
from blocktrace.sizes.symbols import Dim
from blocktrace.tracing.graph.build import handed_on
from blocktrace.tracing.records import FrozenDict, evolve
from blocktrace.tracing.trace import ModuleCall, TensorMeta, Trace, Weight

if TYPE_CHECKING:
    from blocktrace.models.spec import ModelSpec


def derived_trace(spec: ModelSpec, shape_fit: ShapeFit) -> Trace | None:
    """The full-size, named trace of `spec` from the probes' fit, or None where the fit is
    incomplete or some module with parameters was never called (the calls would not count them)."""
    if not (shape_fit.complete and shape_fit.all_called):
        return None
    namer = _Namer(spec, shape_fit)
    fitted = (*namer.all_dims(), *map(_fitted, shape_fit.flops.values()))
    if any(namer.value(d).denominator != 1 for d in fitted):
        return None

    def scale(t: TensorMeta) -> TensorMeta:
        done = namer.done.get(t.id)  # a tensor is recorded where it is made and wherever it is used
        if done is None:
            shape, symbols = namer.sized(shape_fit.dims[t.id])
            done = namer.done[t.id] = TensorMeta(t.id, shape, t.dtype, symbols)
        return done

    full = shape_fit.probe.map_tensors(scale)
    own: dict[str, tuple[Weight, ...]] = {}  # module path -> its own weights at full size
    for c in full.calls:
        if c.path not in own:
            own[c.path] = namer.weights(c, full_size=True).weights
    totals: dict[str, list[int]] = {}  # module path -> [parameters, trainable], submodules included
    for path, weights in own.items():
        for ancestor in _ancestors(path):
            totals.setdefault(ancestor, [0, 0])
        for w in weights:
            # a tied weight is counted where it was first owned, so once in each module holding both
            first = _ancestors(w.tied.rpartition(".")[0]) if w.tied is not None else []
            for ancestor in _ancestors(path):
                if ancestor not in first:
                    totals[ancestor][0] += math.prod(w.shape)
                    totals[ancestor][1] += math.prod(w.shape) if w.trainable else 0
    calls = tuple(
        evolve(c, params=totals[c.path][0], trainable=totals[c.path][1], weights=own[c.path])
        for c in full.calls
    )
    # an argument that differed between the probes (a scale of 1/sqrt(D)) is unknown at full size
    varying = {i for i, _ in shape_fit.varying}
    ops = tuple(
        evolve(
            o,
            attrs=FrozenDict((k, v) for k, v in o.attrs.items() if (o.index, k) not in shape_fit.varying)
            if o.index in varying else o.attrs,
            flops=int(namer.value(_fitted(shape_fit.flops[o.index]))),
        )
        for o in full.ops
    )  # fmt: skip
    derived = replace(full, calls=calls, ops=ops, device="probe", config=spec.describe(), **namer.legend())
    return handed_on(shape_fit.probe, derived, scale)


def _fitted(dim: Dim | None) -> Dim:
    """A dim of a complete fit: derived_trace checks the fit is complete before it reads one."""
    if dim is None:
        raise ValueError("a dimension without a fit")
    return dim


def _ancestors(path: str) -> list[str]:
    """ "h.0.attn" -> ["h.0.attn", "h.0", "h", ""]: the module and every module holding it."""
    parts = path.split(".") if path else []
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]


def named(trace: Trace, spec: ModelSpec, shape_fit: ShapeFit | None) -> Trace:
    """`trace` with symbolic names on every dimension whose fit gives its size, and the legend."""
    named_trace = handed_on(trace, replace(trace, config=spec.describe()))
    if shape_fit is None:
        return named_trace
    matched = _matching(trace, shape_fit)
    if matched is None:
        # the probes traced one layer of a stack, or other code than ran at full size
        matched = (
            repeat(shape_fit, trace, shape_fit.all_called, spec.sizes, spec.layers)
            if spec.layers > 1
            else None
        )
        if matched is None and spec.layers > 1 and spec.full_size_trace:
            # layers that differ (T5's first computes the position bias the others read), or a
            # cache made for every layer before they run (a sliding window's): the probes of the
            # whole stack, at its depth
            whole = fit_probes(spec, layers=spec.layers)
            matched = _matching(trace, whole) if whole is not None else None
        if matched is None:
            return named_trace
    shape_fit = matched
    namer = _Namer(spec, shape_fit)
    named_trace = named_trace.map_tensors(namer.tensor)
    sized = replace(named_trace, calls=tuple(map(namer.weights, named_trace.calls)), **namer.legend())
    return handed_on(trace, sized, namer.tensor)


def _matching(trace: Trace, shape_fit: ShapeFit) -> ShapeFit | None:
    """The fit, keyed by `trace`'s tensors, where `trace` ran the probes' code: the same structure,
    or one that differs only where the probes' CPU handed a tensor back and `trace`'s device made a
    copy (`.to(device)` of a CPU tensor, as a cache's lazy initialisation does on the meta device);
    else None."""
    if structure(trace) == structure(shape_fit.probe):
        return shape_fit
    mine, theirs = _in_order(trace), _in_order(shape_fit.probe)
    if len(mine) != len(theirs):
        return None
    twin: dict[int, int] = {}
    for t, u in zip(mine, theirs, strict=True):
        if twin.setdefault(t.id, u.id) != u.id:
            return None  # one tensor here, two there: no copy of the probes' code
    if structure(trace.map_tensors(lambda t: replace(t, id=twin[t.id]))) != structure(shape_fit.probe):
        return None
    return replace(shape_fit, dims={t: shape_fit.dims[u] for t, u in twin.items()})


def _in_order(trace: Trace) -> list[TensorMeta]:
    """Every tensor occurrence of the trace, in the order `structure` reads them."""
    found = [*trace.inputs, *trace.outputs]
    for c in trace.calls:
        found += [*c.inputs, *c.outputs]
    for o in trace.ops:
        found += [*o.inputs, *o.outputs]
    for r in trace.residual_adds:
        found += [r.stream, r.output, *(b.output for b in r.branches)]
    return found


class _Legend(TypedDict):
    symbols: dict[str, int]
    meanings: dict[str, str]


class _Namer:
    """Names dims at one config's sizes where the fit gives the traced size. Each Dim's value and name
    is worked out once, looked up by identity: a deep stack's tensors share their Block's Dims."""

    def __init__(self, spec: ModelSpec, shape_fit: ShapeFit):
        self.sizes = spec.sizes
        self.symbol_set = spec.symbols
        self.fit = shape_fit
        self.values: dict[int, Fraction] = {}
        self.names: dict[int, str] = {}
        self.used: dict[int, Dim] = {}
        self.done: dict[int, TensorMeta] = {}
        self.scaled: dict[int, tuple[tuple[int, ...], tuple[str, ...] | None]] = {}

    def value(self, dim: Dim) -> Fraction:
        if id(dim) not in self.values:
            self.values[id(dim)] = dim.value(self.sizes)
        return self.values[id(dim)]

    def name(self, dim: Dim) -> str:
        if id(dim) not in self.names:
            self.names[id(dim)] = self.symbol_set.name(dim, self.sizes)
            self.used[id(dim)] = dim
        return self.names[id(dim)]

    def all_dims(self) -> list[Dim]:
        return [d for fitted in (*self.fit.dims.values(), *self.fit.weights.values()) for d in fitted if d]

    def shape(self, dims: tuple[Dim | None, ...]) -> tuple[int, ...]:
        return tuple(int(self.value(_fitted(d))) for d in dims)

    def sized(self, dims: tuple[Dim | None, ...]) -> tuple[tuple[int, ...], tuple[str, ...] | None]:
        """The size the fit gives at full size, and its names: once per tuple of Dims, which the
        fit holds (a stack's layers share their Block's)."""
        if id(dims) not in self.scaled:
            shape = self.shape(dims)
            self.scaled[id(dims)] = shape, self.symbols(dims, shape)
        return self.scaled[id(dims)]

    def symbols(self, dims: tuple[Dim | None, ...], shape: tuple[int, ...]) -> tuple[str, ...] | None:
        if any(d is None or self.value(d) != n for d, n in zip(dims, shape, strict=True)):
            return None
        return tuple(self.name(d) for d in dims if d is not None)  # none is, as checked above

    def tensor(self, t: TensorMeta) -> TensorMeta:
        if t.id not in self.done:
            self.done[t.id] = evolve(t, symbols=self.symbols(self.fit.dims[t.id], t.shape))  # stats kept
        return self.done[t.id]

    def weights(self, call: ModuleCall, full_size: bool = False) -> ModuleCall:
        """The call with its weights named; `full_size`: their shapes first scaled from the fit."""
        named_weights = []
        for i, w in enumerate(call.weights):
            dims = self.fit.weights[call.index, i]
            shape = self.shape(dims) if full_size else w.shape
            named_weights.append(evolve(w, shape=shape, symbols=self.symbols(dims, shape)))
        return evolve(call, weights=tuple(named_weights))

    def legend(self) -> _Legend:
        """The trace's symbols (name -> value) and their meanings, for the names given so far."""
        values = self.symbol_set.legend(list(self.used.values()), self.sizes)
        return {"symbols": values, "meanings": {n: self.symbol_set.meanings[n] for n in values}}
