"""The table: one row per module call, functional op and residual add of a Trace, with totals.

Rows come in execution order (the trace's clock: when each op ran and each call returned), each
under the call it ran in. A leaf call that ran exactly one op returning the call's own output (a
Linear and its F.linear) is that op: one row, not two.

No torch here: the table is built from the plain Trace data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blocktrace.tracing.ops import facts
from blocktrace.tracing.trace import ModuleCall, OpCall, TensorMeta, Weight, plain
from blocktrace.views.diagram.layout import expression
from blocktrace.views.stats import Totals, totals
from blocktrace.views.steps import StepTree

RESIDUAL_KIND = "residual add"
ROOT_NAME = "(root)"


@dataclass(frozen=True)
class Row:
    depth: int  # nesting: 0 for the root call, its children 1, ...
    name: str  # the first column: a call's path, an op's torch name, "x + attn(norm(x))" for a residual add
    kind: str  # a call's module class ("Linear"), or what an op is ("SDPA", "view", "residual add")
    path: str  # the module path of the call, or of the call the op ran in
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    weights: tuple[Weight, ...]  # the call's own parameters
    params: int  # parameters of the call's module and its submodules; 0 for an op
    trainable: int  # of which require grad
    flops: int  # forward FLOPs, everything inside a call included (see flops.py); of the known part
    call: int | None = None  # index into Trace.calls for a call row
    op: int | None = None  # index into Trace.ops for an op row
    uncounted: tuple[str, ...] = ()  # aten ops inside it with no FLOPs formula: its FLOPs are unknown


@dataclass(frozen=True)
class Table:
    model: str
    rows: tuple[Row, ...]
    totals: Totals
    symbols: dict[str, int] = field(default_factory=dict)  # legend: symbol -> value
    config: dict[str, Any] = field(default_factory=dict)
    depth: int | None = None  # rows deeper than this were folded into their parent


# --- building ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """A call or op with its children."""

    row: Row
    children: tuple[_Node, ...]


def build_table(tree: StepTree, depth: int | None = None) -> Table:
    """The table of `tree`'s trace; rows nested deeper than `depth` are folded into their parent."""
    trace = tree.trace
    roots = _Builder(tree).nodes(None, 0)
    rows = tuple(row for node in roots for row in _flatten(node, depth))
    return Table(
        model=trace.model,
        rows=rows,
        totals=totals(trace),
        symbols=dict(trace.symbols),
        config=plain(trace.config),
        depth=depth,
    )


class _Builder:
    def __init__(self, tree: StepTree):
        self.trace = tree.trace
        self.residuals = tree.residual_at
        self.tree = tree

    def nodes(self, call: int | None, depth: int) -> list[_Node]:
        """The calls and ops directly inside `call`, in execution order."""
        return [
            self.call_node(item, depth) if isinstance(item, ModuleCall) else self.op_node(item, depth)
            for item in self.trace.timeline(call)
        ]

    def call_node(self, call: ModuleCall, depth: int) -> _Node:
        children = self.nodes(call.index, depth + 1)
        flops = sum(c.row.flops for c in children)  # a nested call's FLOPs include its own insides
        uncounted = tuple(name for c in children for name in c.row.uncounted)
        ops = self.trace.ops_in(call.index)
        if len(children) == 1 and len(ops) == 1 and ops[0].outputs == call.outputs:
            children = []  # the op is the call itself
        row = Row(
            depth=depth,
            name=call.path or ROOT_NAME,
            kind=call.type,
            path=call.path,
            inputs=call.inputs,
            outputs=call.outputs,
            weights=call.weights,
            params=call.params,
            trainable=call.trainable,
            flops=flops,
            call=call.index,
            uncounted=uncounted,
        )
        return _Node(row, tuple(children))

    def op_node(self, op: OpCall, depth: int) -> _Node:
        path = "" if op.call is None else self.trace.calls[op.call].path
        residual = self.residuals.get(op.index)
        if residual is not None:
            name, kind = expression(self.tree, residual), RESIDUAL_KIND  # as the diagram writes it
        else:
            name, kind = op.name, facts(op.name).kind
        row = Row(
            depth,
            name,
            kind,
            path,
            op.inputs,
            op.outputs,
            (),
            0,
            0,
            op.flops,
            op=op.index,
            uncounted=op.uncounted,
        )
        return _Node(row, ())


def _flatten(node: _Node, depth: int | None) -> list[Row]:
    if depth is not None and node.row.depth > depth:
        return []
    return [node.row, *(row for child in node.children for row in _flatten(child, depth))]
