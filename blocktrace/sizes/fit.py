"""Shapes at any size, from two small probes.

The model is traced twice on the CPU with tiny sizes whose basis sizes are primes (its SymbolSet's
probes). Every tensor dimension is fitted as a product of basis sizes (SymbolSet.fit) and must agree
with both probes. That fit names the dimension (B, T, 4C, ...) and, evaluated at the requested sizes,
gives its exact size there, so a 70B-class config costs what a toy one does. Parameter counts come
from the fitted weight shapes. Everything here works from the model seam (spec.ModelSpec).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from blocktrace.sizes.symbols import Dim
from blocktrace.tracing.freeze import freeze
from blocktrace.tracing.trace import Site, TensorMeta, Trace
from blocktrace.tracing.tracer import trace

if TYPE_CHECKING:
    from blocktrace.models.spec import ModelSpec


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
                bare((r.stream, r.output, *r.sides)),
                tuple((b.calls, b.ops, bare((b.output,))) for b in r.branches),
            )
            for r in trace.residual_adds
        ),
    )


def _bare_attrs(attrs: Mapping[str, Any]) -> tuple:
    # a float argument may follow the sizes (SDPA's scale=1/sqrt(D)): its name must match, not its value
    if not attrs:
        return ()
    return tuple((k, None if isinstance(v, float) else v) for k, v in attrs.items())


def probe_module(
    spec: ModelSpec, sizes: dict[str, int], frozen: tuple[str, ...] = (), layers: int = 1
) -> nn.Module:
    """One unit of the model (or `layers` of them) at `sizes` on the CPU, every parameter of one
    shape sharing one zero tensor: shapes do not depend on values. A tied parameter stays one
    Parameter. Code we did not write is built on the CPU as it is: its buffers (rotary frequencies,
    masks) hold values it may depend on."""
    if spec.full_size_trace:
        module = spec.build(sizes, "cpu", layers)
        freeze(module, frozen)
        return module
    module = spec.build(sizes, "meta", layers)
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


def fit_probes(spec: ModelSpec, frozen: tuple[str, ...] = (), layers: int = 1) -> ShapeFit | None:
    """The fit of the probes of one unit of `spec` (or of `layers` of them)."""
    probes = spec.symbols.probes()
    traced = [probe_trace(spec, sizes, probe_module(spec, sizes, frozen, layers)) for sizes in probes]
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
    suspects = spec.symbols.floor_constants(spec.sizes)
    if any(_constant_in(fitted, suspects) for fitted in _fit_all(shapes, fit).values()):
        # a size equal in both probes may be a quotient the probes happen to floor alike (C // H,
        # 0 in both where H > C): a probe with the primes reversed moves every such quotient
        sizes = spec.symbols.reversed_probe()
        with warnings.catch_warnings():  # a quotient it makes 0 is the point, not the user's concern
            warnings.simplefilter("ignore")
            check = probe_trace(spec, sizes, probe_module(spec, sizes, frozen, layers))[0]
        same = structure(check) == structure(traces[0])
        shapes.append({t.id: t.shape for t in check.tensors()} if same else {})
        weights.append(
            {(c.index, i): w.shape for c in check.calls for i, w in enumerate(c.weights)} if same else {}
        )
    flops = {o.index: fit([tr.ops[o.index].flops for tr in traces]) for o in traces[0].ops}
    checked = _checked(fit, suspects) if len(shapes) > 2 else fit
    return ShapeFit(
        traces[0], _fit_all(shapes, checked), _fit_all(weights, checked), flops, traced[0][1], varying
    )


def _constant_in(fitted: tuple[Dim | None, ...], suspects: frozenset[int]) -> bool:
    return any(d is not None and not d.powers and d.coeff in suspects for d in fitted)


def _checked(fit: Callable[[list[int]], Dim | None], suspects: frozenset[int]) -> Callable:
    """`fit` of the two probes, where a suspect constant must also be what the third probe gave
    (None: the third probe did not run the same code), and is never 0: a size the probes made vanish
    is a quotient floored, whatever the third probe says (Hkv // H stays 0 where Hkv = 2 * x > H)."""

    def checked(values: list[int | None]) -> Dim | None:
        dim = fit(values[:2])  # type: ignore[arg-type]
        suspect = dim is not None and not dim.powers and dim.coeff in suspects
        if suspect and (dim.coeff == 0 or values[2:] != [dim.coeff]):  # type: ignore[union-attr]
            return None
        return dim

    return checked


def _fit_all(shapes: list[dict], fit: Callable[[list], Dim | None]) -> dict:
    """key -> fitted dims, from key -> shape in each probe (a check probe's shapes may be missing)."""
    return {
        key: tuple(fit([s[key][axis] if key in s else None for s in shapes]) for axis in range(len(shape)))
        for key, shape in shapes[0].items()
    }
