"""The probes' safety checks, each with a model that needs it: without the check, what is printed
would not be what torch computes. Models are given through the model seam (ModelSpec), as a model
nobody here wrote would be."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blocktrace.models.spec import Dtype
from blocktrace.pipeline import trace_spec
from blocktrace.sizes.naming import derived_trace
from blocktrace.sizes.stack import fit_shapes, repeat
from blocktrace.sizes.symbols import Symbol, SymbolSet
from blocktrace.tracing.trace import Trace
from tests.models import same

BTC = SymbolSet(
    (
        Symbol("B", "batch", (11, 17)),
        Symbol("T", "sequence length", (19, 13)),
        Symbol("D", "width", (7, 3), step=2),
    )
)


@dataclass(frozen=True)
class Spec:
    """A ModelSpec over (B, T, D) for a module class written here: make(D) builds one unit."""

    make: Callable[[int], nn.Module]
    sizes: dict[str, int]
    layers: int = 1
    symbols: SymbolSet = BTC
    full_size_trace: bool = False

    def build(self, sizes: dict[str, int], device: str, layers: int) -> nn.Module:
        with torch.device(device):
            if layers == 1:
                return self.make(sizes["D"])
            return Stack([self.make(sizes["D"]) for _ in range(layers)])

    def inputs(self, sizes: dict[str, int], device: str) -> tuple[tuple, dict[str, Any]]:
        return (torch.randn(sizes["B"], sizes["T"], sizes["D"], device=device),), {}

    def describe(self) -> dict[str, Any]:
        return {"model": self.make.__name__, **self.sizes, "layers": self.layers}

    dtype = Dtype.float32


class Stack(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.h = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.h:
            x = layer(x)
        return x


def params_by_path(t: Trace) -> dict[str, int]:
    return {c.path: c.params for c in t.calls}


def real_params(spec: Spec) -> dict[str, int]:
    module = spec.build(spec.sizes, "meta", spec.layers)
    return {path: sum(p.numel() for p in m.parameters()) for path, m in module.named_modules()}


class HalfAndAHalf(nn.Module):
    """A projection to 3 * (D // 2): 3D/2 at every probe (D = 2p), 21 and not 22.5 at D = 15."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, 3 * (d // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def test_a_fit_that_is_no_integer_at_full_size_falls_back_to_a_real_trace() -> None:
    spec = Spec(HalfAndAHalf, {"B": 2, "T": 3, "D": 15})
    shape_fit = fit_shapes(spec)
    assert shape_fit is not None and derived_trace(spec, shape_fit) is None
    probe, cpu = trace_spec(spec, "probe"), trace_spec(spec, "cpu")
    assert probe.device == "meta" and probe.outputs[0].shape == (2, 3, 21)
    same(probe, trace_spec(spec, "meta"))
    assert [t.shape for t in probe.tensors()] == [t.shape for t in cpu.tensors()]
    even = Spec(HalfAndAHalf, {"B": 2, "T": 3, "D": 16})
    assert trace_spec(even, "probe").device == "probe"  # 3D/2 = 24: the fit holds


class LongSequencesTwice(nn.Module):
    """Code that takes another path at full size than at the probes' sizes."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > 100:
            x = torch.cat([x, x], dim=1)  # (B, 2T, D) only for long sequences
        return self.proj(x)


def test_a_full_size_trace_of_another_structure_is_not_named_from_the_probes() -> None:
    spec = Spec(LongSequencesTwice, {"B": 2, "T": 128, "D": 8})
    meta = trace_spec(spec, "meta")
    assert meta.outputs[0].shape == (2, 256, 8)
    assert all(t.symbols is None for t in meta.tensors()) and meta.symbols == {}
    short = trace_spec(replace(spec, sizes={"B": 2, "T": 64, "D": 8}), "meta")
    assert short.outputs[0].symbols == ("B", "T", "D")  # same structure as the probes: named


class Unit(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


def test_every_layer_must_take_the_fit_its_twin_in_the_unit_has() -> None:
    spec = Spec(Unit, {"B": 2, "T": 3, "D": 8}, layers=2)
    unit = fit_shapes(replace(spec, layers=1))
    stack_fit = fit_shapes(spec)
    assert unit is not None and stack_fit is not None
    stack = stack_fit.probe
    skeleton = spec.symbols.skeleton()
    assert repeat(unit, stack, True, skeleton, spec.layers) is not None
    # a unit whose output is fitted (T, B, D) and its input (B, T, D): layer 0's output is layer
    # 1's input, so the two layers would give one tensor two fits; at the skeleton's B = T = 1 both
    # give the same sizes, so only the twin check can refuse it
    out = unit.probe.outputs[0].id
    b, t, d = unit.dims[unit.probe.inputs[0].id]
    skewed = {**unit.dims, out: (t, b, d)}
    assert repeat(replace(unit, dims=skewed), stack, True, skeleton, spec.layers) is None


class Widening(nn.Module):
    """x + down(up(x)) with an inner width of `factor` * D."""

    def __init__(self, d: int, factor: int = 1) -> None:
        super().__init__()
        self.up = nn.Linear(d, factor * d)
        self.down = nn.Linear(factor * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.up(x))


class Repeating(nn.Module):
    """x + fc(x repeated `factor` times, cut back to D): other activations, the same weights."""

    def __init__(self, d: int, factor: int = 1) -> None:
        super().__init__()
        self.d = d
        self.factor = factor
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x.repeat(1, 1, self.factor)[..., : self.d])


class Scaling(nn.Module):
    """x + fc(x) * scale, the scale one per channel or one in all: other weights, the same activations."""

    def __init__(self, d: int, factor: int = 1) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.scale = nn.Parameter(torch.ones(d if factor == 1 else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x) * self.scale


@dataclass(frozen=True)
class OtherLastLayer(Spec):
    """A stack of the same code whose last layer is built with factor 2: the same calls and ops as
    the probed unit, other sizes."""

    def build(self, sizes: dict[str, int], device: str, layers: int) -> nn.Module:
        with torch.device(device):
            if layers == 1:
                return self.make(sizes["D"])
            return Stack([self.make(sizes["D"], 1 if i < layers - 1 else 2) for i in range(layers)])


@pytest.mark.parametrize("make", [Widening, Repeating, Scaling])
def test_a_stack_whose_layers_differ_in_size_is_not_given_one_layer_s_shapes(make: type) -> None:
    spec = OtherLastLayer(make, {"B": 2, "T": 3, "D": 8}, layers=3)
    probe = trace_spec(spec, "probe")
    assert probe.device == "meta"  # the fit of one layer is not every layer's
    real = trace_spec(spec, "cpu")
    assert [t.shape for t in probe.tensors()] == [t.shape for t in real.tensors()]
    assert (
        params_by_path(probe)
        == params_by_path(real)
        == {p: n for p, n in real_params(spec).items() if p in params_by_path(real)}
    )
    assert trace_spec(Spec(make, spec.sizes, layers=3), "probe").device == "probe"  # alike: derived


def test_attrs_that_follow_the_sizes_are_left_out_of_a_derived_trace() -> None:
    class Scaled(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.q = nn.Linear(d, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = self.q(x)[:, None]  # (B, 1, T, D)
            # as Hugging Face passes it: a float that depends on the head size
            return F.scaled_dot_product_attention(q, q, q, scale=q.shape[-1] ** -0.5, is_causal=True)

    spec = Spec(Scaled, {"B": 2, "T": 5, "D": 8})
    t = trace_spec(spec, "probe")
    assert t.device == "probe"  # the probes' different scales did not stop the fit
    sdpa = next(o for o in t.ops if o.name == "scaled_dot_product_attention")
    assert sdpa.attrs == {"is_causal": True}  # 1/sqrt(14) from a probe is not this model's scale
    assert sdpa.outputs[0].symbols == ("B", "1", "T", "D")
    real = next(o for o in trace_spec(spec, "cpu").ops if o.name == "scaled_dot_product_attention")
    assert real.attrs == {"scale": 8**-0.5, "is_causal": True}
