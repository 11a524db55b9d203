"""Shapes at any size, from two small probes.

The model is traced twice on the CPU with tiny sizes whose basis sizes are primes (its SymbolSet's
probes). Every tensor dimension is fitted as a product of basis sizes (SymbolSet.fit) and must agree
with both probes. That fit names the dimension (B, T, 4C, ...) and, evaluated at the requested sizes,
gives its exact size there, so a 70B-class config costs what a toy one does. Parameter counts come
from the fitted weight shapes. Everything here works from the model seam (spec.ModelSpec).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction

import torch
from torch import nn

from blocktrace.model import freeze
from blocktrace.spec import ModelSpec
from blocktrace.symbols import Dim
from blocktrace.trace import Branch, ModuleCall, OpCall, Site, TensorMeta, Trace, Weight
from blocktrace.tracer import trace


@dataclass(frozen=True)
class ShapeFit:
    probe: Trace  # the trace of the first probe
    dims: dict[int, tuple[Dim | None, ...]]  # tensor id -> one fitted Dim per axis (None: no fit)
    weights: dict[tuple[int, int], tuple[Dim | None, ...]]  # (call, weight) -> the same, per axis
    flops: dict[int, Dim | None]  # op index -> its FLOPs, fitted as a dim is (None: no fit)
    all_called: bool  # every module with parameters of its own was called: the calls count them all
    varying: frozenset[tuple[int, str]] = frozenset()  # (op, attr) whose value differs between probes

    @property
    def complete(self) -> bool:
        """Whether every dimension, of tensors and of weights, and every op's FLOPs have a fit."""
        fitted = (*self.dims.values(), *self.weights.values(), self.flops.values())
        return all(d is not None for dims in fitted for d in dims)


def structure(trace: Trace) -> tuple:
    """The trace without sizes: what must match between traces of the same code at other sizes.
    Tensor ids and frames are renumbered by first appearance, so a part of a trace can be compared
    with a whole one. The table of frames is left out: the ops and module calls made in them, with
    their files and lines, already say which code ran."""
    ids: dict[int, int] = {}
    frames: dict[int, int] = {}

    def bare(ts: tuple[TensorMeta, ...]) -> tuple:
        return tuple((ids.setdefault(t.id, len(ids)), len(t.shape), t.dtype) for t in ts)

    def site(s: Site | None) -> tuple | None:
        if s is None:
            return None
        return (s.file, s.function, s.first_line, s.line, frames.setdefault(s.frame, len(frames)))

    return (
        trace.model,
        bare(trace.inputs),
        bare(trace.outputs),
        tuple(
            (c.index, c.path, c.type, c.parent, bare(c.inputs), bare(c.outputs), site(c.site))
            for c in trace.calls
        ),
        tuple(
            (
                o.index,
                o.name,
                o.call,
                o.function,
                o.file,
                o.first_line,
                o.line,
                frames.setdefault(o.frame, len(frames)),
                o.uncounted,
            )
            for o in trace.ops
        ),
        tuple((_bare_attrs(o.attrs), bare(o.inputs), bare(o.outputs)) for o in trace.ops),
        tuple(
            (
                r.op,
                r.adds,
                bare((r.stream, r.output)),
                tuple((b.calls, b.ops, bare((b.output,))) for b in r.branches),
            )
            for r in trace.residual_adds
        ),
    )


def _bare_attrs(attrs: dict) -> tuple:
    # a float argument may follow the sizes (SDPA's scale=1/sqrt(D)): its name must match, not its value
    return tuple((k, None if isinstance(v, float) else v) for k, v in attrs.items())


