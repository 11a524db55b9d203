import math
from fractions import Fraction
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocktrace.models.block.config import BlockConfig, symbol_set
from blocktrace.sizes.symbols import Composite, Dim, Symbol, SymbolSet

GQA = symbol_set(True, True)
BASIS = GQA.names
SIZES = {"B": 8, "T": 1024, "Hkv": 2, "G": 3, "D": 128, "r": 4}


def dim(coeff: Fraction, symbols: SymbolSet = GQA, **powers: int) -> Dim:
    return Dim(coeff, tuple((s, powers[s]) for s in symbols.names if powers.get(s)))


@given(
    exponents=st.tuples(*[st.integers(0, 2) for _ in BASIS]),
    coeff=st.sampled_from([Fraction(1), Fraction(1, 2), Fraction(3), Fraction(4)]),
)
def test_fit_recovers_any_monomial(exponents: tuple[int, ...], coeff: Fraction) -> None:
    truth = dim(coeff, **dict(zip(BASIS, exponents, strict=True)))
    values = [truth.value(p) for p in GQA.probes()]
    if any(v.denominator != 1 for v in values):
        return  # not a size any tensor could have
    assert GQA.fit([int(v) for v in values]) == truth


# (grouped-query heads, MLP width a multiple of C, the head dim's step: 8 where a quarter turns)
@pytest.mark.parametrize("key", list(product((True, False), (True, False), (2, 8))))
def test_no_product_of_sizes_is_equal_in_both_probes(key: tuple[bool, bool, int]) -> None:
    # why a dim equal in both probes may be taken for a constant
    symbols = symbol_set(*key)
    probes = symbols.probes()
    for exponents in product(range(3), repeat=len(symbols.basis)):
        if any(exponents):
            values = {
                math.prod(p[s] ** e for s, e in zip(symbols.names, exponents, strict=True)) for p in probes
            }
            assert len(values) == 2, exponents


def test_a_basis_whose_primes_repeat_is_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        SymbolSet((Symbol("A", "a", (3, 5)), Symbol("B", "b", (3, 7))))
    with pytest.raises(ValueError, match="step"):
        SymbolSet((Symbol("A", "a", (2, 5)), Symbol("D", "d", (3, 7), step=2)))


def test_fit_rejects_what_is_no_product_of_sizes() -> None:
    # T - 1 (a shifted sequence) is no monomial: 18 in the first probe, 12 in the second
    first, second = GQA.probes()
    assert GQA.fit([first["T"] - 1, second["T"] - 1]) is None


def test_fit_is_none_when_two_splits_fit() -> None:
    # A * B is 15 in both probes of these twins, so A^2*B and 15*A give 45 and 75 alike: two fits,
    # and a name picked from either would be a guess
    twins = SymbolSet((Symbol("A", "a", (3, 5)), Symbol("B", "b", (5, 3))))
    assert twins.fit([45, 75]) is None
    assert twins.fit([15, 15]) == Dim(Fraction(15), ())  # equal in both probes: a constant
    assert twins.fit([3, 5]) == Dim(Fraction(1), (("A", 1),))


def test_names_follow_structure_not_values() -> None:
    sizes = {"B": 8, "T": 1024, "Hkv": 1, "G": 1, "D": 1024, "r": 4}  # T == C == D, H == Hkv
    assert GQA.name(dim(Fraction(1), Hkv=1, G=1, D=1, r=1), sizes) == "4C"
    assert GQA.name(dim(Fraction(1), T=1), sizes) == "T"
    assert GQA.name(dim(Fraction(1), Hkv=1, G=1), sizes) == "H"
    assert GQA.name(dim(Fraction(1), Hkv=1), sizes) == "Hkv"
    assert GQA.name(dim(Fraction(1), Hkv=1, D=1), sizes) == "Hkv*D"
    assert GQA.name(dim(Fraction(1, 2), D=1), sizes) == "D/2"
    assert GQA.name(dim(Fraction(1), T=2), sizes) == "T^2"
    assert GQA.name(dim(Fraction(3)), sizes) == "3"


def test_an_mlp_width_that_is_no_multiple_of_c_is_named_f() -> None:
    config = BlockConfig(n_embd=8192, n_head=64, n_kv_head=8, mlp_hidden=28672)
    symbols = config.symbols
    assert "F" in symbols.names and "r" not in symbols.names
    assert symbols.name(Dim(Fraction(1), (("B", 1), ("F", 1))), config.dims()) == "B*F"
    assert BlockConfig(n_embd=768, mlp_hidden=3072).symbols.names == GQA.names  # 4C stays 4C


def test_legend_lists_only_the_symbols_used() -> None:
    used = [dim(Fraction(1), B=1), dim(Fraction(1), Hkv=1, G=1, D=1, r=1)]
    assert GQA.legend(used, SIZES) == {"B": 8, "C": 768}


def test_composites_are_named_in_declaration_order() -> None:
    symbols = SymbolSet(
        (Symbol("X", "x", (3, 5)), Symbol("Y", "y", (7, 11))),
        (Composite("P", "x * y", (("X", 1), ("Y", 1))),),
    )
    assert symbols.name(Dim(Fraction(2), (("X", 2), ("Y", 1))), {"X": 2, "Y": 3}) == "2*P*X"
    assert symbols.values({"X": 2, "Y": 3}) == {"X": 2, "Y": 3, "P": 6}
