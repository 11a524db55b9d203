"""One level's stream, residuals and side inputs, worked out from its steps (see build.py for the
rules). No torch here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocktrace.tracing.graph.model import Branch, Level, Residual, Segment, SideInput, Step, StepKind
from blocktrace.tracing.trace import ModuleCall, OpCall, TensorMeta

if TYPE_CHECKING:
    from blocktrace.tracing.graph.build import _Builder


def main_inputs(step: Step) -> tuple[TensorMeta, ...]:
    """What a step's value is computed from, for the stream: a module call's first input (the rest
    are side inputs: a mask, the rotary tables), every input of an op or a helper."""
    return step.inputs[:1] if step.kind == StepKind.call else step.inputs


def leads_to(
    parents: dict[int, tuple[int, ...]],
    made_at: dict[int, int],
    span: tuple[int, int],
    target: TensorMeta | None,
) -> set[int]:
    """Ids the target's value was computed from, op by op, inside the ops of `span`, the target's
    own included (a module that reads its input only for its shape, as a position embedding does,
    computes nothing from it)."""
    if target is None:
        return set()
    first, end = span
    found = {target.id}
    todo = [target.id]
    while todo:
        tid = todo.pop()
        if not first <= made_at.get(tid, -1) < end:
            continue  # made before the level began: one of its inputs
        for u in parents.get(tid, ()):
            if u not in found:
                found.add(u)
                todo.append(u)
    return found


class LevelFlow:
    """One level's stream, residuals and side inputs, worked out from its steps."""

    def __init__(
        self,
        steps: list[Step],
        producer: dict[int, int],
        main_in: TensorMeta | None,
        main_out: TensorMeta | None,
        skip: TensorMeta | None,
        names: dict[int, str],
        outputs: tuple[TensorMeta, ...],
        builder: _Builder,
        call: ModuleCall,
        frame: int | None,
    ):
        self.frame = frame
        self.steps, self.producer, self.names, self.outputs = steps, producer, names, outputs
        self.main_in, self.main_out, self.skip = main_in, main_out, skip
        self.parents, self.op_of = builder.parents, builder.op_of
        self.code_names = builder.code_names
        self.owner = builder.owners(call, steps)
        self.from_main = self._from_main(builder.ops_inside(call))
        span = builder.span.get(call.index, (0, 0))
        self.upstream = leads_to(self.parents, self.op_of, span, main_out)
        self.spine, self.values, self.carried = self._spine()
        self.join_skips: dict[int, TensorMeta] = {}  # a join call -> the stream value it adds inside
        self.terms: dict[int, set[int]] = {}  # a join -> the ids of its residual's terms
        self.segments, self.side = self._segments()
        self.in_branches = {
            i for s in self.segments if s.residual for b in s.residual.branches for i in b.steps
        }

    def _spine(self) -> tuple[list[int], list[TensorMeta], list[set[int]]]:
        """The steps that carry the stream, in order, the stream's value after each (the main input
        first), and the ids of all it carries there: a split's q, k and v are all the stream."""
        if self.main_in is None:
            return [], [], []
        current = {self.main_in.id}
        values = [self.main_in]
        carried = [current]
        spine: list[int] = []
        for i, s in enumerate(self.steps):
            if not any(t.id in current for t in main_inputs(s)):
                continue
            # what carries the stream on: computed from it, and leading to the main output (not the
            # rotary tables a call makes beside it, nor a position embedding that reads only a shape)
            made = [t for t in s.outputs if t.id in self.upstream and t.id in self.from_main]
            if not made:
                continue
            spine.append(i)
            if any(t.id not in current for t in made):
                # what it read of the stream is replaced by what it made; the rest goes on (of q, k
                # and v, k and v while a step makes something of q alone)
                current = (current - {t.id for t in main_inputs(s)}) | {t.id for t in made}
                values.append(made[0])
            else:
                values.append(values[-1])  # a step that hands the stream on as it was (eval dropout)
            carried.append(current)
        return spine, values, carried

    def spine_calls(self) -> list[int]:
        return [i for i in self.spine if self.steps[i].kind == StepKind.call]

    def _origins(self, t: TensorMeta, stream: dict[int, int]) -> list[tuple[int, bool, list[int]]]:
        """The stream values `t` was computed from, op by op, nearest first on each path: (position
        on the stream, whether a module or helper call of this level lies between, its steps)."""
        found = []
        todo: list[tuple[int, bool, tuple[int, ...]]] = [(t.id, False, ())]
        seen: set[tuple[int, bool]] = set()
        while todo:
            tid, through, path = todo.pop()
            if (tid in stream and tid != t.id) or (tid == t.id and tid in stream):
                found.append((stream[tid], through, sorted(set(path))))
                continue
            if (tid, through) in seen or tid not in self.parents:
                continue
            seen.add((tid, through))
            step = self.owner.get(self.op_of.get(tid, -1))
            crossed = through
            if step is not None:
                s = self.steps[step]
                crossed = through or s.kind == StepKind.call or bool(s.calls)
                path = (*path, step)
            for u in self.parents[tid]:
                todo.append((u, crossed, path))
        return found

    def _segments(self) -> tuple[list[Segment], list[SideInput]]:
        if self.main_in is None or not self.spine or self.values[-1].id != getattr(self.main_out, "id", None):
            return [], self._side_inputs(set())
        stream: dict[int, int] = {}  # id -> its first position on the stream
        for pos, ids in enumerate(self.carried):
            for tid in sorted(ids, key=lambda tid: tid != self.values[pos].id):
                stream.setdefault(tid, pos)
        if self.skip is not None:
            stream.setdefault(self.skip.id, -1)
        # which later stream steps read each stream value again, besides the one after it
        reentries: dict[int, list[tuple[int, TensorMeta, bool, list[int]]]] = {}
        for k, i in enumerate(self.spine):
            step = self.steps[i]
            main = {t.id for t in step.inputs if t.id in self.carried[k]}
            for t in step.inputs:
                if t.id in main:
                    continue
                for pos, through, path in self._origins(t, stream):
                    if pos < k:
                        reentries.setdefault(pos, []).append((k, t, through, path))
        joins: dict[int, tuple[int, list[tuple[TensorMeta, bool, list[int]]]]] = {}
        context: set[int] = set()  # stream values several joins read: side inputs (nanochat's x0)
        for pos, reads in reentries.items():
            direct = {k for k, _, through, _ in reads if not through}  # as it is, or scaled by ops
            if len(direct) > 1:
                context.add(self.values[pos].id if pos >= 0 else self.skip.id)  # type: ignore[union-attr]
                continue
            if not direct:
                continue  # only a call's output computed from it (value embeddings from the ids)
            k = direct.pop()
            if pos > joins.get(k, (-2, []))[0]:
                joins[k] = (pos, [(t, through, path) for j, t, through, path in reads if j == k])
        # a parallel block's other branch (GPT-J's mlp(ln_1(x))) starts from a stream value inside the
        # residual: the join, or a step of the branch (Falcon's mlp + attn before its dropout_add), reads it
        inside: dict[int, list[tuple[int, TensorMeta, list[int]]]] = {}
        for k, (pos, terms) in joins.items():
            for later, reads in reentries.items():
                for j, t, through, path in reads:
                    if through and later >= pos and max(pos, 0) <= j <= k and (j, later) != (k, pos):
                        if j == k:
                            terms.append((t, through, path))
                        else:
                            inside.setdefault(k, []).append((j, t, path))
        segments: list[tuple[int, Segment]] = []  # (the stream position it starts at, segment)
        for k, i in enumerate(self.spine):
            start, end = self.values[k], self.values[k + 1]
            found = joins.get(k)
            residual = self._residual(k, i, found, inside.get(k, [])) if found is not None else None
            if residual is None:
                segments.append((k, Segment(start, end, (i,))))
                continue
            pos = max(found[0], 0)  # type: ignore[index]
            while segments and segments[-1][0] >= pos:
                segments.pop()  # the stream's steps since the skip are the residual's branch
            segments.append((pos, Segment(residual.skip, end, residual.adds or (i,), residual)))
        return [s for _, s in segments], self._side_inputs(context)

    def _residual(
        self,
        k: int,
        join: int,
        found: tuple[int, list[tuple[TensorMeta, bool, list[int]]]],
        inside: list[tuple[int, TensorMeta, list[int]]],
    ) -> Residual | None:
        pos, reads = found
        skip = self.values[pos] if pos >= 0 else self.skip
        assert skip is not None
        skips = [(t, path) for t, through, path in reads if not through]
        branches = [(t, path) for t, through, path in reads if through]
        between = self.spine[max(pos, 0) : k]  # the steps the stream took since the skip: a branch
        on_stream = self.values[k]
        crossed = any(self.steps[i].kind == StepKind.call or self.steps[i].calls for i in between)
        if not skips or not (crossed or branches):
            return None
        step = self.steps[join]
        self.terms[join] = {t.id for t, _, _ in reads}
        for j, t, path in inside:  # the branch's own steps read it: no side input, and on the branch
            self.terms.setdefault(self.spine[j], set()).add(t.id)
            between = sorted({*between, *path})
        found_branches = []
        if between or pos < 0:
            found_branches.append(Branch(on_stream, tuple(between)))
        found_branches += [Branch(t, tuple(path)) for t, path in branches]
        if step.kind == StepKind.call:
            self.join_skips[join] = skip
            adds: tuple[int, ...] = ()
        else:
            adds = (join,)
        return Residual(join, adds, skip, tuple(skips[0][1]), tuple(found_branches), step.outputs[0])

    def _side_inputs(self, context: set[int]) -> list[SideInput]:
        """What each step reads beside the stream: a stream step, all but the stream's value (and,
        at a residual's join, its terms); any other step, what the level did not compute from its
        main input; and wherever it is read, an earlier stream value that several joins read."""
        on_stream = {i: self.carried[k] for k, i in enumerate(self.spine)}
        skip = getattr(self.skip, "id", None)
        stream = set().union(*self.carried)
        found = []
        for i, s in enumerate(self.steps):
            for t in s.inputs:
                if i in on_stream:
                    side = t.id not in on_stream[i] and t.id not in self.terms.get(i, ())
                else:
                    side = t.id not in self.from_main and t.id != skip
                if side or t.id in context:
                    name = self.names.get(t.id, "?")
                    found.append(SideInput(i, t, name if t.id in stream else self.code_names.get(t.id, name)))
        return found

    def _from_main(self, ops: tuple[OpCall, ...]) -> set[int]:
        """The ids computed from the main input, op by op (a call's outputs where it hands its input
        back)."""
        if self.main_in is None:
            return set()
        found = {self.main_in.id}
        for op in ops:
            if any(t.id in found for t in op.inputs):
                found.update(t.id for t in op.outputs)
        return found

    def result(self, call: int, opened: tuple[int, ...]) -> Level:
        main = getattr(self.main_out, "id", None)
        stream = (self.segments[0].start, *(s.end for s in self.segments)) if self.segments else ()
        return Level(
            call,
            self.frame,
            tuple(self.steps),
            self.main_in,
            self.main_out,
            stream,
            tuple(self.segments),
            tuple(self.side),
            tuple(t for t in self.outputs if t.id != main),
            opened,
            self.skip,
        )
