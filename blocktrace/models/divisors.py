"""The divisor search of a `--module` factory: which of its sizes must divide which (C by H for the
head dim) for two small probes to run the code and name every dimension. Relations are proposed from
what the code divides by, then from the requested sizes; the fewest that name everything are kept,
and one note says what stays unnamed."""

from __future__ import annotations

import warnings
from dataclasses import replace
from itertools import combinations, permutations
from typing import TYPE_CHECKING

from blocktrace.errors import ConfigError, TraceError

if TYPE_CHECKING:
    from blocktrace.models.user_module import FactorySpec
    from blocktrace.sizes.fit import ShapeFit

_MAX_PROBE_ELEMENTS = 2**22  # of a probe's parameters and inputs together: 16 MiB at float32
_MAX_TRIES = 20  # pairs of probes tried for the divisibility relations, at each step


def with_divisors(spec: FactorySpec) -> FactorySpec:
    """The spec with the fewest "divides" relations under which the probes run and fit: none, then
    each one relation, then each two. The relations are tried in this order: those the code divides
    by (C by H where a run at the requested sizes has a dimension C / H), those that hold between the
    requested sizes, then equal sizes either way (H by Hkv where both are 12); all at odd probe sizes,
    then at even ones (rotary embeddings halve the head). Where no relations make every size fit (a
    ViT's T = G^2 + 1 is no product of sizes), the first under which the probes run names what fits;
    where none do, the spec as it is, and the full-size trace is drawn with its numbers; either way
    one note says what goes unnamed."""
    divisible = [(name, d) for name, divisors in _relations(spec.requested).items() for d in divisors]
    pairs = list(dict.fromkeys([*_code_relations(spec), *divisible, *_equal(spec.requested)]))
    running: FactorySpec | None = None
    running_fit: ShapeFit | None = None
    for step in (1, 2):
        if running is not None:
            break  # the code ran at odd sizes: even ones would not name more
        tries = 0
        for size in range(3):
            for chosen in combinations(pairs, size):
                if not _acyclic(chosen):
                    continue
                divides: dict[str, tuple[str, ...]] = {}
                for name, d in chosen:
                    divides[name] = (*divides.get(name, ()), d)
                trial = replace(spec, divides=divides, step=step)
                if not _integral(trial):
                    continue
                tries += 1
                if tries > _MAX_TRIES:
                    break
                fitted = _probe_fit(trial)
                if fitted is not None and fitted.shapes_complete:
                    return trial
                if fitted is not None and running is None:
                    running, running_fit = trial, fitted
    if running is None or running_fit is None:
        return spec  # no probe ran: the full-size run says why, or draws its numbers
    return replace(running, notes=(_unnamed(running, running_fit, pairs),))


def _unnamed(spec: FactorySpec, fitted: ShapeFit, pairs: list[tuple[str, str]]) -> str:
    """A line saying which dimension goes unnamed and why, where the search named not all."""
    tried = ", ".join(f"{a} by {b}" for a, b in pairs[:6]) or "none"
    sizes = spec.symbols.probes()[0]
    found = next(((c, t) for c in fitted.probe.calls for t in c.outputs if None in fitted.dims[t.id]), None)
    if found is None:  # only weights, or values no call returns
        where = "some weights or inner values"
    else:
        call, t = found
        axes = ", ".join("?" if d is None else spec.symbols.name(d, sizes) for d in fitted.dims[t.id])
        where = f"{call.path or '(root)'}'s output ({axes}) and others"
    return (
        f"--module {spec.target}: {where} are shown as "
        "numbers: no product of the factory's sizes gives them in both probes under any relation "
        f"tried (divisibility tried: {tried})"
    )


def _acyclic(chosen: tuple[tuple[str, str], ...]) -> bool:
    """Whether no size is, through the chosen relations, a multiple of itself (equal sizes relate
    either way, never both)."""
    edges: dict[str, set[str]] = {}
    for a, b in chosen:
        edges.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: frozenset[str]) -> bool:
        return any(
            n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ())
        )

    return not any(reaches(a, a, frozenset()) for a in edges)


def _code_relations(spec: FactorySpec) -> list[tuple[str, str]]:
    """The relations the code divides by: each dimension of a run at the requested sizes on the meta
    device (a view's head dim, a split's size) that is one requested size over another, C / H = 64,
    even where it equals a requested size (C / H = T = 8). None where the meta device cannot run it."""
    import torch

    from blocktrace.tracing.tracer import trace

    requested = spec.requested
    try:
        module, args, kwargs = spec._make(spec.values(spec.sizes), "meta")
        with torch.no_grad():
            traced = trace(module, args, kwargs)
    except Exception:  # any failure of the user's code here only means no evidence
        return []
    dims = dict.fromkeys(n for t in traced.tensors() for n in t.shape if n > 1)
    return [
        (a, b)
        for n in dims
        for a, b in permutations(requested, 2)
        if requested[b] > 1 and requested[a] == n * requested[b]
    ]


def _equal(requested: dict[str, int]) -> list[tuple[str, str]]:
    """Pairs of equal sizes, either way: H = Hkv where the code groups heads by H // Hkv."""
    return [(a, b) for a, b in permutations(requested, 2) if requested[a] == requested[b] > 1]


def _integral(spec: FactorySpec) -> bool:
    try:
        spec.sizes  # noqa: B018  (the relations must hold at the requested sizes)
    except ConfigError:
        return False
    return True


def _relations(requested: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """For each size, the other sizes that divide it at the requested values and divide no other of
    its divisors (H for C, not Hkv where Hkv divides H); sizes of 1 divide everything and are left out."""
    found = {}
    for name, value in requested.items():
        divisors = [d for d, v in requested.items() if d != name and 1 < v < value and value % v == 0]
        # equal sizes (B = Hkv = 2) do not hide each other: which one it divides by is for the probes
        direct = [
            d
            for d in divisors
            if not any(requested[o] != requested[d] and requested[o] % requested[d] == 0 for o in divisors)
        ]
        if direct:
            found[name] = tuple(direct)
    return found


def _probe_fit(spec: FactorySpec) -> ShapeFit | None:
    """The probes' fit, or None where they fail, differ in structure, or would be too big to be cheap."""
    from blocktrace.sizes.fit import fit_probes

    with warnings.catch_warnings():  # a trial's sizes may leave a weight empty: the search's concern
        warnings.simplefilter("ignore")
        if any(_elements(spec, probe) > _MAX_PROBE_ELEMENTS for probe in spec.symbols.probes()):
            return None  # sizes multiplied up (an image of G * P pixels a side): not a cheap probe
        try:
            return fit_probes(spec)
        except (ConfigError, TraceError):
            return None


def _elements(spec: FactorySpec, sizes: dict[str, int]) -> int:
    """Elements of the module's parameters and inputs at `sizes`, built on the meta device (free);
    0 where the meta device cannot build it (the probe itself will tell)."""
    try:
        module, args, kwargs = spec._make(sizes, "meta")
    except (ConfigError, TraceError):
        return 0
    tensors = [t for t in (*args, *kwargs.values()) if hasattr(t, "numel")]
    return sum(p.numel() for p in module.parameters()) + sum(t.numel() for t in tensors)
