"""A stack of layers fitted from the probes of one layer: the layers are found as the largest run of
twin calls, each must match the probed unit, and the fit of the unit is mapped onto every layer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING

from blocktrace.sizes.fit import ShapeFit, fit_probes, probe_trace, structure
from blocktrace.sizes.symbols import Dim
from blocktrace.tracing.freeze import freeze
from blocktrace.tracing.records import evolve
from blocktrace.tracing.trace import Branch, ModuleCall, OpCall, Trace

if TYPE_CHECKING:
    from blocktrace.models.spec import ModelSpec


def fit_shapes(spec: ModelSpec, frozen: tuple[str, ...] = ()) -> ShapeFit | None:
    """Fit every dimension of `spec`'s trace from the probes; None if the probes differ in
    structure (the code takes other paths at other sizes). `frozen`: module path globs whose
    parameters are set to requires_grad=False first.

    A stack is fitted from the probes of one unit and a trace of the whole stack at the smallest
    sizes (the symbols' skeleton), which must show every layer doing exactly what the probed unit
    did."""
    if spec.layers == 1:
        return fit_probes(spec, frozen)
    unit = fit_probes(spec)
    skeleton = spec.symbols.skeleton()
    module = spec.build(skeleton, "cpu", spec.layers)  # tiny, so no need to share weights
    freeze(module, frozen)
    stack, all_called = probe_trace(spec, skeleton, module)
    return None if unit is None else repeat(unit, stack, all_called, skeleton, spec.layers)


def repeat(
    unit: ShapeFit, stack: Trace, all_called: bool, sizes: dict[str, int], layers: int
) -> ShapeFit | None:
    """The fit of `stack`, traced at `sizes`, from the fit of its `unit`; else None.

    The stack repeats one layer `layers` times as consecutive calls of one parent, each doing the
    same thing (same calls, ops and wiring). Either the unit is that layer (a stack of Blocks), or
    the unit is the whole model with one layer (a transformers model: embeddings and a head around
    the layers), or with one layer in each of two runs (an encoder-decoder's encoder and decoder,
    the second run of any length). Each of the stack's tensors takes the fit of its twin in the
    unit, and that fit must give the size the stack really had."""
    bare_unit = structure(unit.probe)
    run = _layer_run(stack, layers)
    twins = None if run is None else _twins(stack, run)
    if run is None or twins is None:
        return None
    first_layer, first_structure, layer_maps = twins
    n_calls, n_ops = len(run[0][0]), len(run[0][1])
    first_call = run[0][0][0].index
    stages: list[_Stage]
    if first_structure == bare_unit:  # the unit is one layer; the stack has nothing else
        if any(c.index < first_call for c in stack.calls[1:]) or len(stack.ops) != layers * n_ops:
            return None
        stages = [(layer_maps, _offset(first_call, n_calls, layers, 0), _offset(0, n_ops, layers, 0))]
        twin_tensors = first_layer.tensors()
    else:  # the unit is the model with one layer: the stack without its layers but the first
        collapsed = _collapse(stack, run, layer_maps)
        if collapsed is None:
            return None
        current, stages = collapsed[0], [(layer_maps, *collapsed[1:])]
        if structure(current) != bare_unit:  # an encoder-decoder: the other run, of its own length
            other = _layer_run(current, None)
            again = None if other is None else _twins(current, other)
            collapsed = None if other is None or again is None else _collapse(current, other, again[2])
            if again is None or collapsed is None or structure(collapsed[0]) != bare_unit:
                return None
            current = collapsed[0]
            stages.append((again[2], *collapsed[1:]))
        twin_tensors = current.tensors()
    fit_of = {mine.id: unit.dims[u.id] for mine, u in zip(twin_tensors, unit.probe.tensors(), strict=True)}
    dims = _twin_dims(stack, stages, fit_of)
    if dims is None:
        return None

    def call_of(i: int) -> int:
        for _, of, _ in stages:
            i = of(i)
        return i

    def op_of(i: int) -> int:
        for _, _, of in stages:
            i = of(i)
        return i

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


_Layers = list[tuple[tuple[ModuleCall, ...], tuple[OpCall, ...]]]
# one run of layers collapsed to its first: each layer's tensor ids -> its twin's in the first
# layer, and the call and op indices -> those of the collapsed trace
_Stage = tuple[list[dict[int, int]], Callable[[int], int], Callable[[int], int]]


def _twins(trace: Trace, run: _Layers) -> tuple[Trace, tuple, list[dict[int, int]]] | None:
    """The run's first layer as a trace of its own with its structure, and each layer's tensor ids
    -> its twin's in the first layer; None where the layers differ."""
    rebased = [_rebased(trace, calls, ops) for calls, ops in run]
    twins = [t for t in rebased if t is not None]
    if len(twins) != len(rebased):
        return None
    first = structure(twins[0])  # worked out once: each other layer is compared with it
    if any(structure(t) != first for t in twins[1:]):
        return None
    first_ids = [t.id for t in twins[0].tensors()]
    layer_maps = [dict(zip((t.id for t in twin.tensors()), first_ids, strict=True)) for twin in twins]
    return twins[0], first, layer_maps


def _collapse(
    trace: Trace, run: _Layers, layer_maps: list[dict[int, int]]
) -> tuple[Trace, Callable[[int], int], Callable[[int], int]] | None:
    """`trace` without the run's layers but the first, what the dropped layers made and what
    follows them used (the last layer's output) renamed as its twin in the first layer, which is
    what the unit's head reads; with the maps of call and op indices to the collapsed trace's."""
    layers, n_calls, n_ops = len(run), len(run[0][0]), len(run[0][1])
    first_call, first_op = run[0][0][0].index, run[0][1][0].index if run[0][1] else 0
    collapsed = _without(
        trace,
        first_call + n_calls,
        first_call + layers * n_calls,
        first_op + n_ops,
        first_op + layers * n_ops,
    )
    if collapsed is None:
        return None
    renamed: dict[int, int] = {}
    for layer_map in layer_maps[1:]:
        for mine, first in layer_map.items():
            if mine not in layer_maps[0]:
                renamed.setdefault(mine, first)
    collapsed = collapsed.map_tensors(lambda t: replace(t, id=renamed.get(t.id, t.id)))
    return (
        collapsed,
        _offset(first_call, n_calls, layers, first_call),
        _offset(first_op, n_ops, layers, first_op),
    )


def _twin_dims(
    stack: Trace,
    stages: list[_Stage],
    fit_of: dict[int, tuple[Dim | None, ...]],
) -> dict[int, tuple[Dim | None, ...]] | None:
    """Each of the stack's tensors -> the fit of its twin, followed through each collapsed run: a
    tensor of layer k is fitted as its twin in the first layer is, and every layer it is in (a
    layer's output is the next one's input) must agree; None where they do not, or one has none."""
    found: dict[tuple[int, int], tuple[Dim | None, ...] | None] = {}
    twins_in: list[dict[int, set[int]]] = []  # per stage: a tensor id -> its twins in every layer
    for layer_maps, _, _ in stages:
        twins_in.append({})
        for m in layer_maps:
            for mine, first in m.items():
                twins_in[-1].setdefault(mine, set()).add(first)

    def fit(tid: int, stage: int) -> tuple[Dim | None, ...] | None:
        if stage == len(stages):
            return fit_of.get(tid)
        if (tid, stage) not in found:
            fits = [fit(t, stage + 1) for t in twins_in[stage].get(tid, {tid})]
            # the layers share their twins' tuples of Dims: compared by identity before by value
            agree = all(f is fits[0] or f == fits[0] for f in fits[1:])
            found[tid, stage] = fits[0] if agree else None
        return found[tid, stage]

    dims = {t.id: fit(t.id, 0) for t in stack.tensors()}
    if any(d is None for d in dims.values()):
        return None
    return dims  # type: ignore[return-value]


def _layer_run(stack: Trace, layers: int | None) -> _Layers | None:
    """The run of `layers` consecutive calls of one parent, of one type, each with the calls inside
    it and the ops they ran (none in between): (calls, ops) per layer. Of several such runs, the one
    of the largest calls: BERT's three embeddings are a run too, and come before its layers.
    `layers` None: a run of any length from 2, as long as the calls of its type there go."""
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
        for run in _candidates(children, layers):
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


def _candidates(children: list[ModuleCall], layers: int | None) -> list[list[ModuleCall]]:
    """The runs of consecutive children to try: each `layers` long, or (None) each longest run of
    one type, of 2 or more."""
    if layers is not None:
        return [children[start : start + layers] for start in range(len(children) - layers + 1)]
    runs: list[list[ModuleCall]] = []
    for c in children:
        if runs and runs[-1][-1].type == c.type:
            runs[-1].append(c)
        else:
            runs.append([c])
    return [run for run in runs if len(run) > 1]


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
        evolve(
            c,
            index=c.index - start,
            path=c.path.removeprefix(calls[0].path).removeprefix("."),
            parent=None if c.index == start or c.parent is None else c.parent - start,
            site=None if c.index == start else c.site,  # as the unit's root, called by no model code
        )
        for c in calls
    )
    first = ops[0].index if ops else 0
    rebased_ops = tuple(
        evolve(o, index=o.index - first, call=None if o.call is None else o.call - start) for o in ops
    )
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

    def call(i: int) -> int:
        if i < call_lo:
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
            evolve(c, index=call(c.index), parent=None if c.parent is None else call(c.parent))
            for c in stack.calls
            if not call_lo <= c.index < call_hi
        )
        ops = tuple(
            evolve(o, index=op(o.index), call=None if o.call is None else call(o.call))
            for o in stack.ops
            if not op_lo <= o.index < op_hi
        )
        adds = tuple(
            replace(
                r,
                op=op(r.op),
                adds=tuple(map(op, r.adds)),
                branches=tuple(
                    Branch(b.output, tuple(map(call, b.calls)), tuple(map(op, b.ops))) for b in r.branches
                ),
            )
            for r in stack.residual_adds
            if not op_lo <= r.op < op_hi
        )
    except KeyError:
        return None
    return replace(stack, calls=calls, ops=ops, residual_adds=adds)
