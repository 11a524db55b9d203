"""Which adds are residuals, once the forward is over: by data flow, never by name.

A sum is a residual when one term is the stream's value from before a branch (the data-flow graph's
join names it), each other term is computed from it through at least one module call (a branch), or
beside it from side inputs alone (a side term: x + proj(attn) + ctx(context)). An add inside a
branch belongs to that branch.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocktrace.tracing.ops import facts
from blocktrace.tracing.trace import Branch, ModuleCall, OpCall, ResidualAdd, TensorMeta


@dataclass(frozen=True)
class ResidualRule:
    """What the tracer recorded of the data flow, as the rule reads it."""

    ops: list[OpCall]
    parents: list[tuple[int, ...]]  # tensor id -> ids it came from
    producer_op: dict[int, int]  # tensor id -> op index
    produced_by_call: dict[int, list[int]]  # tensor id -> call indices
    calls: list[ModuleCall | None]

    def residual_adds(self, joins: dict[int, int]) -> list[ResidualAdd]:
        """The residual sums the data-flow graph found (`joins`: the sum's last add -> the id of the
        stream value it adds back), each with its branches: what was computed from the stream on
        the way to the add. Adds whose value only feeds the next add in the same call are terms of
        that bigger sum: x + attn(ln1(x)) + mlp(ln2(x)) is one residual of two branches."""
        users: dict[int, list[int]] = {}  # tensor id -> ops that took it
        for op in self.ops:
            for t in op.inputs:
                users.setdefault(t.id, []).append(op.index)
        adds = {op.index for op in self.ops if facts(op.name).is_add and len(op.inputs) == 2}
        inner = {
            i
            for i in adds
            if len(u := users.get(self.ops[i].outputs[0].id, [])) == 1
            and u[0] in adds
            and self.ops[u[0]].call == self.ops[i].call
        }
        found = []
        for i in sorted(adds - inner):
            if i not in joins:
                continue
            terms, sum_adds = self._terms(i, inner)
            residual = self._residual(self.ops[i], terms, sum_adds, joins[i])
            if residual is not None:
                found.append(residual)
        return found

    def _terms(self, root: int, inner: set[int]) -> tuple[list[TensorMeta], tuple[int, ...]]:
        """The terms of the sum that the add `root` completes, as the code writes them (x + a + b
        is (x + a) + b: x, a, b), and every add of that sum."""
        terms: list[TensorMeta] = []
        sum_adds: list[int] = []

        def expand(i: int) -> None:
            sum_adds.append(i)
            for t in self.ops[i].inputs:
                producer = self.producer_op.get(t.id)
                if producer in inner and self.ops[producer].outputs[0].id == t.id:
                    expand(producer)
                else:
                    terms.append(t)

        expand(root)
        return terms, tuple(sorted(sum_adds))

    def _residual(
        self, op: OpCall, terms: list[TensorMeta], sum_adds: tuple[int, ...], skip: int
    ) -> ResidualAdd | None:
        stream = next((t for t in terms if t.id == skip), min(terms, key=lambda t: t.id))
        branches = []
        sides = []
        for term in sorted((t for t in terms if t is not stream), key=lambda t: t.id):
            on_path = self.between(stream.id, term.id)
            if not on_path and term.id != stream.id:
                sides.append(term)  # computed beside the stream (from a context, a mask): a side term
                continue
            calls = {c for t in on_path for c in self.produced_by_call.get(t, ())}
            if not calls or term.id == stream.id:
                return None
            outermost = [c for c in calls if not self._has_ancestor_in(c, calls)]
            ops = sorted(
                {
                    self.producer_op[t]
                    for t in on_path
                    if t in self.producer_op and self.ops[self.producer_op[t]].call == op.call
                }
            )  # an op of several outputs (split's q, k, v) once
            ends = {c: self.returned(c).end for c in outermost}
            branches.append(Branch(term, tuple(sorted(outermost, key=ends.__getitem__)), tuple(ops)))
        if not branches:
            return None
        written = tuple(t for t in terms if t in sides)  # in the order the code sums them
        return ResidualAdd(op.index, sum_adds, stream, tuple(branches), op.outputs[0], written)

    def between(self, ancestor: int, descendant: int) -> set[int]:
        """Ids on some data-flow path ancestor -> descendant, the descendant included."""
        # ids grow with time, so nothing older than the ancestor can lie on such a path, and a
        # tensor's parents always have smaller ids: one pass in id order decides each tensor
        upstream: set[int] = set()
        todo = [descendant]
        while todo:
            t = todo.pop()
            if t >= ancestor and t not in upstream:
                upstream.add(t)
                todo.extend(self.parents[t])
        on_path = {ancestor}
        for t in sorted(upstream - {ancestor}):
            if any(p in on_path for p in self.parents[t]):
                on_path.add(t)
        return on_path - {ancestor} if descendant in on_path else set()

    def _has_ancestor_in(self, call: int, calls: set[int]) -> bool:
        parent = self.returned(call).parent
        while parent is not None:
            if parent in calls:
                return True
            parent = self.returned(parent).parent
        return False

    def returned(self, index: int) -> ModuleCall:
        """Call `index`, which has returned: residual adds are found once the forward is over."""
        call = self.calls[index]
        assert call is not None
        return call
