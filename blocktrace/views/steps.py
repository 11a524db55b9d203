"""From a trace to the steps a reader follows: the stream's nodes and each box's internals.

A module call is opened up (its steps drawn on the stream) when a residual add happens inside it;
the root always is. Any other call is one box, with its internals listed beside it. Ops that one
call of a helper function made (apply_rotary_emb(q), norm(x)) are one step; so is a call followed
by the views that reshape its output, and a run of ops each consuming the last one's output.
The adds of one residual sum (x + attn(..) + mlp(..)) are one step. Steps come in the order the
trace's clock gives: the order calls returned and ops ran. Built once per trace by `StepTree`,
which is handed to every view that reads steps: the layout, the formulas, the table. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType

from blocktrace.tracing.ops import facts, op_title
from blocktrace.tracing.trace import ModuleCall, OpCall, ResidualAdd, TensorMeta, Trace


class StepKind(StrEnum):
    call = "call"  # a module call drawn as one box
    helper = "helper"  # the ops of one call of a helper function: norm(x)
    shape = "shape"  # views that reshape
    compute = "compute"  # other ops
    residual = "residual"  # a residual sum
    section = "section"  # the header of an opened call


@dataclass(frozen=True)
class Step:
    """One thing done to the data: a module call, a helper call, a run of ops, or a residual add."""

    kind: StepKind
    label: str  # as the code names it: "attn", "c_q, view", "norm", "relu, square", "+"
    title: str  # for a box: "CausalSelfAttention", "RMSNorm", "MLP"
    inputs: tuple[TensorMeta, ...]
    output: TensorMeta
    time: int  # when it finished, on the trace's clock
    call: ModuleCall | None = None  # for call and section (an opened call's header)
    ops: tuple[OpCall, ...] = ()  # the ops the step is made of
    residual: ResidualAdd | None = None  # for residual
    span: int = 0  # for a section: how many of the steps after it are its call's (one call's, if collapsed)
    frame: int = 0  # for a helper: which call of it (the outermost helper, where helpers call helpers)


def code_name(step: Step) -> str:
    """The step as the code names it: "attn", "c_q, view", a helper call as "norm()"."""
    return step.label + ("()" if step.kind == StepKind.helper else "")


def short_path(call: ModuleCall) -> str:
    return call.path.rsplit(".", 1)[-1]


class StepTree:
    """The steps of one trace, each call's worked out once: the stream (drawn with `collapse` as
    `stream` says) and the side computations beside it, both made together on first use."""

    def __init__(self, trace: Trace, collapse: bool = True):
        self.trace = trace
        self.collapse = collapse
        self.residual_at = {r.op: r for r in trace.residual_adds}
        self.in_sums = {i for r in trace.residual_adds for i in r.adds}
        self._inner: dict[int, list[Step]] = {}
        self.from_input = _descendants(trace)
        self.helper_of = _outer_helpers(trace)

    def inner(self, call: ModuleCall) -> list[Step]:
        """The steps directly inside `call`, grouped and folded as described above, in order."""
        if call.index not in self._inner:
            self._inner[call.index] = [
                self._with_taken(s) if s.kind == StepKind.helper else s for s in _merged(self._steps_in(call))
            ]
        return self._inner[call.index]

    def _with_taken(self, step: Step) -> Step:
        """A helper step taking what its ops took from outside: the values computed from the input
        where there are any (apply_rotary_pos_emb's q and k, not the cos and sin tables)."""
        made = {t.id for o in step.ops for t in o.outputs}
        taken = list({t.id: t for o in step.ops for t in o.inputs if t.id not in made}.values())
        on_stream = [t for t in taken if t.id in self.from_input]
        return replace(step, inputs=tuple(on_stream or taken[:1]))

    def _steps_in(self, call: ModuleCall) -> list[Step]:
        steps: list[Step] = []
        for item in self.trace.timeline(call.index):
            if isinstance(item, ModuleCall):
                if item.outputs:
                    steps.append(
                        Step(
                            StepKind.call,
                            short_path(item),
                            item.type,
                            item.inputs,
                            item.outputs[0],
                            item.end,
                            item,
                        )
                    )
                continue
            op = item
            r = self.residual_at.get(op.index)
            if r is not None:
                inputs = (r.stream, *(b.output for b in r.branches))
                steps.append(
                    Step(StepKind.residual, "+", "+", inputs, r.output, op.time, ops=(op,), residual=r)
                )
            elif op.index in self.in_sums:
                continue  # an add inside a residual sum: drawn as that sum's (+)
            elif op.function != "forward":
                function, frame = self.helper_of.get(op.frame, (op.function, op.frame))
                steps.append(
                    Step(
                        StepKind.helper,
                        function,
                        op_title(op.name),
                        op.inputs[:1],
                        op.outputs[0],
                        op.time,
                        ops=(op,),
                        frame=frame,
                    )
                )
            else:
                kind = StepKind.shape if facts(op.name).reshapes else StepKind.compute
                steps.append(
                    Step(kind, op.name, op_title(op.name), op.inputs, op.outputs[0], op.time, ops=(op,))
                )
        return steps

    def is_one_op(self, call: ModuleCall) -> bool:
        """Whether the call is one op that returns its output (a LayerNorm module and its
        F.layer_norm): then the op is the call, and listing it would say nothing new."""
        ops = self.trace.ops_in(call.index)
        return not self.trace.children(call.index) and len(ops) == 1 and ops[0].outputs == call.outputs

    @cached_property
    def opened(self) -> frozenset[int]:
        """Indices of the calls drawn as a stream: the root and every call with a residual add inside."""
        by_index = {c.index: c for c in self.trace.calls}
        opened = {c.index for c in self.trace.calls if c.parent is None}
        for r in self.trace.residual_adds:
            call = self.trace.ops[r.op].call
            while call is not None:
                opened.add(call)
                call = by_index[call].parent
        return frozenset(opened)

    @property
    def stream(self) -> tuple[Step, ...]:
        """The stream from input to output: opened calls expanded in place, each after a section step.
        With `collapse`, a run of opened calls doing the same thing (a stack of identical Blocks, with
        the same shapes all through) is drawn once: its section reads "h.0 … h.79" and "Block × 80"."""
        return self._flow[0]

    @property
    def side(self) -> Mapping[int, Step]:
        """Tensor id -> the step that made it, for the values the opened calls compute off the stream
        (positions, rotary cos/sin, masks): the first step to make each."""
        return self._flow[1]

    @cached_property
    def _flow(self) -> tuple[tuple[Step, ...], Mapping[int, Step]]:
        """The stream and the side computations, found in one walk of the opened calls."""
        opened, collapse = self.opened, self.collapse
        side: dict[int, Step] = {}

        def expand(call: ModuleCall) -> list[Step]:
            out: list[Step] = []
            run: tuple[int, int, tuple] | None = (
                None  # (index of the run's section in out, length, signature)
            )
            for step in self.inner(call):
                if self.from_input and step.output.id not in self.from_input:
                    side.setdefault(step.output.id, step)  # positions, rotary cos/sin, masks: off stream
                    continue
                if step.call is None or step.call.index not in opened:
                    out.append(step)
                    run = None
                    continue
                inner = expand(step.call)
                signature = (step.call.type, self.signature(inner))
                if collapse and run is not None and run[2] == signature:
                    first = out[run[0]]
                    assert first.call is not None
                    count = run[1] + 1
                    label = f"{first.call.path} … {step.call.path}"
                    title = f"{first.call.type} × {count}"
                    out[run[0]] = Step(
                        StepKind.section, label, title, first.inputs, step.output, step.time, first.call,
                        span=first.span,
                    )  # fmt: skip
                    run = (run[0], count, signature)
                    continue
                run = (len(out), 1, signature)
                out.append(
                    Step(
                        StepKind.section,
                        step.call.path,
                        step.call.type,
                        step.inputs,
                        step.output,
                        step.time,
                        step.call,
                        span=len(inner),
                    )
                )
                out.extend(inner)
            return out

        stream = tuple(s for root in self.trace.calls if root.parent is None for s in expand(root))
        return stream, MappingProxyType(side)

    def signature(self, steps: list[Step]) -> tuple:
        """What a reader of these steps sees, internals of boxes included: equal signatures draw alike."""

        def shape(t: TensorMeta) -> tuple:
            return t.shape, t.symbols

        def label(s: Step) -> str:  # an opened call inside a layer is labelled with its path: layer 0's
            return short_path(s.call) if s.kind == StepKind.section and s.call else s.label

        return tuple(
            (s.kind, label(s), s.title, tuple(map(shape, s.inputs)), shape(s.output))
            + ((self.signature(self.inner(s.call)),) if s.kind == StepKind.call and s.call else ())
            for s in steps
        )

    def branches(self, r: ResidualAdd) -> list[list[tuple[str, str]]]:
        """For each branch of a residual add, (name in the code, title) of each step on it, first
        applied first: [[("norm", "RMSNorm"), ("attn", "CausalSelfAttention")]] for x + attn(norm(x))."""
        found = []
        for b in r.branches:
            parts: list[tuple[int, str, str]] = [
                (self.trace.calls[i].end, short_path(self.trace.calls[i]), self.trace.calls[i].type)
                for i in b.calls
            ]
            last_helper = None
            for i in b.ops:
                op = self.trace.ops[i]
                helper = self.helper_of.get(op.frame, (op.function, op.frame))
                if op.function != "forward" and helper == last_helper:
                    continue  # more ops of the same helper call
                last_helper = helper
                parts.append((op.time, helper[0] if op.function != "forward" else op.name, op_title(op.name)))
            found.append([(name, title) for _, name, title in sorted(parts)])
        return found


def _descendants(trace: Trace) -> set[int]:
    """Ids of the values computed from the trace's first input (x, or the token ids), through the
    ops: the stream and what branches off it. Positions, masks and rotary tables, made from sizes,
    buffers or inputs of their own (a Block's cos and sin), are not."""
    found = {t.id for t in trace.inputs[:1]}
    for op in trace.ops:
        if any(t.id in found for t in op.inputs):
            found.update(t.id for t in op.outputs)
    return found


def _outer_helpers(trace: Trace) -> dict[int, tuple[str, int]]:
    """Frame -> (function, frame) of the outermost helper call it ran under, below a forward: the
    ops of rotate_half, called by apply_rotary_pos_emb, are that apply_rotary_pos_emb call's."""
    frames = {f.frame: f for f in trace.frames}
    found: dict[int, tuple[str, int]] = {}
    for f in trace.frames:
        outer = f
        while (
            outer.caller is not None and outer.caller in frames and frames[outer.caller].function != "forward"
        ):
            outer = frames[outer.caller]
        found[f.frame] = (outer.function, outer.frame)
    return found


def _merged(steps: list[Step]) -> list[Step]:
    merged: list[Step] = []
    for step in steps:
        if merged and _joins(merged[-1], step):
            last = merged[-1]
            # a helper of several ops is titled by its function's name: "apply_rotary_emb"
            if step.kind == StepKind.helper:
                label, title = last.label, last.label
            elif step.kind == StepKind.compute:  # relu, square -> "ReLU, square"
                label, title = f"{last.label}, {step.label}", f"{last.title}, {step.title}"
            else:
                label, title = f"{last.label}, {step.label}", last.title
            merged[-1] = Step(
                last.kind,
                label,
                title,
                last.inputs,
                step.output,
                step.time,
                last.call,
                (*last.ops, *step.ops),
                frame=last.frame,
            )
        else:
            merged.append(step)
    return merged


def _joins(last: Step, step: Step) -> bool:
    """Whether `step` continues `last` as one step."""
    if step.kind == StepKind.helper:  # more ops of the same call of the same helper function
        return last.kind == StepKind.helper and (last.label, last.frame) == (step.label, step.frame)
    if not step.inputs or step.inputs[0].id != last.output.id:
        return False
    if step.kind == StepKind.shape:  # views of what the last step made
        return last.kind in (StepKind.call, StepKind.helper, StepKind.shape)
    return step.kind == StepKind.compute and last.kind == StepKind.compute  # a chain like relu, square
