"""The table: one row per module call, functional op and residual add of a Trace, with totals.

Rows come in execution order (the trace's clock: when each op ran and each call returned), each
under the call it ran in. A leaf call that ran exactly one op returning the call's own output (a
Linear and its F.linear) is that op: one row, not two.

With `collapse`, a run of identical layers is one row, as the diagram draws it once: the calls the
diagram opens (those with a residual add inside) that follow each other under one parent and whose
rows would read the same but for their own path (`h.3.attn.c_q` is `.attn.c_q` of `h.3`): kinds,
names, shapes, weights and numbers all through. The row reads "h.0 … h.1023", "Block × 1024", holds
the run's parameters and FLOPs, and is followed by the first layer's rows, once.

No torch here: the table is built from the plain Trace data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from blocktrace.tracing.ops import facts
from blocktrace.tracing.trace import ModuleCall, OpCall, TensorMeta, Weight, plain
from blocktrace.views.diagram.expression import expression
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
    count: int = 1  # the identical calls a collapsed row stands for ("Block × 1024"); its numbers are theirs


@dataclass(frozen=True)
class Table:
    model: str
    rows: tuple[Row, ...]
    totals: Totals
    symbols: dict[str, int] = field(default_factory=dict)  # legend: symbol -> value
    config: dict[str, Any] = field(default_factory=dict)
    depth: int | None = None  # rows deeper than this were folded into their parent
    collapsed: bool = False  # whether runs of identical layers were made one row
    stopped: str | None = None  # a partial trace's: the failure the forward stopped at


# --- building ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """A call or op with its children."""

    row: Row
    children: tuple[_Node, ...]
    look: tuple = ()  # what its rows show, but for its own path: equal looks read alike (see _look)


def build_table(tree: StepTree, depth: int | None = None, collapse: bool = False) -> Table:
    """The table of `tree`'s trace; rows nested deeper than `depth` are folded into their parent;
    with `collapse`, a run of identical layers is one row (see above)."""
    trace = tree.trace
    roots = _Builder(tree, collapse).nodes(None, 0)
    rows = tuple(row for node in roots for row in _flatten(node, depth))
    return Table(
        model=trace.model,
        rows=rows,
        totals=totals(trace),
        symbols=dict(trace.symbols),
        config=plain(trace.config),
        depth=depth,
        collapsed=collapse,
        stopped=trace.stopped,
    )


class _Builder:
    def __init__(self, tree: StepTree, collapse: bool = True):
        self.trace = tree.trace
        self.residuals = tree.residual_at
        self.tree = tree
        self.layers = tree.opened if collapse else frozenset()

    def nodes(self, call: int | None, depth: int) -> list[_Node]:
        """The calls and ops directly inside `call`, in execution order, each run of identical
        layers one node."""
        out: list[_Node] = []
        run: list[_Node] = []
        for item in self.trace.timeline(call):
            node = self.call_node(item, depth) if isinstance(item, ModuleCall) else self.op_node(item, depth)
            if run and (node.row.call not in self.layers or node.look != run[0].look):
                out.append(_collapsed(run))
                run = []
            if node.row.call in self.layers:
                run.append(node)
            else:
                out.append(node)
        if run:
            out.append(_collapsed(run))
        return out

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
        return _Node(row, tuple(children), _look(row, children))

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
        return _Node(row, (), _look(row, ()))


def _look(row: Row, children: Sequence[_Node]) -> tuple:
    """What the rows of a call or op show, paths relative to the call's own, its children's looks
    included: two layers with equal looks print the same rows."""

    def shapes(tensors: tuple[TensorMeta, ...]) -> tuple:
        return tuple((t.shape, t.symbols, t.dtype, t.stats) for t in tensors)  # values differ: rows do

    own = row.path if row.call is not None else ""
    return (
        row.kind,
        "" if row.call is not None else row.name,
        shapes(row.inputs),
        shapes(row.outputs),
        tuple((w.name, w.shape, w.symbols, w.trainable, w.tied) for w in row.weights),
        (row.params, row.trainable, row.flops, row.uncounted),
        tuple((_relative(c.row.path, own), c.look) for c in children),
    )


def _relative(path: str, own: str) -> str:
    if path == own:
        return ""
    return path[len(own) :] if own and path.startswith(own + ".") else path


def _collapsed(run: list[_Node]) -> _Node:
    """A run of identical layers as one node: its row the run's, its children the first layer's."""
    first, last = run[0].row, run[-1].row
    if len(run) == 1:
        return run[0]
    row = replace(
        first,
        name=f"{first.path} … {last.path}",
        kind=f"{first.kind} × {len(run)}",
        outputs=last.outputs,
        params=sum(n.row.params for n in run),
        trainable=sum(n.row.trainable for n in run),
        flops=sum(n.row.flops for n in run),
        count=len(run),
    )
    return _Node(row, run[0].children, run[0].look)


def _flatten(node: _Node, depth: int | None) -> list[Row]:
    if depth is not None and node.row.depth > depth:
        return []
    return [node.row, *(row for child in node.children for row in _flatten(child, depth))]
