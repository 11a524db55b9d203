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

from blocktrace.tracing.graph.build import CallSteps, graph_of, outer_helpers
from blocktrace.tracing.graph.model import Graph, Level
from blocktrace.tracing.graph.model import StepKind as GraphKind
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
    calls: tuple[ModuleCall, ...] = ()  # for a helper: the module calls it made (self.q(x) in attention())
    taken: tuple[TensorMeta, ...] = ()  # for a helper: all it read from outside it (q, k, cos, sin)
    returned: tuple[TensorMeta, ...] = ()  # for a helper: what it returned (q and k)


@dataclass(frozen=True)
class Part:
    """One step on a residual's branch, as its caption writes it."""

    name: str  # as the code names it: "attn", a helper's "project"
    title: str
    read: tuple[TensorMeta, ...]  # what it read beside the branch (the rotary tables, a context)
    returned: tuple[int, ...] = ()  # a helper's values, where it returned several (q, k and v)


def code_name(step: Step) -> str:
    """The step as the code names it: "attn", "c_q, view", a helper call as "norm()"."""
    return step.label + ("()" if step.kind == StepKind.helper else "")


def short_path(call: ModuleCall) -> str:
    return call.path.rsplit(".", 1)[-1]


def call_step(call: ModuleCall) -> Step:
    """A module call as one step: a box titled by its class, named by its attribute."""
    return Step(StepKind.call, short_path(call), call.type, call.inputs, call.outputs[0], call.end, call)


def op_step(op: OpCall) -> Step:
    """An op as one step: a reshape (view, transpose) or a computation."""
    kind = StepKind.shape if facts(op.name).reshapes else StepKind.compute
    return Step(kind, op.name, op_title(op.name), op.inputs, op.outputs[0], op.time, ops=(op,))


