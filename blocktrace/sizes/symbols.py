"""Names for dimensions, decided from structure rather than from values.

A model declares its size symbols once, as a `SymbolSet`: the independent sizes (the basis: B, T,
Hkv, G, D, ...) each with its meaning and its sizes in two probes, and the composite names a
reader expects (C = Hkv * G * D). A dimension is fitted as coeff * product of basis sizes from
probe traces whose basis sizes are distinct primes: the exponent of each basis size is read off
the prime factorisation, and the second probe must confirm the fit. So (B, T, 4C) stays (B, T, 4C)
even when the real T and C are both 1024. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from itertools import permutations, product


@dataclass(frozen=True)
class Symbol:
    """One independent size of a model."""

    name: str  # "B", "T", "D", ...
    meaning: str  # for the legend: "batch", "head dim, C / H"
    primes: tuple[int, int]  # its size in each probe is `step` times one of these: distinct primes
    step: int = 1  # a factor every size has: D is even for rotary embeddings, so 2 * prime
    by_value: bool = False  # written as its value inside a name: the MLP ratio r makes "4C"

    def probe(self, i: int) -> int:
        return self.step * self.primes[i]


@dataclass(frozen=True)
class Composite:
    """A name for a product of basis sizes, used wherever that product divides a dimension."""

    name: str  # "C"
    meaning: str  # "n_embd"
    parts: tuple[tuple[str, int], ...]  # (("Hkv", 1), ("G", 1), ("D", 1))


@dataclass(frozen=True)
class Dim:
    """coeff * prod(basis[s] ** e for s, e in powers)."""

    coeff: Fraction
    powers: tuple[tuple[str, int], ...]  # in basis order, exponents != 0

    def value(self, sizes: dict[str, int]) -> Fraction:
        v = self.coeff
        for s, e in self.powers:
            v *= Fraction(sizes[s]) ** e
        return v


@dataclass(frozen=True)
class SymbolSet:
    """The size symbols of one model: its basis, the composite names, and the order of the legend."""

    basis: tuple[Symbol, ...]
    composites: tuple[Composite, ...] = ()  # tried in order: C before H, as C = H * D
    order: tuple[str, ...] = ()  # legend order; symbols not listed follow in declaration order
    floors: bool = False  # the sizes are independent parameters the code may divide itself (C // H)

    def __post_init__(self) -> None:
        for i in (0, 1):
            primes = [s.primes[i] for s in self.basis]
            steps = {p for s in self.basis if s.step > 1 for p in _prime_factors(s.step)}
            if len(set(primes)) != len(primes) or steps & set(primes):
                raise ValueError(f"probe {i}: the basis primes must be distinct and share no step factor")

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.basis)

    @cached_property
    def meanings(self) -> dict[str, str]:
        return {s.name: s.meaning for s in self.basis} | {c.name: c.meaning for c in self.composites}

    def probes(self) -> tuple[dict[str, int], dict[str, int]]:
        """The basis sizes of the two probes."""
        return ({s.name: s.probe(0) for s in self.basis}, {s.name: s.probe(1) for s in self.basis})

    def reversed_probe(self) -> dict[str, int]:
        """The first probe's primes handed out in reverse order: every size the same or its
        neighbour, but each floor quotient of two sizes moves (a // b > 0 becomes 0, 0 becomes > 0)."""
        ranked = sorted(self.basis, key=lambda s: s.primes[0])
        return {s.name: s.step * t.primes[0] for s, t in zip(ranked, reversed(ranked), strict=True)}

    def floor_constants(self, sizes: dict[str, int]) -> frozenset[int]:
        """The constants a floor quotient of two sizes (C // H, with C no multiple of H) gives in both
        probes and not at `sizes`: a dim fitted as one of them may be that quotient, not a constant.
        None where the sizes are declared products (`floors` unset): no code divides them unevenly."""
        if not self.floors:
            return frozenset()
        probes = [self.values(p) for p in self.probes()]
        wanted = self.values(sizes)
        found = set()
        for a, b in permutations(wanted, 2):
            quotients = {p[a] // p[b] for p in probes}
            if len(quotients) == 1 and wanted[a] // wanted[b] not in quotients:
                found |= quotients
        return frozenset(found)

    def skeleton(self) -> dict[str, int]:
        """The smallest sizes: a deep stack's structure at no cost."""
        return {s.name: s.step for s in self.basis}

    def values(self, sizes: dict[str, int]) -> dict[str, int]:
        """Every symbol's value at `sizes`, composites included, in legend order."""
        found = dict(sizes)
        for c in self.composites:
            found[c.name] = math.prod(sizes[s] ** e for s, e in c.parts)
        ordered = [n for n in self.order if n in found] + [n for n in found if n not in self.order]
        return {n: found[n] for n in ordered}

    # --- fitting ------------------------------------------------------------------------------
    def fit(self, values: list[int]) -> Dim | None:
        """The Dim that gives values[i] under probe i for every i, or None if there is no single one.

        A dim equal in every probe is a constant. Otherwise each basis size's exponent is at most how
        often its prime divides the first probe's value; a constant factor may share a prime with a
        size (3 * r when Hkv is 3), so every split is tried and exactly one must fit every probe.
        Worked out once per list of values: a trace's tensors repeat a few sizes thousands of times.
        """
        key = tuple(values)
        if key not in self._fits:
            self._fits[key] = self._fit(values)
        return self._fits[key]

    @cached_property
    def _fits(self) -> dict[tuple[int, ...], Dim | None]:
        return {}

    def _fit(self, values: list[int]) -> Dim | None:
        probes = self.probes()
        first, sizes = values[0], probes[0]
        if all(v == first for v in values):
            return Dim(Fraction(first), ())
        if first <= 0:
            return None
        ranges = [range(_multiplicity(first, s.primes[0]) + 1) for s in self.basis]
        found = []
        for exponents in product(*ranges):
            powers = tuple((s, e) for s, e in zip(self.names, exponents, strict=True) if e)
            unit = Dim(Fraction(1), powers)
            dim = Dim(Fraction(first) / unit.value(sizes), powers)
            if all(dim.value(p) == v for v, p in zip(values, probes, strict=True)):
                found.append(dim)
        return found[0] if len(found) == 1 else None

    # --- naming -------------------------------------------------------------------------------
    def factors(self, dim: Dim) -> tuple[list[str], dict[str, int], bool]:
        """The dim's symbols with repeats, composites first (Hkv*G*D is "C"); the powers of the
        symbols written by value (the MLP ratio); and whether any power is negative (no name then)."""
        powers = dict(dim.powers)
        by_value = {s.name: powers.pop(s.name) for s in self.basis if s.by_value and s.name in powers}
        found: list[str] = []
        for c in self.composites:
            while all(powers.get(s, 0) >= e for s, e in c.parts):
                found.append(c.name)
                for s, e in c.parts:
                    powers[s] -= e
        found += [s for s in self.names for _ in range(powers.get(s, 0))]
        return found, by_value, any(e < 0 for e in powers.values())

    def name(self, dim: Dim, sizes: dict[str, int]) -> str:
        """E.g. "B", "4C", "Hkv*D", "D/2", "T^2"; a by-value symbol shows as its value."""
        factors, by_value, negative = self.factors(dim)
        if negative:
            value = dim.value(sizes)
            return str(value.numerator) if value.denominator == 1 else str(value)
        coeff = dim.coeff
        for s, e in by_value.items():
            coeff *= Fraction(sizes[s]) ** e
        term = _power_product(factors)
        if not term:
            return str(coeff)
        if coeff == 1:
            return term
        if coeff.denominator == 1:
            return f"{coeff.numerator}{term}" if len(factors) == 1 else f"{coeff.numerator}*{term}"
        if coeff.numerator == 1:
            return f"{term}/{coeff.denominator}"
        return f"{coeff.numerator}*{term}/{coeff.denominator}"

    def legend(self, dims: list[Dim], sizes: dict[str, int]) -> dict[str, int]:
        """Symbol -> value for every symbol the given dims are named with, in legend order."""
        used = set()
        for d in dims:
            factors, _, negative = self.factors(d)
            if not negative:
                used.update(factors)
        return {n: v for n, v in self.values(sizes).items() if n in used}


def _power_product(factors: list[str]) -> str:
    parts: list[str] = []
    for f in dict.fromkeys(factors):
        n = factors.count(f)
        parts.append(f if n == 1 else f"{f}^{n}")
    return "*".join(parts)


def _multiplicity(value: int, prime: int) -> int:
    e = 0
    while value % prime == 0:
        value //= prime
        e += 1
    return e


def _prime_factors(n: int) -> set[int]:
    found, p = set(), 2
    while n > 1:
        while n % p == 0:
            found.add(p)
            n //= p
        p += 1
    return found