def probe_module(spec: ModelSpec, sizes: dict[str, int], frozen: tuple[str, ...] = ()) -> nn.Module:
    """One unit of the model at `sizes` on the CPU, every parameter of one shape sharing one zero
    tensor: shapes do not depend on values. A tied parameter stays one Parameter."""
    module = spec.build(sizes, "meta", 1)
    shared: dict[tuple[int, ...], torch.Tensor] = {}
    made: dict[int, nn.Parameter] = {}  # id(meta parameter) -> its CPU stand-in
    for m in module.modules():
        for name, p in list(m.named_parameters(recurse=False)):
            if p.shape not in shared:
                shared[p.shape] = torch.zeros(p.shape, dtype=p.dtype)
            if id(p) not in made:
                made[id(p)] = nn.Parameter(shared[p.shape], requires_grad=p.requires_grad)
            setattr(m, name, made[id(p)])
    freeze(module, frozen)
    return module


def probe_trace(spec: ModelSpec, sizes: dict[str, int], module: nn.Module) -> tuple[Trace, bool]:
    """A real CPU trace of `module` built at `sizes`, and whether every module with parameters of
    its own was called. On one thread: the tensors are tiny, so threads would only add hand-offs,
    and they stall when the cores are busy with something else."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args, kwargs = spec.inputs(sizes, "cpu")
        traced = trace(module, args, kwargs)
    finally:
        torch.set_num_threads(threads)
    called = {c.path for c in traced.calls}
    owners = {
        path for path, m in module.named_modules() if next(m.parameters(recurse=False), None) is not None
    }
    return traced, owners <= called


def fit_shapes(spec: ModelSpec, frozen: tuple[str, ...] = ()) -> ShapeFit | None:
    """Fit every dimension of `spec`'s trace from the probes; None if the probes differ in
    structure (the code takes other paths at other sizes). `frozen`: module path globs whose
    parameters are set to requires_grad=False first.

    A stack is fitted from the probes of one unit and a trace of the whole stack at the smallest
    sizes (the symbols' skeleton), which must show every layer doing exactly what the probed unit
    did."""
    if spec.layers == 1:
        return _fit_probes(spec, frozen)
    unit = _fit_probes(spec)
    skeleton = spec.symbols.skeleton()
    module = spec.build(skeleton, "cpu", spec.layers)  # tiny, so no need to share weights
    freeze(module, frozen)
    stack, all_called = probe_trace(spec, skeleton, module)
    return None if unit is None else _repeat(unit, stack, all_called, skeleton)


def _fit_probes(spec: ModelSpec, frozen: tuple[str, ...] = ()) -> ShapeFit | None:
    probes = spec.symbols.probes()
    traced = [probe_trace(spec, sizes, probe_module(spec, sizes, frozen)) for sizes in probes]
    traces = [t for t, _ in traced]
    if any(structure(t) != structure(traces[0]) for t in traces[1:]):
        return None
    shapes = [{t.id: t.shape for t in tr.tensors()} for tr in traces]
    weights = [{(c.index, i): w.shape for c in tr.calls for i, w in enumerate(c.weights)} for tr in traces]
    varying = frozenset(
        (o.index, k) for o, twin in zip(traces[0].ops, traces[1].ops, strict=True) for k, v in o.attrs.items()
        if twin.attrs[k] != v
    )  # fmt: skip
    fit = spec.symbols.fit
    flops = {o.index: fit([tr.ops[o.index].flops for tr in traces]) for o in traces[0].ops}
    return ShapeFit(traces[0], _fit_all(shapes, fit), _fit_all(weights, fit), flops, traced[0][1], varying)


def _repeat(block: ShapeFit, stack: Trace, all_called: bool, sizes: dict[str, int]) -> ShapeFit | None:
    """The fit of `stack`, traced at `sizes`, if each of its root's children is a call doing what
    `block` traced (same calls, ops and wiring), so that each tensor takes the fit of its twin in
    the Block, and that fit gives the size the stack really had; else None."""
    bare_block = structure(block.probe)
    root = next(c for c in stack.calls if c.parent is None)
    layers = stack.children(root.index)
    if any(o.call == root.index for o in stack.ops) or not layers:
        return None
    dims: dict[int, tuple[Dim | None, ...]] = {}
    weights: dict[tuple[int, int], tuple[Dim | None, ...]] = {}
    flops: dict[int, Dim | None] = {}
    n_calls, n_ops = len(block.probe.calls), len(block.probe.ops)
    block_dims = [block.dims[t.id] for t in block.probe.tensors()]
    first_op = 0
    for layer in layers:
        calls = stack.calls[layer.index : layer.index + n_calls]
        ops = stack.ops[first_op : first_op + n_ops]
        for i, op in enumerate(ops):
            flops[op.index] = block.flops[i]
        first_op += n_ops
        twin = _rebased(stack, layer.index, calls, ops)
        if twin is None or structure(twin) != bare_block:
            return None
        for mine, fitted in zip(twin.tensors(), block_dims, strict=True):
            if dims.setdefault(mine.id, fitted) != fitted:
                return None
        for c in twin.calls:
            for i in range(len(c.weights)):
                weights[c.index + layer.index, i] = block.weights[c.index, i]
    if any(t.id not in dims for t in stack.tensors()):
        return None
    # layers of the same code can still differ in size (a wider last layer): the stack's own shapes
    # must be what its twins' fits say; the layers share their unit's Dims, so each is worked out once
    values: dict[int, Fraction] = {}

    def fits(fitted: tuple[Dim | None, ...], shape: tuple[int, ...]) -> bool:
        for d, n in zip(fitted, shape, strict=True):
            if d is not None:
                if id(d) not in values:
                    values[id(d)] = d.value(sizes)
                if values[id(d)] != n:
                    return False
        return True

    if any(not fits(dims[i], shape) for i, shape in {t.id: t.shape for t in stack.tensors()}.items()):
        return None
    for c in stack.calls:
        if any(
            (c.index, i) not in weights or not fits(weights[c.index, i], w.shape)
            for i, w in enumerate(c.weights)
        ):
            return None
    varying = frozenset(
        (layer * n_ops + op, key) for layer in range(len(layers)) for op, key in block.varying
    )
    return ShapeFit(stack, dims, weights, flops, all_called, varying)


def _rebased(
    stack: Trace, start: int, calls: tuple[ModuleCall, ...], ops: tuple[OpCall, ...]
) -> Trace | None:
    """The calls and ops of one layer as if the layer were the root: indices and paths relative to
    it, tensor ids kept (they are what maps to the Block's)."""
    if not calls:
        return None
    if any(o.call is None or not start <= o.call < start + len(calls) for o in ops):
        return None
    rebased_calls = tuple(
        replace(
            c,
            index=c.index - start,
            path=c.path.removeprefix(calls[0].path).removeprefix("."),
            parent=None if c.index == start else c.parent - start,  # type: ignore[operator]
            site=None if c.index == start else c.site,  # as the unit's root, called by no model code
        )
        for c in calls
    )
    first = ops[0].index if ops else 0
    rebased_ops = tuple(replace(o, index=o.index - first, call=o.call - start) for o in ops)  # type: ignore[operator]
    adds = tuple(
        replace(
            r,
            op=r.op - first,
            adds=tuple(i - first for i in r.adds),
            branches=tuple(
                Branch(b.output, tuple(c - start for c in b.calls), tuple(i - first for i in b.ops))
                for b in r.branches
            ),
        )
        for r in stack.residual_adds
        if first <= r.op < first + len(ops)
    )
    return replace(
        stack,
        model=calls[0].type,
        inputs=calls[0].inputs,
        outputs=calls[0].outputs,
        calls=rebased_calls,
        ops=rebased_ops,
        residual_adds=adds,
    )


def _fit_all(shapes: list[dict], fit: Callable[[list[int]], Dim | None]) -> dict:
    """key -> fitted dims, from key -> shape in each probe."""
    return {
        key: tuple(fit([s[key][axis] for s in shapes]) for axis in range(len(shape)))
        for key, shape in shapes[0].items()
    }


def derived_trace(spec: ModelSpec, shape_fit: ShapeFit) -> Trace | None:
    """The full-size, named trace of `spec` from the probes' fit, or None where the fit is
    incomplete or some module with parameters was never called (the calls would not count them)."""
    if not (shape_fit.complete and shape_fit.all_called):
        return None
    namer = _Namer(spec, shape_fit)
    if any(namer.value(d).denominator != 1 for d in (*namer.all_dims(), *shape_fit.flops.values())):  # type: ignore[arg-type]
        return None

    def scale(t: TensorMeta) -> TensorMeta:
        done = namer.done.get(t.id)  # a tensor is recorded where it is made and wherever it is used
        return done or namer.tensor(TensorMeta(t.id, namer.shape(shape_fit.dims[t.id]), t.dtype))

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
        replace(c, params=totals[c.path][0], trainable=totals[c.path][1], weights=own[c.path])
        for c in full.calls
    )
    # an argument that differed between the probes (a scale of 1/sqrt(D)) is unknown at full size
    varying = {i for i, _ in shape_fit.varying}
    ops = tuple(
        replace(
            o,
            attrs={k: v for k, v in o.attrs.items() if (o.index, k) not in shape_fit.varying}
            if o.index in varying else o.attrs,
            flops=int(namer.value(shape_fit.flops[o.index])),  # type: ignore[arg-type]
        )
        for o in full.ops
    )  # fmt: skip
    return replace(full, calls=calls, ops=ops, device="probe", config=spec.describe(), **namer.legend())


def _ancestors(path: str) -> list[str]:
    """ "h.0.attn" -> ["h.0.attn", "h.0", "h", ""]: the module and every module holding it."""
    parts = path.split(".") if path else []
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]


