"""Trace -> Graph: the data flow of every level the drawing opens, built once. No torch here.

A level is the inside of one module call. Its steps are what ran directly in it, in the order they
finished: child module calls, helper calls (one call of a function of the model's code that is not
a forward, with everything it ran, module calls included, as one step), and ops. An add whose value
only feeds the next add of the same level is a term of that sum: x + attn(..) + mlp(..) is one step.

The stream of a level runs from its main input (the call's first tensor input, or for the root the
first input the main output is computed from) to its main output (its first tensor output). It is
found in one pass over the steps in order: a step continues the stream when it reads the stream's
current value (a module call: as its first input) and its value leads to the main output. What else
a stream step reads is a side input, named by where it came from (the mask, the rotary tables,
value embeddings, an encoder's output), unless it is the stream's own earlier value: then the step
joins a residual. A residual's join reads the stream value `x` from before its branches, as it is
or only scaled by ops, and its branches computed from x through at least one module or helper call;
no other join of the level reads x. A parallel block's second branch may start from a stream value
after x (GPT-J's mlp(ln_1(x)) beside attn(ln_1(x))): what the join, or a step of the branch, reads
from such a value through a call is on the same residual's branches, not a side input. An earlier
stream value that several joins read (nanochat's x0) is a side input of each. An add anywhere else
(inside a branch, inside a box) is no residual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property

from blocktrace.tracing.graph.assigned import assigned_names, line_parts
from blocktrace.tracing.graph.level import LevelFlow
from blocktrace.tracing.graph.model import (
    Graph,
    Level,
    Step,
    StepKind,
)
from blocktrace.tracing.ops import facts
from blocktrace.tracing.records import map_leaves
from blocktrace.tracing.trace import Frame, ModuleCall, OpCall, TensorMeta, Trace

_KEPT = "_graph"  # where a trace object keeps its graph: no field, so neither its JSON nor its equality


def build_graph(trace: Trace) -> Graph:
    """The graph of `trace`, built afresh; `graph_of` builds it once per trace."""
    roots = trace.children(None)
    if not roots:
        return Graph(())
    names = {t.id: trace.input_name(i) for i, t in enumerate(trace.inputs)}
    names.update((int(k), name) for k, name in trace.buffers.items())
    builder = _Builder(trace)
    builder.open(roots[0], names, None, root=True)
    return Graph(tuple(builder.levels), tuple(builder.beside))


def graph_of(trace: Trace) -> Graph:
    """The graph of `trace`, built on first use and kept with that trace object: the tracer's
    residual rule and every view read the same one."""
    graph = trace.__dict__.get(_KEPT)
    if graph is None:
        graph = trace.__dict__[_KEPT] = build_graph(trace)
    return graph


def handed_on(source: Trace, target: Trace, fn: Callable[[TensorMeta], TensorMeta] | None = None) -> Trace:
    """`target`, keeping `source`'s graph where one was built, its values mapped by `fn`. For a
    target that is `source` with its residual adds found, or its tensors sized and named by `fn`
    (an id's every occurrence alike), and its calls' weights and ops' FLOPs restated: the graph
    reads none of those, so building it again would give this one (tests/test_graph_once.py)."""
    graph = source.__dict__.get(_KEPT)
    if graph is not None:
        target.__dict__[_KEPT] = graph if fn is None else map_leaves(graph, TensorMeta, fn)
    return target


def made_name(step: Step, trace: Trace) -> str:
    """What a value is named by, where it is read beside the stream: the step that made it, or for
    a slice of a buffer, the buffer (`cos[…]`, the rotary table cut to the sequence), for one of a
    parameter, the parameter as the code slices it (`x0_lambdas[0]`)."""
    if step.kind == StepKind.op and step.name == "getitem":
        read = {r.position: r.name for r in trace.ops[step.ops[0]].parameters}
        if 0 in read:
            return read[0]
        if len(step.inputs) == 1 and (key := str(step.inputs[0].id)) in trace.buffers:
            return f"{trace.buffers[key]}[…]"
    return step.name


def residual_joins(trace: Trace) -> dict[int, int]:
    """Op index of each residual sum's last add -> the id of the stream value it adds back, for
    every residual the graph finds (a join call's: the add inside it)."""
    graph = graph_of(trace)
    found = {}
    for level in graph.levels:
        for r in level.residuals:
            if r.adds:
                found[max(level.steps[r.join].ops)] = r.skip.id
    return found


class CallSteps:
    """The steps directly inside any module call, a helper as one step taking all it read and
    returning what it returned: what the views list as a box's internals. One builder per trace,
    each call's steps worked out once."""

    def __init__(self, trace: Trace):
        self._builder = _Builder(trace)
        self._found: dict[int, tuple[Step, ...]] = {}

    def __call__(self, call: int) -> tuple[Step, ...]:
        if call not in self._found:
            self._found[call] = tuple(self._builder.steps(self._builder.trace.calls[call]))
        return self._found[call]


def outer_helpers(frames: Iterable[Frame]) -> dict[int, tuple[str, int]]:
    """Frame -> (function, frame) of the outermost helper call it ran under, below a forward: the
    ops of rotate_half, called by apply_rotary_pos_emb, are that apply_rotary_pos_emb call's."""
    by_number = {f.frame: f for f in frames}
    found: dict[int, tuple[str, int]] = {}
    for f in by_number.values():
        outer = f
        while outer.caller is not None and outer.caller in by_number:
            caller = by_number[outer.caller]
            if caller.function == "forward":
                break
            outer = caller
        found[f.frame] = (outer.function, outer.frame)
    return found


class _Builder:
    def __init__(self, trace: Trace):
        self.trace = trace
        self.helper_of = outer_helpers(trace.frames)
        self.levels: list[Level] = []
        # tensor id -> the name the code assigns a value made by an op: what it is called beside
        # the stream (a stream value is rebound as it goes, x = ..., and keeps its op's name)
        self.code_names: dict[int, str] = {}
        self.beside: list[tuple[int, int]] = []  # calls off every stream that hold residuals: how many
        # op-level provenance: tensor id -> the ids of the op inputs it was computed from
        self.parents: dict[int, tuple[int, ...]] = {}
        self.op_of: dict[int, int] = {}  # tensor id -> the op that made it
        for op in trace.ops:
            own = {t.id for t in op.inputs}
            for out in op.outputs:
                if out.id not in own:
                    self.parents.setdefault(out.id, tuple(t.id for t in op.inputs))
                    self.op_of.setdefault(out.id, op.index)
        self.callees: dict[int, list[int]] = {}
        for f in trace.frames:
            if f.caller is not None:
                self.callees.setdefault(f.caller, []).append(f.frame)
        self.adds = [0]  # adds[i]: how many of the first i ops are adds
        for op in trace.ops:
            self.adds.append(self.adds[-1] + facts(op.name).is_add)
        # call index -> the ops run inside it, its callees' included: contiguous in the order ops ran
        self.span: dict[int, tuple[int, int]] = {}
        for op in trace.ops:
            c = op.call
            while c is not None:
                first, _ = self.span.get(c, (op.index, op.index))
                self.span[c] = (first, op.index + 1)
                c = trace.calls[c].parent
        self.busy = {o.frame for o in trace.ops} | {c.site.frame for c in trace.calls if c.site is not None}
        self.functions = {f.frame: f.function for f in trace.frames}
        self.callers = {f.frame: f.caller for f in trace.frames}

    def helper_name(self, frame: int, function: str) -> str:
        """A helper as the code names it; a wrapper that only passed its call on (a decorator's) is
        named by what it called."""
        while frame not in self.busy and len(self.callees.get(frame, [])) == 1:
            frame = self.callees[frame][0]
            function = self.functions.get(frame, function)
        return function

    def _adds_inside(self, step: Step) -> bool:
        calls = (step.call,) if step.call is not None else step.calls
        spans = [self.span.get(c, (0, 0)) for c in calls]
        return any(self.adds[a] != self.adds[b] for a, b in spans)

    def ops_inside(self, call: ModuleCall) -> tuple[OpCall, ...]:
        first, end = self.span.get(call.index, (0, 0))
        return self.trace.ops[first:end]

    def owners(self, call: ModuleCall, steps: list[Step]) -> dict[int, int]:
        """Op index -> the step of `call`'s level it ran in (inside a child call, a helper, or as
        itself)."""
        step_of_call = {s.call: i for i, s in enumerate(steps) if s.call is not None}
        for i, s in enumerate(steps):
            step_of_call.update((c, i) for c in s.calls)
        found = {o: i for i, s in enumerate(steps) for o in s.ops}
        for op in self.ops_inside(call):
            c = op.call
            while c is not None and c not in step_of_call and c != call.index:
                c = self.trace.calls[c].parent
            if c is not None and c in step_of_call:
                found.setdefault(op.index, step_of_call[c])
        return found

    # --- steps --------------------------------------------------------------------------------
    def _chain(self, item: ModuleCall | OpCall) -> list[int]:
        """The frames an item ran under, innermost first, up to the forward that made it."""
        if isinstance(item, ModuleCall):
            if item.site is None:
                return []
            frame, function = item.site.frame, item.site.function
        else:
            frame, function = item.frame, item.function
        chain = [frame]
        while function not in ("forward", "?") and self.callers.get(chain[-1]) is not None:
            chain.append(self.callers[chain[-1]])  # type: ignore[arg-type]
            function = self.functions.get(chain[-1], "forward")
        return chain

    def _group(self, item: ModuleCall | OpCall, within: int | None) -> int | bool | None:
        """The helper frame directly below `within` (None: the level's forward) that `item` ran in;
        None where it ran in `within` itself; False where it is not `within`'s at all."""
        chain = self._chain(item)
        if within is None:
            helpers = [f for f in chain if self.functions.get(f, "forward") not in ("forward", "?")]
            if isinstance(item, OpCall) and item.function not in ("forward", "?") and not helpers:
                return item.frame  # a helper frame the trace did not keep
            return helpers[-1] if helpers else None
        if within not in chain:
            return False
        j = chain.index(within)
        return chain[j - 1] if j > 0 else None

    def items(self, call: ModuleCall, within: int | None) -> list[ModuleCall | OpCall]:
        found = self.trace.timeline(call.index)
        return found if within is None else [i for i in found if self._group(i, within) is not False]

    def steps(self, call: ModuleCall, within: int | None = None) -> list[Step]:
        """The steps directly inside `call` (or inside its helper call `within`), in the order they
        finished."""
        groups: dict[tuple[str, int], list[ModuleCall | OpCall]] = {}
        for item in self.items(call, within):
            helper = self._group(item, within)
            key = ("helper", helper) if isinstance(helper, int) and helper is not True else ("item", id(item))
            groups.setdefault(key, []).append(item)
        uses = self._uses(call)
        found = []
        for key, items in groups.items():
            if key[0] == "helper":
                found.append(self._helper_step(items, uses, call, key[1]))
            elif isinstance(items[0], ModuleCall):
                c = items[0]
                name = c.path[len(call.path) + 1 :] if call.path else c.path  # as the level's code names it
                found.append(Step(StepKind.call, name, c.type, c.inputs, c.outputs, c.end, c.index))
            else:
                o = items[0]
                found.append(Step(StepKind.op, o.name, o.name, o.inputs, o.outputs, o.time, ops=(o.index,)))
        return _sums(sorted(found, key=lambda s: s.time))

    def _uses(self, call: ModuleCall) -> dict[int, list[int]]:
        """Tensor id -> the times of the items of `call`'s level that read it (its outputs: never)."""
        uses: dict[int, list[int]] = {}
        for item in self.trace.timeline(call.index):
            time = item.end if isinstance(item, ModuleCall) else item.time
            for t in item.inputs:
                uses.setdefault(t.id, []).append(time)
        return uses

    def _helper_step(
        self, items: list[ModuleCall | OpCall], uses: dict[int, list[int]], call: ModuleCall, frame: int
    ) -> Step:
        """A helper call: it takes what its items read from outside it, and returns what it made
        that the level reads after it, or that leaves the level; having made none of that, what it
        took that the level reads after it (a cache's update()); else what it made last."""
        made: dict[int, TensorMeta] = {}
        for item in items:
            own = {t.id for t in item.inputs}
            made.update((t.id, t) for t in item.outputs if t.id not in own)
        taken = {t.id: t for item in items for t in item.inputs if t.id not in made}
        end = max(i.end if isinstance(i, ModuleCall) else i.time for i in items)
        leaving = {t.id for t in call.outputs}
        returned = [t for t in made.values() if t.id in leaving or any(u > end for u in uses.get(t.id, ()))]
        if not returned:  # what it handed back as it took it (a cache's update() returns its keys)
            returned = [t for t in taken.values() if any(u > end for u in uses.get(t.id, ()))]
        if not returned:
            returned = list(items[-1].outputs)
        # what it made and then read itself (attention probabilities returned beside the output
        # computed from them) comes after what it made last: the stream goes on with the result
        read = {t.id for item in items for t in item.inputs}
        returned.sort(key=lambda t: t.id in read)
        first = items[0]
        function = first.function if isinstance(first, OpCall) and first.frame == frame else "?"
        name = self.helper_name(frame, self.functions.get(frame, function))
        return Step(
            StepKind.helper,
            name,
            name,
            tuple(taken.values()),
            tuple(returned),
            end,
            ops=tuple(i.index for i in items if isinstance(i, OpCall)),
            calls=tuple(i.index for i in items if isinstance(i, ModuleCall)),
            frame=frame,
        )

    @cached_property
    def line_parts(self) -> set[int]:
        """The values a later op or call of their own line reads: no line assigns them."""
        return line_parts(self.trace, self.op_of)

    def code_name(self, step: Step) -> str | None:
        """The one name the line of an op assigns its value to, where that value is what the line
        leaves (`position_ids = position_ids.unsqueeze(0)`); None for anything else."""
        op = self.trace.ops[step.ops[0]] if step.kind == StepKind.op else None
        if op is None or len(op.outputs) != 1 or op.outputs[0].id in self.line_parts:
            return None
        named = assigned_names(op.file, op.line, 1)
        return named[0] if named else None

    # --- levels -------------------------------------------------------------------------------
    def open(
        self,
        call: ModuleCall,
        names: dict[int, str],
        skip: TensorMeta | None,
        root: bool = False,
        helper: Step | None = None,
    ) -> Level:
        """The level of `call` (or of its helper call `helper`), and those of the calls and helpers
        on its stream that hold residuals; each appended to self.levels, outer levels first."""
        frame = None if helper is None else helper.frame
        steps = self.steps(call, frame)
        while helper is not None and len(steps) == 1 and steps[0].kind == StepKind.helper:
            frame = steps[0].frame  # a wrapper that only passed its call on: its callee's inside
            steps = self.steps(call, frame)
        producer = _producers(steps)
        outputs = call.outputs if helper is None else helper.outputs
        if root and not outputs:  # a forward that failed (--partial): the stream ends where it stopped
            outputs = self.trace.outputs
        main_out = outputs[0] if outputs else None
        inputs = call.inputs if helper is None else helper.inputs
        for i, s in enumerate(steps):
            for t in s.outputs:
                if producer.get(t.id) == i:
                    names.setdefault(t.id, made_name(s, self.trace))
                    if names[t.id] == s.name and (code := self.code_name(s)) is not None:
                        self.code_names.setdefault(t.id, code)

        def level_from(main_in: TensorMeta | None) -> LevelFlow:
            return LevelFlow(steps, producer, main_in, main_out, skip, names, outputs, self, call, frame)

        level = level_from(inputs[0] if inputs else None)
        if root and not level.segments:  # an encoder-decoder's stream starts at the decoder's inputs
            level = next((lv for lv in map(level_from, inputs[1:]) if lv.segments), level)
        index = len(self.levels)
        self.levels.append(level.result(call.index, ()))  # the outer level comes first
        opened = []
        for i in level.spine:
            step = steps[i]
            inner_skip = level.join_skips.get(i)
            mark = len(self.levels)
            if inner_skip is None and not self._adds_inside(step):
                continue  # no add inside: no residual to find
            if step.kind == StepKind.call:
                assert step.call is not None
                inner = self.open(self.trace.calls[step.call], names, inner_skip)
            elif step.kind == StepKind.helper and step.calls:
                inner = self.open(call, names, inner_skip, helper=step)
            else:
                continue
            if inner_skip is not None or inner.residuals or inner.opened:
                opened.append(i)
            else:
                del self.levels[mark:]
        for i, step in enumerate(steps):
            beside_stream = i not in level.spine and i not in level.in_branches
            if step.kind == StepKind.call and beside_stream and self._adds_inside(step):
                assert step.call is not None
                mark = len(self.levels)
                beside = self.open(self.trace.calls[step.call], names, None)
                count = (
                    len(Graph(tuple(self.levels[mark:])).residuals)
                    if beside.residuals or beside.opened
                    else 0
                )
                if count:  # a stream of its own (an encoder's), drawn and counted beside this one
                    self.beside.append((step.call, count))
                else:
                    del self.levels[mark:]
        result = level.result(call.index, tuple(opened))
        self.levels[index] = result
        return result


def _sums(steps: list[Step]) -> list[Step]:
    """Merge each add whose value only feeds a later add of the level into that add: one step per
    sum, taking the sum's terms."""
    readers: dict[int, list[int]] = {}
    for i, s in enumerate(steps):
        for t in s.inputs:
            readers.setdefault(t.id, []).append(i)
    into: dict[int, int] = {}  # add step -> the add step it feeds
    for i, s in enumerate(steps):
        if _is_add(s) and len(s.outputs) == 1:
            r = readers.get(s.outputs[0].id, [])
            if len(r) == 1 and _is_add(steps[r[0]]):
                into[i] = r[0]
    merged: dict[int, Step] = {}
    for i, s in enumerate(steps):
        if i in into:
            continue
        if _is_add(s):
            terms: list[TensorMeta] = []
            ops: list[int] = []
            todo = [i]
            while todo:
                k = todo.pop()
                ops[:0] = steps[k].ops
                for t in steps[k].inputs:
                    feeding = next(
                        (j for j, target in into.items() if target == k and _made(steps[j], t)), None
                    )
                    if feeding is None:
                        terms.append(t)
                    else:
                        todo.append(feeding)
            s = Step(s.kind, s.name, s.title, tuple(terms), s.outputs, s.time, ops=tuple(sorted(ops)))
        merged[i] = s
    return [merged[i] for i in sorted(merged)]


def _made(step: Step, t: TensorMeta) -> bool:
    return any(o.id == t.id for o in step.outputs)


def _is_add(step: Step) -> bool:
    return step.kind == StepKind.op and facts(step.name).is_add


def _producers(steps: list[Step]) -> dict[int, int]:
    """Tensor id -> the step that made it (a step that hands back its input makes nothing)."""
    found: dict[int, int] = {}
    for i, s in enumerate(steps):
        own = {t.id for t in s.inputs}
        for t in s.outputs:
            if t.id not in own:
                found.setdefault(t.id, i)
    return found
