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

from blocktrace.models.spec import ModelSpec
from blocktrace.sizes.symbols import Dim
from blocktrace.tracing.freeze import freeze
from blocktrace.tracing.trace import Branch, ModuleCall, OpCall, Site, TensorMeta, Trace, Weight
from blocktrace.tracing.tracer import trace


@dataclass(frozen=True)
class ShapeFit:
    probe: Trace  # the trace of the first probe
    dims: dict[int, tuple[Dim | None, ...]]  # tensor id -> one fitted Dim per axis (None: no fit)
    weights: dict[tuple[int, int], tuple[Dim | None, ...]]  # (call, weight) -> the same, per axis
    flops: dict[int, Dim | None]  # op index -> its FLOPs, fitted as a dim is (None: no fit)
    all_called: bool  # every module with parameters of its own was called: the calls count them all
    varying: frozenset[tuple[int, str]] = frozenset()  # (op, attr) whose value differs between probes

    @property
    def shapes_complete(self) -> bool:
        """Whether every dimension, of tensors and of weights, has a fit: enough to name a trace."""
        fitted = (*self.dims.values(), *self.weights.values())
        return all(d is not None for dims in fitted for d in dims)

    @property
    def complete(self) -> bool:
        """Whether every dimension and every op's FLOPs have a fit: enough to derive a trace."""
        return self.shapes_complete and all(f is not None for f in self.flops.values())


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
    if not attrs:
        return ()
    return tuple((k, None if isinstance(v, float) else v) for k, v in attrs.items())


def probe_module(spec: ModelSpec, sizes: dict[str, int], frozen: tuple[str, ...] = ()) -> nn.Module:
    """One unit of the model at `sizes` on the CPU, every parameter of one shape sharing one zero
    tensor: shapes do not depend on values. A tied parameter stays one Parameter. Code we did not
    write is built on the CPU as it is: its buffers (rotary frequencies, masks) hold values it may
    depend on."""
    if spec.full_size_trace:
        module = spec.build(sizes, "cpu", 1)
        freeze(module, frozen)
        return module
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
    return None if unit is None else _repeat(unit, stack, all_called, skeleton, spec.layers)


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


def _repeat(
    unit: ShapeFit, stack: Trace, all_called: bool, sizes: dict[str, int], layers: int
) -> ShapeFit | None:
    """The fit of `stack`, traced at `sizes`, from the fit of its `unit`; else None.

    The stack repeats one layer `layers` times as consecutive calls of one parent, each doing the
    same thing (same calls, ops and wiring). Either the unit is that layer (a stack of Blocks), or
    the unit is the whole model with one layer (a transformers model: embeddings and a head around
    the layers). Each of the stack's tensors takes the fit of its twin in the unit, and that fit must
    give the size the stack really had."""
    bare_unit = structure(unit.probe)
    run = _layer_run(stack, layers)
    if run is None:
        return None
    twins = [_rebased(stack, calls, ops) for calls, ops in run]
    if any(t is None for t in twins):
        return None
    bare_layer = structure(twins[0])  # type: ignore[arg-type]
    if any(structure(t) != bare_layer for t in twins[1:]):  # type: ignore[arg-type]
        return None
    n_calls, n_ops = len(run[0][0]), len(run[0][1])
    first_call, first_op = run[0][0][0].index, run[0][1][0].index if run[0][1] else 0
    # a tensor of layer k is fitted as its twin in the first layer is
    layer_maps = [
        {mine.id: first.id for mine, first in zip(t.tensors(), twins[0].tensors(), strict=True)}  # type: ignore[union-attr]
        for t in twins
    ]
    if bare_layer == bare_unit:  # the unit is one layer; the stack has nothing else
        if any(c.index < first_call for c in stack.calls[1:]) or len(stack.ops) != layers * n_ops:
            return None
        call_of, op_of = _offset(first_call, n_calls, layers, 0), _offset(0, n_ops, layers, 0)
        twin_tensors = twins[0].tensors()  # type: ignore[union-attr]
    else:  # the unit is the model with one layer: the stack without its layers but the first
        collapsed = _without(
            stack,
            first_call + n_calls,
            first_call + layers * n_calls,
            first_op + n_ops,
            first_op + layers * n_ops,
        )
        if collapsed is None:
            return None
        # what the dropped layers made and what follows them used (the last layer's output) is
        # renamed as its twin in the first layer, which is what the unit's head reads
        renamed: dict[int, int] = {}
        for layer_map in layer_maps[1:]:
            for mine, first in layer_map.items():
                if mine not in layer_maps[0]:
                    renamed.setdefault(mine, first)
        collapsed = collapsed.map_tensors(lambda t: replace(t, id=renamed.get(t.id, t.id)))
        if structure(collapsed) != bare_unit:
            return None
        call_of = _offset(first_call, n_calls, layers, first_call)
        op_of = _offset(first_op, n_ops, layers, first_op)
        twin_tensors = collapsed.tensors()
    fit_of = {mine.id: unit.dims[u.id] for mine, u in zip(twin_tensors, unit.probe.tensors(), strict=True)}
    dims: dict[int, tuple[Dim | None, ...]] = {}
    for layer_map in layer_maps:
        for mine, first in layer_map.items():
            if dims.setdefault(mine, fit_of[first]) != fit_of[first]:
                return None
    for t in stack.tensors():
        if t.id not in dims:
            if t.id not in fit_of:
                return None
            dims[t.id] = fit_of[t.id]
    weights = {
        (c.index, i): unit.weights[call_of(c.index), i] for c in stack.calls for i in range(len(c.weights))
    }
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
        if any(not fits(weights[c.index, i], w.shape) for i, w in enumerate(c.weights)):
            return None
    varying = frozenset((o.index, key) for o in stack.ops for i, key in unit.varying if i == op_of(o.index))
    flops = {o.index: unit.flops[op_of(o.index)] for o in stack.ops}
    return ShapeFit(stack, dims, weights, flops, all_called, varying)