class StepTree:
    """The steps of one trace, each call's worked out once: the stream (drawn with `collapse` as
    `stream` says) and the side computations beside it, both made together on first use."""

    def __init__(self, trace: Trace, collapse: bool = True):
        self.trace = trace
        self.collapse = collapse
        self.residual_at = {r.op: r for r in trace.residual_adds}
        self.in_sums = {i for r in trace.residual_adds for i in r.adds}
        self._inner: dict[int, list[Step]] = {}
        self._keys: dict[int, dict[tuple[str, int], int]] = {}
        self.helper_of = outer_helpers(trace.frames)

    def inner(self, call: ModuleCall) -> list[Step]:
        """The steps directly inside `call`, grouped and folded as described above, in order."""
        if call.index not in self._inner:
            self._inner[call.index] = [
                self._with_taken(call, s) if s.kind == StepKind.helper else s
                for s in _merged(self._steps_in(call))
            ]
        return self._inner[call.index]

    def _compared(self, call: ModuleCall) -> list[Step]:
        """inner(call) where it is worked out; else its steps as far as a signature reads them, each
        helper's inputs as inner gives them but not what it returned (that takes the graph's steps of
        the call): the calls inside a layer that is only compared with the one before."""
        if call.index in self._inner:
            return self._inner[call.index]
        return [
            replace(s, inputs=self._taken(s)[0]) if s.kind == StepKind.helper else s
            for s in _merged(self._steps_in(call))
        ]

    def _with_taken(self, call: ModuleCall, step: Step) -> Step:
        """A helper step whose data inputs are what its ops and calls took from outside computed
        from the input, where there are any (apply_rotary_pos_emb's q and k, not the cos and sin
        tables); and which took and returned what the graph's step of that helper call did."""
        inputs, taken = self._taken(step)
        helper = next(
            (s for s in self.call_steps(call.index) if s.kind == GraphKind.helper and s.frame == step.frame),
            None,
        )
        # what it returned, unless views of its value were folded into the step after it
        whole = helper is not None and {o.index for o in step.ops} <= set(helper.ops)
        returned = helper.outputs if helper is not None and whole else ()
        return replace(step, inputs=inputs, taken=taken, returned=returned)

    def _taken(self, step: Step) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
        """A helper step's data inputs and all it took from outside (see _with_taken)."""
        items: tuple[OpCall | ModuleCall, ...] = (*step.ops, *step.calls)
        made = {t.id for item in items for t in item.outputs}
        taken = tuple({t.id: t for item in items for t in item.inputs if t.id not in made}.values())
        place = self.argument_places.get(step.frame, {})
        if taken and all(t.id in place for t in taken):  # in the order the call passed them
            taken = tuple(sorted(taken, key=lambda t: place[t.id]))
        on_stream = tuple(t for t in taken if t.id in self.from_input)
        return on_stream or taken[:1], taken

    @cached_property
    def argument_places(self) -> dict[int, dict[int, int]]:
        """Frame -> tensor id -> its place among the parameters of that call (the first, if several)."""
        return {
            f.frame: {tid: k for k, tid in reversed(list(enumerate(f.arguments))) if tid >= 0}
            for f in self.trace.frames
            if f.arguments is not None
        }

    @cached_property
    def from_input(self) -> set[int]:
        """Ids of the values computed from the model's first input or from where the drawn stream
        starts (an encoder-decoder's decoder input ids, beside its encoder's)."""
        start = self.stream_input
        return _descendants(self.trace, (*self.trace.inputs[:1], *((start,) if start is not None else ())))

    @cached_property
    def graph(self) -> Graph:
        """The trace's data-flow graph: which steps carry the stream, what each reads beside it."""
        return graph_of(self.trace)

    @cached_property
    def call_steps(self) -> CallSteps:
        return CallSteps(self.trace)

    def _graph_steps(self, level: Level, step: Step) -> set[int]:
        """The indices of the level's graph steps that the drawn step is made of."""
        if level.call not in self._keys:
            keys: dict[tuple[str, int], int] = {}
            for i, s in enumerate(level.steps):
                keys.update((("call", c), i) for c in (*((s.call,) if s.call is not None else ()), *s.calls))
                keys.update((("op", o), i) for o in s.ops)
            self._keys[level.call] = keys
        keys = self._keys[level.call]
        items = [("call", c.index) for c in (*((step.call,) if step.call else ()), *step.calls)]
        items += [("op", o.index) for o in step.ops]
        return {keys[k] for k in items if k in keys}

    def _level_of(self, step: Step) -> Level | None:
        """The graph level the drawn step is directly inside."""
        if step.call is not None and step.kind in (StepKind.call, StepKind.section):
            parent = step.call.parent
        elif step.calls:
            parent = step.calls[0].parent
        elif step.ops:
            parent = step.ops[0].call
        else:
            return None
        return None if parent is None else self.graph.level(parent)

    def reads(self, step: Step) -> list[tuple[str, tuple[TensorMeta, ...]]]:
        """What the drawn step reads beside the stream, by where it came from (the encoder, the
        rotary tables, a mask), each value once, in the order the graph found them."""
        level = self._level_of(step)
        if level is None:
            return []
        inside = self._graph_steps(level, step)
        made = {t.id for i in inside for t in level.steps[i].outputs}
        made -= {t.id for i in inside for t in level.steps[i].inputs}  # not what it hands back (T5's bias)
        if step.kind == StepKind.section and step.inputs:  # a stream drawn beside: its own input
            made.add(step.inputs[0].id)
        found: dict[str, dict[int, TensorMeta]] = {}
        for side in level.side_inputs:
            if side.step in inside and side.value.id not in made:
                found.setdefault(side.source, {})[side.value.id] = side.value
        return [(source, tuple(values.values())) for source, values in found.items()]

    def _on_stream(self, call: ModuleCall) -> set[int] | None:
        """The graph steps of the call's level that carry its stream or compute a residual's branch;
        None where the graph found no stream there."""
        level = self.graph.level(call.index)
        if level is None or not level.segments:
            return None
        found = {i for seg in level.segments for i in seg.steps}
        for r in level.residuals:
            found.update(r.scaled)
            found.update(i for b in r.branches for i in b.steps)
        # a step that computes from inside a branch for a step on the stream (a second branch off a
        # norm that both share) is drawn on it too; what only reads stream values beside it is not
        stream = {t.id for t in level.stream}
        inside = {t.id for i in found for t in level.steps[i].outputs} - stream
        readers = {t.id: i for i in sorted(found, reverse=True) for t in level.steps[i].inputs}
        grown = True
        while grown:
            grown = False
            for i, s in enumerate(level.steps):
                feeds = any(t.id in readers for t in s.outputs)
                if i not in found and feeds and any(t.id in inside for t in s.inputs):
                    found.add(i)
                    inside.update(t.id for t in s.outputs)
                    grown = True
        return found

    def side_outputs(self) -> list[tuple[TensorMeta | None, list[str], TensorMeta]]:
        """Each value the model returns besides its main output: the latest value drawn on the
        stream it was computed from (None where it was computed from none), the names of the steps
        that made it from there, in the order they ran, and the value."""
        if not self.graph.levels:
            return []
        root = self.graph.root
        producer: dict[int, int] = {}
        for i, s in enumerate(root.steps):
            own = {t.id for t in s.inputs}
            producer.update((t.id, i) for t in s.outputs if t.id not in own and t.id not in producer)
        # the values drawn on the stream: its own, and those its branches' steps made, by when made
        drawn = self._on_stream(self.trace.calls[root.call]) or set()
        position = {t.id: -1 for t in root.stream[:1]}
        position.update((t.id, i) for i in sorted(drawn) for t in root.steps[i].outputs)
        position.update((t.id, producer.get(t.id, -1)) for t in root.stream[1:])
        found = []
        for out in root.side_outputs:
            origins, made, todo = [], set(), [out]
            while todo:
                t = todo.pop()
                step = producer.get(t.id)
                if t.id in position:
                    origins.append(t)
                elif step is not None and step not in made:
                    made.add(step)
                    todo.extend(root.steps[step].inputs)
            origin = max(origins, key=lambda t: position[t.id], default=None)
            found.append((origin, [root.steps[i].name for i in sorted(made)], out))
        return found

    @property
    def stream_input(self) -> TensorMeta | None:
        """Where the drawn stream starts: the root level's main input (an encoder-decoder's decoder
        input), else the trace's first input."""
        root = self.graph.root if self.graph.levels else None
        if root is not None and root.segments and root.main_input is not None:
            return root.main_input
        return self.trace.inputs[0] if self.trace.inputs else None

    def _steps_in(self, call: ModuleCall) -> list[Step]:
        steps: list[Step] = []
        for item in self.trace.timeline(call.index):
            if isinstance(item, ModuleCall):
                site = item.site
                if item.outputs and site is not None and site.function != "forward":
                    # made by a helper (attention(x) calling self.q, self.k ...): one step with its ops
                    function, frame = self.helper_of.get(site.frame, (site.function, site.frame))
                    steps.append(
                        Step(
                            StepKind.helper,
                            function,
                            function,
                            item.inputs,
                            item.outputs[0],
                            item.end,
                            frame=frame,
                            calls=(item,),
                        )
                    )
                elif item.outputs:
                    steps.append(call_step(item))
                continue
            op = item
            r = self.residual_at.get(op.index)
            if r is not None:
                inputs = (r.stream, *(b.output for b in r.branches), *r.sides)
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
                steps.append(op_step(op))
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

    @property
    def beside(self) -> tuple[tuple[Step, ...], ...]:
        """The streams of the calls beside the stream that hold residuals of their own (an
        encoder-decoder's encoder), each its section step and then its steps, in the order they ran:
        drawn before the stream."""
        return self._flow[2]

    def residual_parts(self) -> list[tuple[str, int]]:
        """Where streams are drawn beside the model's: how many residual adds each holds, (its call's
        path, the count), the model's own last, named by the call it runs through ("decoder")."""
        counts = dict(self.graph.beside)
        parts = [(p[0].label, counts[p[0].call.index]) for p in self.beside if p[0].call is not None]
        if not parts:
            return []
        sections = [s.call.path for s in self.stream if s.kind == StepKind.section and s.call is not None]
        rest = len(self.trace.residual_adds) - sum(n for _, n in parts)
        return [*parts, (sections[0] if sections else "stream", rest)]

    @cached_property
    def _flow(self) -> tuple[tuple[Step, ...], Mapping[int, Step], tuple[tuple[Step, ...], ...]]:
        """The stream, the side computations and the streams beside it: one walk of the opened calls."""
        opened, collapse = self.opened, self.collapse
        side: dict[int, Step] = {}
        beside_calls = {c for c, _ in self.graph.beside} & opened
        beside: list[tuple[Step, ...]] = []

        def expand(call: ModuleCall) -> list[Step]:
            out: list[Step] = []
            run: tuple[int, int, tuple] | None = (
                None  # (index of the run's section in out, length, signature)
            )
            level = self.graph.level(call.index)
            on_stream = self._on_stream(call)
            for step in (part for s in self.inner(call) for part in self._opened_parts(s)):
                if on_stream is not None and level is not None:
                    off = not self._graph_steps(level, step) & on_stream
                else:
                    off = bool(self.from_input) and step.output.id not in self.from_input
                if off and step.call is not None and step.call.index in beside_calls:
                    inner = expand(step.call)
                    section = replace(step, kind=StepKind.section, label=step.call.path, span=len(inner))
                    beside.append((section, *inner))
                if off:
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
        return stream, MappingProxyType(side), tuple(beside)

    @cached_property
    def _open_helpers(self) -> set[tuple[str, int]]:
        """The helper calls (function, frame) that call a module drawn open: drawn as their parts."""
        return {
            self.helper_of.get(c.site.frame, (c.site.function, c.site.frame))
            for c in self.trace.calls
            if c.index in self.opened and c.site is not None and c.site.function != "forward"
        }

    def _opened_parts(self, step: Step) -> list[Step]:
        """A helper step that calls a module with a residual add inside (BertLayer's
        apply_chunking_to_forward calling BertOutput) as its module calls and ops, each a step of
        its own, so that the opened call is drawn open; any other step as it is."""
        if step.kind != StepKind.helper or not any(c.index in self.opened for c in step.calls):
            return [step]
        items: list[ModuleCall | OpCall] = sorted(
            (*step.calls, *step.ops), key=lambda i: i.end if isinstance(i, ModuleCall) else i.time
        )
        return [call_step(item) if isinstance(item, ModuleCall) else op_step(item) for item in items]

    def signature(self, steps: list[Step]) -> tuple:
        """What a reader of these steps sees, internals of boxes included: equal signatures draw alike."""

        def shape(t: TensorMeta) -> tuple:
            return t.shape, t.symbols

        def label(s: Step) -> str:  # an opened call inside a layer is labelled with its path: layer 0's
            return short_path(s.call) if s.kind == StepKind.section and s.call else s.label

        return tuple(
            (s.kind, label(s), s.title, tuple(map(shape, s.inputs)), shape(s.output))
            + ((self.signature(self._compared(s.call)),) if s.kind == StepKind.call and s.call else ())
            for s in steps
        )

    def branches(self, r: ResidualAdd) -> list[list[Part]]:
        """For each branch of a residual add, each step on it, first applied first: [[("norm",
        "RMSNorm", (), ()), ("attn", "CausalSelfAttention", (cos, sin), ())]] for x + attn(norm(x),
        cos_sin)."""
        found = []
        for b in r.branches:
            # one part per call, per helper call (its ops and the module calls it made), per other
            # op; each as its first item names it, in the order they ran
            items: list[tuple[int, ModuleCall | OpCall]] = [
                (self.trace.calls[i].end, self.trace.calls[i]) for i in b.calls
            ]
            items += [(self.trace.ops[i].time, self.trace.ops[i]) for i in b.ops]
            parts: dict[tuple[str, int], tuple[int, str, str]] = {}
            reads: dict[tuple[str, int], dict[int, TensorMeta]] = {}
            returned: dict[tuple[str, int], tuple[int, ...]] = {}
            made = {r.stream.id, *(t.id for _, item in items for t in item.outputs)}
            for time, item in sorted(items, key=lambda pair: pair[0]):
                where = (
                    (item.site.function, item.site.frame)
                    if isinstance(item, ModuleCall) and item.site
                    else None
                )
                if isinstance(item, OpCall):
                    where = (item.function, item.frame)
                helper = None if where is None else self.helper_of.get(where[1], where)
                if where is not None and where[0] != "forward" and helper not in self._open_helpers:
                    function, frame = helper  # type: ignore[misc]
                    title = op_title(item.name) if isinstance(item, OpCall) else function
                    key = ("helper", frame)
                    parts.setdefault(key, (time, function, title))
                elif isinstance(item, ModuleCall):
                    key = ("call", item.index)
                    parts[key] = (time, short_path(item), item.type)
                else:
                    key = ("op", item.index)
                    parts[key] = (time, item.name, op_title(item.name))
                reads.setdefault(key, {}).update((t.id, t) for t in item.inputs if t.id not in made)
            level = self.trace.ops[r.op].call
            inner = self.inner(self.trace.calls[level]) if level is not None else []
            for step in inner:  # a helper: all it read from outside it, not what its own ops made
                if step.kind == StepKind.helper and ("helper", step.frame) in reads:
                    reads[("helper", step.frame)] = {t.id: t for t in step.taken if t.id not in made}
                    returned[("helper", step.frame)] = tuple(t.id for t in step.returned)
            ordered = sorted(parts.items(), key=lambda kv: kv[1])
            found.append(
                [
                    Part(name, title, tuple(reads[key].values()), returned.get(key, ()))
                    for key, (_, name, title) in ordered
                ]
            )
        return found


def _descendants(trace: Trace, starts: tuple[TensorMeta, ...]) -> set[int]:
    """Ids of the values computed from `starts` (x, or the token ids), through the ops: the stream
    and what branches off it. Positions, masks and rotary tables, made from sizes, buffers or inputs
    of their own (a Block's cos and sin), are not."""
    found = {t.id for t in starts}
    for op in trace.ops:
        if any(t.id in found for t in op.inputs):
            found.update(t.id for t in op.outputs)
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
                calls=(*last.calls, *step.calls),
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