def named(trace: Trace, spec: ModelSpec, shape_fit: ShapeFit | None) -> Trace:
    """`trace` with symbolic names on every dimension whose fit gives its size, and the legend."""
    named_trace = replace(trace, config=spec.describe())
    if shape_fit is None or structure(trace) != structure(shape_fit.probe):
        return named_trace
    namer = _Namer(spec, shape_fit)
    named_trace = named_trace.map_tensors(namer.tensor)
    return replace(named_trace, calls=tuple(map(namer.weights, named_trace.calls)), **namer.legend())


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
        return tuple(int(self.value(d)) for d in dims)  # type: ignore[arg-type]

    def symbols(self, dims: tuple[Dim | None, ...], shape: tuple[int, ...]) -> tuple[str, ...] | None:
        if any(d is None or self.value(d) != n for d, n in zip(dims, shape, strict=True)):
            return None
        return tuple(self.name(d) for d in dims)  # type: ignore[arg-type]

    def tensor(self, t: TensorMeta) -> TensorMeta:
        if t.id not in self.done:
            self.done[t.id] = TensorMeta(t.id, t.shape, t.dtype, self.symbols(self.fit.dims[t.id], t.shape))
        return self.done[t.id]

    def weights(self, call: ModuleCall, full_size: bool = False) -> ModuleCall:
        """The call with its weights named; `full_size`: their shapes first scaled from the fit."""
        named_weights = []
        for i, w in enumerate(call.weights):
            dims = self.fit.weights[call.index, i]
            shape = self.shape(dims) if full_size else w.shape
            named_weights.append(replace(w, shape=shape, symbols=self.symbols(dims, shape)))
        return replace(call, weights=tuple(named_weights))

    def legend(self) -> dict[str, dict]:
        """The trace's symbols (name -> value) and their meanings, for the names given so far."""
        values = self.symbol_set.legend(list(self.used.values()), self.sizes)
        return {"symbols": values, "meanings": {n: self.symbol_set.meanings[n] for n in values}}
