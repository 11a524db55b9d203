"""The table of op facts agrees with itself, with torch, and with the names the tracer records."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from torch import nn

from blocktrace.tracing.ops import OPS, definition, facts, op_title
from blocktrace.tracing.tracer import trace

Example = tuple[tuple[int, ...], Callable[[torch.Tensor], object]]
SIX_BY_FOUR = torch.empty(6, 4)
# one call of each op the table says is a view, on an input of the given shape
VIEWS: dict[str, Example] = {
    "view": ((2, 3, 4), lambda x: x.view(6, 4)),
    "view_as": ((2, 3, 4), lambda x: x.view_as(SIX_BY_FOUR)),
    "reshape": ((2, 3, 4), lambda x: x.reshape(6, 4)),
    "reshape_as": ((2, 3, 4), lambda x: x.reshape_as(SIX_BY_FOUR)),
    "transpose": ((2, 3, 4), lambda x: x.transpose(0, 1)),
    "swapaxes": ((2, 3, 4), lambda x: x.swapaxes(0, 1)),
    "permute": ((2, 3, 4), lambda x: x.permute(2, 0, 1)),
    "movedim": ((2, 3, 4), lambda x: x.movedim(0, 2)),
    "t": ((3, 4), lambda x: x.t()),
    "getitem": ((2, 3, 4), lambda x: x[0]),
    "select": ((2, 3, 4), lambda x: x.select(0, 1)),
    "narrow": ((2, 3, 4), lambda x: x.narrow(1, 0, 2)),
    "unsqueeze": ((2, 3, 4), lambda x: x.unsqueeze(0)),
    "squeeze": ((1, 3, 4), lambda x: x.squeeze(0)),
    "expand": ((1, 4), lambda x: x.expand(3, 4)),
    "expand_as": ((1, 4), lambda x: x.expand_as(SIX_BY_FOUR)),
    "flatten": ((2, 3, 4), lambda x: x.flatten()),
    "unflatten": ((2, 3, 4), lambda x: x.unflatten(2, (2, 2))),
    "split": ((2, 3, 4), lambda x: x.split(1)),
    "chunk": ((2, 3, 4), lambda x: x.chunk(2, dim=2)),
    "unbind": ((2, 3, 4), lambda x: x.unbind(0)),
    "detach": ((2, 3, 4), lambda x: x.detach()),
    "as_strided": ((2, 3, 4), lambda x: x.as_strided((2, 2), (1, 1))),
    "diagonal": ((3, 4), lambda x: x.diagonal()),
}
# ops that make new memory, on inputs where they must
COPIES: dict[str, Example] = {
    "contiguous": ((2, 3, 4), lambda x: x.transpose(0, 1).contiguous()),
    "clone": ((2, 3, 4), lambda x: x.clone()),
    "cat": ((2, 3, 4), lambda x: torch.cat([x, x])),
    "stack": ((2, 3, 4), lambda x: torch.stack([x, x])),
}
# a + b in each way it is written; torch names some of them "add" (2.13: all three)
ADDS: dict[str, Example] = {
    "add": ((2, 3), lambda x: x + x),
    "radd": ((2, 3), lambda x: 1.0 + x),
    "iadd": ((2, 3), lambda x: x.mul(2).__iadd__(x)),
}


class _Run(nn.Module):
    def __init__(self, f: Callable[[torch.Tensor], object]) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> object:
        return self.f(x)


def _outputs(result: object) -> list[torch.Tensor]:
    found = result if isinstance(result, tuple) else (result,)
    return [t for t in found if isinstance(t, torch.Tensor)]


def test_the_kind_column_says_view_exactly_for_the_views() -> None:
    assert {name for name, op in OPS.items() if op.kind == "view"} == {
        n for n, op in OPS.items() if op.is_view
    }


def test_an_op_folded_into_the_step_before_makes_no_new_value() -> None:
    for name, op in OPS.items():
        if op.reshapes:
            assert op.is_view or op.keeps_value, name


def test_the_adds_are_elementwise_and_the_definitions_name_their_op() -> None:
    assert {n for n, op in OPS.items() if op.is_add} == set(ADDS)
    assert all(OPS[n].kind == "elementwise" for n in ADDS)
    for name, op in OPS.items():
        for text in (op.definition, *(d for _, d in op.forms)):
            assert not text or text.startswith((f"{op_title(name)}(", f"{name}(")), (name, text)


def test_the_accessors_read_the_table() -> None:
    assert op_title("rms_norm") == "RMSNorm" and op_title("foo") == "foo"
    assert definition("gelu", "tanh").startswith("gelu(x) = x * Phi(x), computed as")
    assert definition("gelu") == "gelu(x) = x * Phi(x)" and definition("relu", "tanh") == ""
    assert facts("foo") == facts("bar") and facts("foo").kind == "op"


def test_every_view_is_one_in_torch_and_every_copy_is_not() -> None:
    assert set(VIEWS) == {n for n, op in OPS.items() if op.is_view}, "give each view an example"
    for name, (shape, f) in {**VIEWS, **COPIES}.items():
        x = torch.randn(shape)
        shared = [
            out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for out in _outputs(f(x))
        ]
        assert all(shared) if name in VIEWS else not any(shared), name


@pytest.mark.parametrize("name", [*VIEWS, *COPIES, *ADDS])
def test_the_table_names_ops_as_the_tracer_records_them(name: str) -> None:
    shape, f = {**VIEWS, **COPIES, **ADDS}[name]
    op = trace(_Run(f), (torch.randn(shape),)).ops[-1]
    assert facts(op.name).is_add if name in ADDS else op.name == name
    # the one op that keeps its value: its output is its input, even where torch copied it
    assert (op.outputs[0].id == op.inputs[0].id) == facts(name).keeps_value


def test_the_table_imports_no_torch() -> None:
    code = "import sys, blocktrace.tracing.ops; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