def _layer_run(stack: Trace, layers: int) -> list[tuple[tuple[ModuleCall, ...], tuple[OpCall, ...]]] | None:
    """The run of `layers` consecutive calls of one parent, of one type, each with the calls inside
    it and the ops they ran (none in between): (calls, ops) per layer. Of several such runs, the one
    of the largest calls: BERT's three embeddings are a run too, and come before its layers."""
    runs = []
    # calls are numbered in the order they began, so a call's subtree is the calls up to the first
    # one not below it
    ends = [len(stack.calls)] * len(stack.calls)
    open_calls: list[int] = []
    for c in stack.calls:
        while open_calls and open_calls[-1] != c.parent:
            ends[open_calls.pop()] = c.index
        open_calls.append(c.index)
    ops_of: dict[int, list[OpCall]] = {}
    for o in stack.ops:
        if o.call is not None:
            ops_of.setdefault(o.call, []).append(o)
    for parent in stack.calls:
        children = stack.children(parent.index)
        for start in range(len(children) - layers + 1):
            run = children[start : start + layers]
            if len({c.type for c in run}) != 1:
                continue
            found = []
            for layer in run:
                end = ends[layer.index]
                ops = tuple(sorted((o for i in range(layer.index, end) for o in ops_of.get(i, ())),
                                   key=lambda o: o.index))  # fmt: skip
                if ops and ops[-1].index - ops[0].index + 1 != len(ops):
                    break
                found.append((stack.calls[layer.index : end], ops))
            else:
                if all(len(c) == len(found[0][0]) and len(o) == len(found[0][1]) for c, o in found):
                    runs.append(found)
    return max(runs, key=lambda run: len(run[0][0]), default=None)


def _offset(start: int, size: int, layers: int, base: int) -> Callable[[int], int]:
    """Index in the stack -> index in the unit, for calls or ops: those before the layers stay, layer
    k's take their twin's in the unit's layer (which starts at `base`), and those after the layers
    move back by the layers the unit does not have."""

    def of(i: int) -> int:
        if i < start:
            return i
        if i < start + layers * size:
            return base + (i - start) % size
        return i - (layers - 1) * size

    return of


def _rebased(stack: Trace, calls: tuple[ModuleCall, ...], ops: tuple[OpCall, ...]) -> Trace | None:
    """The calls and ops of one layer as if the layer were the root: indices and paths relative to
    it, tensor ids kept (they are what maps to the Block's)."""
    if not calls:
        return None
    start = calls[0].index
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


def _without(stack: Trace, call_lo: int, call_hi: int, op_lo: int, op_hi: int) -> Trace | None:
    """`stack` without the calls [call_lo, call_hi) and the ops [op_lo, op_hi), renumbered as if they
    had never run; None if a call or op kept refers to one dropped."""
    calls_gone, ops_gone = call_hi - call_lo, op_hi - op_lo

    def call(i: int | None) -> int | None:
        if i is None or i < call_lo:
            return i
        if i < call_hi:
            raise KeyError(i)
        return i - calls_gone

    def op(i: int) -> int:
        if i < op_lo:
            return i
        if i < op_hi:
            raise KeyError(i)
        return i - ops_gone

    try:
        calls = tuple(
            replace(c, index=call(c.index), parent=call(c.parent))
            for c in stack.calls
            if not call_lo <= c.index < call_hi
        )
        ops = tuple(
            replace(o, index=op(o.index), call=call(o.call))
            for o in stack.ops
            if not op_lo <= o.index < op_hi
        )
        adds = tuple(
            replace(
                r,
                op=op(r.op),
                adds=tuple(map(op, r.adds)),
                branches=tuple(
                    Branch(b.output, tuple(call(c) for c in b.calls), tuple(map(op, b.ops)))  # type: ignore[misc]
                    for b in r.branches
                ),
            )
            for r in stack.residual_adds
            if not op_lo <= r.op < op_hi
        )
    except KeyError:
        return None
    return replace(stack, calls=calls, ops=ops, residual_adds=adds)


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
    if shape_fit is None:
        return named_trace
    if structure(trace) != structure(shape_fit.probe):
        # the probes traced one layer of a stack, or other code than ran at full size
        stack_fit = (
            _repeat(shape_fit, trace, shape_fit.all_called, spec.sizes, spec.layers)
            if spec.layers > 1
            else None
        )
        if stack_fit is None:
            return named_trace
        shape_fit = stack_fit
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
