"""Names for dimensions, decided from structure rather than from values.

A dimension is fitted as coeff * product of basis sizes (B, T, Hkv, G, D, r) from probe traces whose
basis sizes are distinct primes (D is twice a prime, as rotary needs it even): the exponent of each
basis size is read off the prime factorisation, and a second probe with other primes must confirm
the fit. So (B, T, 4C) stays (B, T, 4C) even when the real T and C are both 1024. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import product

BASIS = ("B", "T", "Hkv", "G", "D", "r")
# Composite names, tried in order: C = H * D = Hkv * G * D, H = Hkv * G.
COMPOSITES: tuple[tuple[str, dict[str, int]], ...] = (
    ("C", {"Hkv": 1, "G": 1, "D": 1}),
    ("H", {"Hkv": 1, "G": 1}),
)
MEANINGS = {
    "B": "batch",
    "T": "sequence length",
    "C": "n_embd",
    "H": "n_head",
    "Hkv": "n_kv_head",
    "G": "n_head / n_kv_head",
    "D": "head dim, C / H",
}
# Basis sizes of the probes: distinct primes (D is 2 * prime); every size, and so every product
# of sizes, differs between the two probes, so a dim equal in both is a constant. Of the pairs of
# assignments with that property, these need the least memory for a Block's weights and activations.
PROBE_DIMS: tuple[dict[str, int], ...] = (
    {"B": 11, "T": 19, "Hkv": 3, "G": 5, "D": 2 * 7, "r": 13},
    {"B": 17, "T": 13, "Hkv": 5, "G": 11, "D": 2 * 3, "r": 7},
)


@dataclass(frozen=True)
class Dim:
    """coeff * prod(basis[s] ** e for s, e in powers)."""

    coeff: Fraction
    powers: tuple[tuple[str, int], ...]  # in BASIS order, exponents != 0

    def value(self, dims: dict[str, int]) -> Fraction:
        v = self.coeff
        for s, e in self.powers:
            v *= Fraction(dims[s]) ** e
        return v

    def factors(self) -> tuple[list[str], int, bool]:
        """The dim's symbols with repeats, composites first (Hkv*G*D is "C"); the power of the mlp
        ratio r, which is shown by its value; and whether any power is negative (no name then)."""
        powers = dict(self.powers)
        r = powers.pop("r", 0)
        found: list[str] = []
        for name, parts in COMPOSITES:
            while all(powers.get(s, 0) >= e for s, e in parts.items()):
                found.append(name)
                for s, e in parts.items():
                    powers[s] -= e
        found += [s for s in BASIS for _ in range(powers.get(s, 0))]
        return found, r, any(e < 0 for e in powers.values())

    def name(self, dims: dict[str, int]) -> str:
        """E.g. "B", "4C", "Hkv*D", "D/2", "T^2"; the mlp ratio r is shown by its value."""
        factors, r, negative = self.factors()
        if negative:
            value = self.value(dims)
            return str(value.numerator) if value.denominator == 1 else str(value)
        coeff = self.coeff * Fraction(dims["r"]) ** r
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

    def names(self) -> list[str]:
        """The symbols a legend needs for this dim: none where it is written as a number."""
        factors, _, negative = self.factors()
        return [] if negative else list(dict.fromkeys(factors))


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


def fit(values: list[int], probes: tuple[dict[str, int], ...] = PROBE_DIMS) -> Dim | None:
    """The Dim that gives values[i] under probes[i] for every i, or None if there is no single one.

    A dim equal in every probe is a constant. Otherwise each basis size's exponent is at most how
    often its prime divides the first probe's value; a constant factor may share a prime with a
    size (3 * r when Hkv is 3), so every split is tried and exactly one must fit every probe.
    """
    first, dims = values[0], probes[0]
    if all(v == first for v in values):
        return Dim(Fraction(first), ())
    if first <= 0:
        return None
    primes = {s: dims[s] // 2 if s == "D" else dims[s] for s in BASIS}
    ranges = [range(_multiplicity(first, primes[s]) + 1) for s in BASIS]
    found = []
    for exponents in product(*ranges):
        powers = tuple((s, e) for s, e in zip(BASIS, exponents, strict=True) if e)
        unit = Dim(Fraction(1), powers)
        dim = Dim(Fraction(first) / unit.value(dims), powers)
        if all(dim.value(d) == v for v, d in zip(values, probes, strict=True)):
            found.append(dim)
    return found[0] if len(found) == 1 else None


def legend(dims: list[Dim], sizes: dict[str, int]) -> dict[str, int]:
    """Symbol -> value for every symbol the given dims are named with, in a fixed order."""
    used = {n for d in dims for n in d.names()}
    values = {
        "B": sizes["B"],
        "T": sizes["T"],
        "C": sizes["Hkv"] * sizes["G"] * sizes["D"],
        "H": sizes["Hkv"] * sizes["G"],
        "Hkv": sizes["Hkv"],
        "G": sizes["G"],
        "D": sizes["D"],
    }
    return {name: value for name, value in values.items() if name in used}
