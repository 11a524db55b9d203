"""The model's inputs named as its forward's parameters name them, kept in the trace as plain data
and read by the graph, the captions and the formulas; `input N` where no name can be derived."""

from __future__ import annotations

import torch
from torch import nn

from blocktrace.tracing.trace import Trace
from blocktrace.tracing.tracer import trace
from tests.harness import formulas_of


class Masked(nn.Module):
    """forward(x, cos_sin, *, mask): a tuple's parts and a keyword input."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.proj = nn.LayerNorm(4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], *, mask: torch.Tensor):
        cos, sin = cos_sin
        return x + self.proj(self.norm(x) * cos + sin).masked_fill(mask, 0.0)


class Starred(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return xs[0] + xs[1]


def _masked() -> Trace:
    x, cos, sin = torch.randn(2, 3, 4), torch.randn(3, 4), torch.randn(3, 4)
    return trace(Masked(), (x, (cos, sin)), {"mask": torch.zeros(2, 3, 4, dtype=torch.bool)})


def test_each_input_is_named_by_its_parameter_a_tuple_s_parts_by_index() -> None:
    t = _masked()
    assert t.input_names == ("x", "cos_sin[0]", "cos_sin[1]", "mask")
    assert [t.input_name(k) for k in range(4)] == ["x", "cos_sin[0]", "cos_sin[1]", "mask"]


def test_a_starred_parameter_names_each_part_by_its_index() -> None:
    assert trace(Starred(), (torch.randn(2), torch.randn(2))).input_names == ("xs[0]", "xs[1]")


def test_the_names_travel_in_the_json_and_without_them_inputs_are_numbered() -> None:
    t = _masked()
    assert Trace.from_json(t.to_json()).input_names == t.input_names
    bare = Trace.from_dict({k: v for k, v in t.to_dict().items() if k != "input_names"})
    assert bare.input_names is None
    assert [bare.input_name(k) for k in range(3)] == ["input", "input 2", "input 3"]


def test_the_formulas_and_the_caption_write_the_parameter_names() -> None:
    from blocktrace.views.diagram.expression import expression
    from blocktrace.views.diagram.formulas import formulas
    from blocktrace.views.steps import StepTree

    t = _masked()
    tree = StepTree(t)
    lines = formulas(tree)
    # x + proj(norm(x) * cos + sin).masked_fill(mask, 0): the branch reads cos, sin and the mask
    assert lines[0] == "x_out = x + masked_fill(Linear(add(mul(LayerNorm(x), cos_sin[0]), cos_sin[1])), mask)"
    assert "mask: input 4, (2, 3, 4)" in lines
    (r,) = t.residual_adds
    assert expression(tree, r) == "x + masked_fill(proj(add(mul(norm(x), cos_sin[0]), cos_sin[1])), mask)"


def _encoder() -> Trace:
    """torch's TransformerEncoder called as forward(src, mask=...): each layer is called
    layer(output, src_mask=mask, is_causal=..., src_key_padding_mask=...)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    return trace(model, (torch.randn(2, 5, 8),), {"mask": nn.Transformer.generate_square_subsequent_mask(5)})


def test_each_module_call_s_inputs_are_named_by_its_own_forward() -> None:
    calls = {c.path: c for c in _encoder().calls}
    # TransformerEncoderLayer.forward(src, src_mask, src_key_padding_mask, is_causal);
    # MultiheadAttention.forward(query, key, value, key_padding_mask, need_weights, attn_mask, ...)
    assert calls[""].input_names == ("src", "mask")
    assert calls["layers.0"].input_names == calls["layers.1"].input_names == ("src", "src_mask")
    assert calls["layers.0.self_attn"].input_names == ("query", "key", "value", "attn_mask")
    assert calls["layers.0.norm1"].input_names == ("input",)  # LayerNorm.forward(input)


def test_a_layer_s_formulas_name_its_inputs_by_its_forward() -> None:
    lines = formulas_of(_encoder())
    assert lines[:4] == [
        "each of layers.0 … layers.1 (TransformerEncoderLayer × 2):",
        "x_mid = LayerNorm(x + _sa_block(x, src_mask))",
        "x_out = LayerNorm(x_mid + _ff_block(x_mid))",
        "src_mask: input 2, (5, 5)",
    ]


def test_a_call_s_names_travel_in_the_json_and_without_them_its_inputs_are_numbered() -> None:

    t = _encoder()
    assert Trace.from_json(t.to_json()).calls == t.calls
    d = t.to_dict()
    for c in d["calls"]:
        del c["input_names"]
    bare = Trace.from_dict(d)  # a trace written before calls carried names
    assert all(c.input_names is None for c in bare.calls)
    assert formulas_of(bare)[1:4] == [
        "x_mid = LayerNorm(x + _sa_block(x, in_1))",
        "x_out = LayerNorm(x_mid + _ff_block(x_mid))",
        "in_1: input 2, (5, 5)",
    ]


def test_a_forward_s_signature_is_bound_once_per_pattern_of_call(monkeypatch) -> None:
    from blocktrace.tracing import input_names

    monkeypatch.setattr(input_names, "_PLANS", {})
    bound: list[str] = []
    plan = input_names._plan
    monkeypatch.setattr(input_names, "_plan", lambda f, *a: bound.append(f.__qualname__) or plan(f, *a))
    _encoder()
    # two layers, each with its norms, dropouts, Linears and attention: each forward bound once
    assert sorted(bound) == sorted(set(bound))
    assert "TransformerEncoderLayer.forward" in bound
