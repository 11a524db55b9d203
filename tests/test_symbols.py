import math
from fractions import Fraction
from itertools import product

from hypothesis import given
from hypothesis import strategies as st

from blocktrace.symbols import BASIS, PROBE_DIMS, Dim, fit, legend

SIZES = {"B": 8, "T": 1024, "Hkv": 2, "G": 3, "D": 128, "r": 4}


def dim(coeff: Fraction, **powers: int) -> Dim:
    return Dim(coeff, tuple((s, powers[s]) for s in BASIS if powers.get(s)))


@given(
    exponents=st.tuples(*[st.integers(0, 2) for _ in BASIS]),
    coeff=st.sampled_from([Fraction(1), Fraction(1, 2), Fraction(3), Fraction(4)]),
)
def test_fit_recovers_any_monomial(exponents: tuple[int, ...], coeff: Fraction) -> None:
    truth = dim(coeff, **dict(zip(BASIS, exponents, strict=True)))
    values = [truth.value(p) for p in PROBE_DIMS]
    if any(v.denominator != 1 for v in values):
        return  # not a size any tensor could have
    assert fit([int(v) for v in values]) == truth


def test_no_product_of_sizes_is_equal_in_both_probes() -> None:
    # why a dim equal in both probes may be taken for a constant
    for exponents in product(range(3), repeat=len(BASIS)):
        if any(exponents):
            values = {math.prod(p[s] ** e for s, e in zip(BASIS, exponents, strict=True)) for p in PROBE_DIMS}
            assert len(values) == 2, exponents


def test_fit_rejects_what_is_no_product_of_sizes() -> None:
    # T - 1 (a shifted sequence) is no monomial: 12 in the first probe, 16 in the second
    assert fit([PROBE_DIMS[0]["T"] - 1, PROBE_DIMS[1]["T"] - 1]) is None


def test_names_follow_structure_not_values() -> None:
    sizes = {"B": 8, "T": 1024, "Hkv": 1, "G": 1, "D": 1024, "r": 4}  # T == C == D, H == Hkv
    assert dim(Fraction(1), Hkv=1, G=1, D=1, r=1).name(sizes) == "4C"
    assert dim(Fraction(1), T=1).name(sizes) == "T"
    assert dim(Fraction(1), Hkv=1, G=1).name(sizes) == "H"
    assert dim(Fraction(1), Hkv=1).name(sizes) == "Hkv"
    assert dim(Fraction(1), Hkv=1, D=1).name(sizes) == "Hkv*D"
    assert dim(Fraction(1, 2), D=1).name(sizes) == "D/2"
    assert dim(Fraction(1), T=2).name(sizes) == "T^2"
    assert dim(Fraction(3)).name(sizes) == "3"


def test_legend_lists_only_the_symbols_used() -> None:
    used = [dim(Fraction(1), B=1), dim(Fraction(1), Hkv=1, G=1, D=1, r=1)]
    assert legend(used, SIZES) == {"B": 8, "C": 768}
