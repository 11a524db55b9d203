"""The formulas of a traced stream, written from its data flow, never from a pattern:

    x_mid = x + CausalSelfAttention(RMSNorm(x))
    x_out = x_mid + MLP(RMSNorm(x_mid))

Each value on the stream is named by where it came from: the input is x, the stream a residual
add starts from gets a name of its own, and so does the output; everything between is written out
as the calls and ops that made it (post-norm: h = LayerNorm(x + Attn(x))). A residual sum lists its
branches (x + Attn(LN1(x)) + MLP(LN2(x))). Then what each functional op computes and, for a box
whose internals are one chain, its composition: MLP(x) = c_proj(square(relu(c_fc(x)))). A collapsed
run of identical Blocks is written once, as drawn. No torch here.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from blocktrace.tracing.graph.assigned import assigned_names, one_statement
from blocktrace.tracing.ops import definition, facts, op_title
from blocktrace.tracing.trace import ModuleCall, OpCall, TensorMeta
from blocktrace.views.shapes import shape_text
from blocktrace.views.steps import Step, StepKind, StepTree, short_path

# the names the formulas give values themselves: an input named so keeps in_k
_OWN_NAMES = re.compile(r"x|x_\w+|h|h_\d+|in_\d+|input( \d+)?")


def _stream_names(count: int) -> list[str]:
    if count == 1:
        return ["x_out"]
    if count == 2:
        return ["x_mid", "x_out"]
    return [f"x_{i}" for i in range(1, count)] + ["x_out"]


def stream_formulas(
    tree: StepTree,
    steps: Sequence[Step],
    inputs: tuple[TensorMeta, ...] | None = None,
    called: tuple[str, ...] | None = None,
) -> list[str]:
    """One line per named value of the stream, each written from the steps that made it, with every
    operand each step took. Named are the input (x, then the others as the forward taking them
    names them, `called` for `inputs` given, in_1, ... where it names them not, each said once
    where it is read), each stream a residual add starts from, the output, and any value that
    several steps read (h, or h_1, h_2, ...): written out twice it would read as two computations.
    A value made beside the stream is written by where it came from (`encoder`, `rotary_emb`,
    `value_embeds.0`), or as the ops that made it. A stream with no residual add has no formulas,
    unless it holds a collapsed run (a call step)."""
    trace = tree.trace
    taken = trace.inputs if inputs is None else inputs
    if inputs is None:  # the model's: x is where the drawn stream starts (a decoder's input)
        start = tree.stream_input
        inputs = tuple(sorted(trace.inputs, key=lambda t: start is None or t.id != start.id))
    drawn = [s for s in steps if s.kind != StepKind.section]
    residuals = [s.residual for s in drawn if s.residual is not None]
    runs = [
        s for s in drawn if s.kind == StepKind.call and s.call is not None and s.call.index in tree.opened
    ]
    if not residuals and not runs:
        return []
    made_at: dict[int, list[int]] = {}  # tensor id -> positions in `drawn` of the steps that gave it
    for pos, step in enumerate(drawn):
        for t in _outputs(step):
            made_at.setdefault(t.id, []).append(pos)
    # a residual's skip is named where the stream forks, at its first appearance in the sum's level,
    # as the drawing forks it: a step there that hands it back as it is (ModernBERT's first
    # attn_norm, an nn.Identity) is on the branch, written inside it
    bound = {i: at[-1] for i, at in made_at.items()}
    for r in residuals:
        level = trace.ops[r.op].call
        fork = [p for p in made_at.get(r.stream.id, []) if not _hands_back(drawn, p, level)]
        if fork:
            bound[r.stream.id] = fork[-1]
    names = {t.id: "x" if k == 0 else f"in_{k}" for k, t in enumerate(inputs)}
    # the inputs as the forward taking them names them (ctx, cos_sin[0], position_embeddings[0])
    called_by = trace.input_names if taken is trace.inputs else called
    if called_by is not None and len(called_by) == len(taken):
        place = {t.id: k for k, t in enumerate(taken)}
        for t in inputs[1:]:
            name = called_by[place[t.id]]
            if name not in names.values() and not _OWN_NAMES.fullmatch(name):
                names[t.id] = name
    starts = [r.stream.id for r in residuals] + [s.inputs[0].id for s in runs if s.inputs]
    streams = dict.fromkeys([*starts, *(s.output.id for s in runs), drawn[-1].output.id])
    streams_made = [i for i in streams if i not in names and i in made_at]
    names.update(zip(streams_made, _stream_names(len(streams_made)), strict=True))
    sources = {v.id: source for step in drawn for source, values in tree.reads(step) for v in values}
    beside = [s for s in tree.side.values() if s.kind in (StepKind.compute, StepKind.shape)]
    # an op that hands back its input (eval-mode dropout) does not read it a second time
    reads = Counter(
        t.id for step in (*drawn, *beside) for t in _operands(tree, step) if t.id != step.output.id
    )
    leaving = {out.id for _, _, out in tree.side_outputs()} if taken is trace.inputs else set()
    groups = _unpacked(tree, drawn, leaving)
    shared = [
        i for i in made_at if reads[i] > 1 and i not in names and not any(i in g for g in groups.values())
    ]
    names.update((i, "h" if len(shared) == 1 else f"h_{k}") for k, i in enumerate(shared, 1))
    unpacked: dict[int, dict[int, str]] = {}
    for pos, ids in groups.items():
        code = _code_names(tree, drawn[pos], len(ids))
        if code is None or set(code) & set(names.values()):
            code = tuple(f"h_{len(shared) + k}" for k in range(1, len(ids) + 1))
            shared += ids
        unpacked[pos] = dict(zip(ids, code, strict=True))
        names.update(unpacked[pos])
    used: dict[int, None] = {}  # the other inputs written, in order
    # tensor id -> (the step beside the stream holding the op that made it, that op, its index
    # among the op's values): a chunk's parts, a helper's values, each written from its own op
    side_ops = {
        o.id: (replace(s, ops=(op,)), len(op.outputs), k)
        for s in tree.side.values()
        for op in s.ops
        for k, o in enumerate(op.outputs)
    }

    given_ids = {t.id for t in inputs}
    bound_beside = _bound_beside(tree, drawn, set(names.values()))
    names.update((i, name) for ids in bound_beside.values() for i, name in ids.items())
    beside_ids = {i for ids in bound_beside.values() for i in ids}
    written: dict[int, None] = {}  # the values bound beside the stream that a formula reads

    def value(tensor_id: int, before: int) -> str:
        """The value as a step at position `before` reads it: its name once its last step has run
        (an op that hands back its input keeps the id), else what the step before made of it."""
        earlier = [p for p in made_at.get(tensor_id, []) if p < before]
        if tensor_id in names and (not earlier or earlier[-1] == bound[tensor_id]):
            if tensor_id in given_ids and tensor_id != inputs[0].id:
                used[tensor_id] = None
            if tensor_id in beside_ids:
                written[tensor_id] = None
            return names[tensor_id]
        if earlier:
            return made(earlier[-1])
        return off_stream(tensor_id, before, 8)

    def off_stream(tensor_id: int, before: int, depth: int) -> str:
        """A value made beside the stream: by where it came from when a module or the graph names
        it, else as the ops that made it from what they read (λ·x0: mul(getitem(), h))."""
        if tensor_id in beside_ids:  # one of the values an op beside the stream made, bound once: k, v
            written[tensor_id] = None
            return names[tensor_id]
        side = tree.side.get(tensor_id)
        part = side_ops.get(tensor_id)
        if part is not None and part[0].kind == StepKind.helper:  # a helper's value: on what it read
            return helper_text(part[0], tensor_id, before, depth)
        if part is not None and depth > 0 and (side is None or part[1] > 1):
            return part_text(*part, lambda t: inner(t, before, depth))
        if side is not None and side.kind in (StepKind.compute, StepKind.shape) and depth > 0:
            return _buffer_slice(side, trace.buffers) or ops_text(side, lambda t: inner(t, before, depth))
        if str(tensor_id) in trace.buffers:
            return trace.buffers[str(tensor_id)]
        if tensor_id in sources:
            return sources[tensor_id]
        if side is not None and side.kind == StepKind.call and depth > 0:  # a module off the stream: ctx(c)
            return f"{side.title}({', '.join(inner(t.id, before, depth) for t in _data_inputs(side))})"
        return f"{side.title}(…)" if side is not None else "?"

    def helper_text(helper: Step, tensor_id: int, before: int, depth: int) -> str:
        """heads(chunk(Linear(in_1))[0]): a helper's value written as its call on every value it
        read from outside it; one of several it returned by its index. Too deep: by its name."""
        if depth == 0:
            return sources.get(tensor_id, helper.title)
        read = helper.taken or helper.inputs
        text = f"{helper.title}({', '.join(inner(t.id, before, depth) for t in read)})"
        ids = [t.id for t in helper.returned]
        return f"{text}[{ids.index(tensor_id)}]" if len(ids) > 1 and tensor_id in ids else text

    def inner(t: int, before: int, depth: int) -> str:
        return value(t, before) if t in names or t in made_at else off_stream(t, before, depth - 1)

    def made(pos: int) -> str:
        step = drawn[pos]
        if step.residual is not None:  # its skip as the stream forked
            skip = step.residual.stream.id
            terms = [names[t.id] if t.id == skip and skip in names else value(t.id, pos) for t in step.inputs]
            return " + ".join(terms)
        if step.kind in (StepKind.compute, StepKind.shape) and step.ops:
            return ops_text(step, lambda t: value(t, pos))
        args = together(_data_inputs(step), pos)
        passed = tree.argument_places.get(step.frame, {}) if step.kind == StepKind.helper else {}
        for source, values in tree.reads(step):  # what it reads beside the stream, each source once
            if all(v.id in passed for v in values):  # as the call passed them: modulate(x, shift, scale)
                values = tuple(sorted(values, key=lambda v: passed[v.id]))
            elif len({side_ops[v.id][0].ops[0].index if v.id in side_ops else -1 for v in values}) == 1:
                values = tuple(sorted(values, key=lambda v: side_ops[v.id][2] if v.id in side_ops else 0))
            known = [value(v.id, pos) for v in values if v.id in names]
            by_ops = all(_made_by_ops(tree.side.get(v.id)) or _a_part(side_ops.get(v.id)) for v in values)
            args += known or ([off_stream(v.id, pos, 8) for v in values] if by_ops else [source])
        return f"{step.title}({', '.join(args)})"

    def together(data: Sequence[TensorMeta], pos: int) -> list[str]:
        """The values a step reads, those of one earlier step read all together and in order
        written once: <genexpr>(split(...)), not split(...) three times."""
        args, i = [], 0
        while i < len(data):
            earlier = [p for p in made_at.get(data[i].id, []) if p < pos]
            outs = [t.id for t in _outputs(drawn[earlier[-1]])] if earlier else []
            n = len(outs) if len(outs) > 1 and outs == [t.id for t in data[i : i + len(outs)]] else 1
            args.append(value(data[i].id, pos) if n == 1 or data[i].id in names else made(earlier[-1]))
            i += 1 if data[i].id in names else n
        return args

    def beside_text(tensor_id: int, depth: int) -> str:
        """A value made beside the stream from stream values, written from the steps that made it."""
        if tensor_id in names or tensor_id in made_at or depth == 0:
            return value(tensor_id, len(drawn))
        side = tree.side.get(tensor_id)
        if side is None:
            return off_stream(tensor_id, len(drawn), 0)
        if side.kind in (StepKind.compute, StepKind.shape) and side.ops:
            return ops_text(side, lambda t: beside_text(t, depth - 1))
        return f"{side.title}({', '.join(beside_text(t.id, depth - 1) for t in _data_inputs(side))})"

    def side_output_lines() -> list[str]:
        """What the model returns besides its main output, as `output 2 = Linear(x_out)`."""
        return [
            f"output {k} = {beside_text(out.id, 8)}"
            for k, (origin, _, out) in enumerate(tree.side_outputs(), 2)
            if origin is not None
        ]

    named = sorted((bound[i], i) for i in names if i in made_at and i not in given_ids)
    lines = []
    for pos, i in named:
        if pos not in unpacked:
            lines.append(f"{names[i]} = {made(pos)}")
        elif i == min(unpacked[pos]):  # q, k, v = <genexpr>(...): the step's values, named once
            lines.append(f"{', '.join(unpacked[pos].values())} = {made(pos)}")
    if taken is trace.inputs:  # the model's own stream
        lines += side_output_lines()
    beside_lines: list[str] = []
    for parts in bound_beside.values():  # k, v = chunk(Linear(in_1)): before the lines that read them
        if written.keys() & parts.keys():
            text = ops_text(side_ops[min(parts)][0], lambda t: inner(t, 0, 8))
            beside_lines.append(f"{', '.join(parts.values())} = {text}")
    lines = beside_lines + lines
    said = {t.id: k for k, t in enumerate(taken)}
    return lines + [f"{names[i]}: input {said[i] + 1}, {shape_text(taken[said[i]])}" for i in used]


def _bound_beside(tree: StepTree, drawn: Sequence[Step], taken: set[str]) -> dict[int, dict[int, str]]:
    """Op index -> its values by the names the code unpacks them into (`k, v = kv(ctx).chunk(2)`),
    for each op beside the stream, not computed from the stream, that makes several values of which
    several are read: written once, not once per part. Where the line names them not (or a name is
    taken), h_1, h_2, ... numbered on from the stream's."""
    reads = Counter(
        t.id
        for step in (*drawn, *tree.side.values())
        for t in {t.id: t for t in (*_operands(tree, step), *step.taken)}.values()
    )
    found: dict[int, dict[int, str]] = {}
    ops = {op.index: op for s in tree.side.values() for op in s.ops if s.kind != StepKind.helper}
    for index, op in sorted(ops.items()):
        ids = [o.id for o in op.outputs]
        if len(ids) < 2 or sum(reads[i] > 0 for i in ids) < 2 or any(i in tree.from_input for i in ids):
            continue
        code = assigned_names(op.file, op.line, len(ids))
        if code is None or set(code) & taken:
            first = sum(name.startswith("h_") for name in taken) + 1
            code = tuple(f"h_{k}" for k in range(first, first + len(ids)))
        taken |= set(code)
        found[index] = dict(zip(ids, code, strict=True))
    return found


def part_text(step: Step, count: int, k: int, value: Callable[[int], str]) -> str:
    """The value an op of one step made, written from the values it read; one of several by its
    index: chunk(Linear(in_1))[2]."""
    text = ops_text(step, value)
    return text if count == 1 else f"{text}[{k}]"


def _outputs(step: Step) -> tuple[TensorMeta, ...]:
    """Every value a drawn step makes: a helper's all it returned, an op's all its outputs (split's
    q, k and v), else its one output."""
    if step.returned:
        return step.returned
    last = step.ops[-1].outputs if step.ops else ()
    return last if step.output in last else (step.output,)


def _hands_back(drawn: Sequence[Step], pos: int, level: int | None) -> bool:
    """Whether the call at `pos`, of the call `level`, hands its input back as it is (an
    nn.Identity, eval-mode dropout) to a call of the same statement: ModernBERT's
    self.attn(self.attn_norm(h)), not GPT-2's h = self.drop(...) before h + ...; the same value,
    not made there."""
    step = drawn[pos]
    call = step.call
    if (
        call is None
        or call.parent != level
        or call.site is None
        or step.output.id not in {t.id for t in step.inputs}
    ):
        return False
    reader = next((s for s in drawn[pos + 1 :] if s.residual is None and step.output in s.inputs), None)
    site = reader.call.site if reader is not None and reader.call is not None else None
    return (
        site is not None
        and site.frame == call.site.frame
        and one_statement(site.file, site.line, call.site.line)
    )


def _unpacked(tree: StepTree, drawn: Sequence[Step], leaving: set[int]) -> dict[int, list[int]]:
    """Position -> the values of a step that makes several, each read after it (or leaving the model
    beside its main output), if it is a helper or they are read apart: a generator yielding q, k and
    v, attend() returning y and probs; not split's values that the one step after it reads together."""
    readers: dict[int, set[int]] = {}
    for pos, step in enumerate(drawn):
        for t in _operands(tree, step):
            readers.setdefault(t.id, set()).add(pos)
    for tid in leaving:
        readers.setdefault(tid, set()).add(len(drawn))
    found: dict[int, list[int]] = {}
    for pos, step in enumerate(drawn):
        outs = [t.id for t in _outputs(step) if readers.get(t.id, set()) - {pos}]
        apart = len({frozenset(readers[t]) for t in outs}) > 1
        if len(outs) > 1 and len(outs) == len(_outputs(step)) and (step.kind == StepKind.helper or apart):
            found[pos] = outs
    return found


def _code_names(tree: StepTree, step: Step, count: int) -> tuple[str, ...] | None:
    """The names the line that made the step's values unpacks them into: the caller's line for a
    helper call, the op's own line for an op."""
    if step.kind == StepKind.helper:
        frames = {f.frame: f for f in tree.trace.frames}
        helper = frames.get(step.frame)
        caller = frames.get(helper.caller) if helper is not None and helper.caller is not None else None
        return None if caller is None or helper is None else assigned_names(caller.file, helper.line, count)
    op = step.ops[-1] if step.ops else None
    return None if op is None else assigned_names(op.file, op.line, count)


def ops_text(step: Step, value: Callable[[int], str]) -> str:
    """A run of ops written op by op, each with every operand it took: what an earlier op of the run
    made as that op's text, anything else as `value` says, a parameter by its name where it stood
    (mul(resid_lambdas[0], x)). An op's values read together, in order, are written once, unpacked
    (SDPA(*unbind(Linear(x)))); one of several, by its index."""
    made: dict[int, tuple[str, tuple[int, ...]]] = {}  # id -> (its op's text, that op's outputs)
    text = ""
    for op in step.ops:
        args: list[str] = []
        ids = [t.id for t in op.inputs]
        read = {r.position: r.name for r in op.parameters}
        if op.name == "getitem" and 0 in read:  # resid_lambdas[0]: the slice is the name
            text = read[0]
            made.update((o.id, (text, (o.id,))) for o in op.outputs)
            continue
        i = placed = 0  # values and parameters written so far: i + placed is the next one's position
        while i < len(ids) or i + placed in read:
            if i + placed in read:
                args.append(read[i + placed])
                placed += 1
                continue
            if ids[i] not in made:
                args.append(value(ids[i]))
                i += 1
                continue
            source, outputs = made[ids[i]]
            if len(outputs) == 1:
                args.append(source)
            elif tuple(ids[i : i + len(outputs)]) == outputs:
                args.append(f"*{source}")
                i += len(outputs) - 1
            else:
                args.append(f"{source}[{outputs.index(ids[i])}]")
            i += 1
        text = f"{op_title(op.name)}({', '.join(args)})"
        outputs = tuple(o.id for o in op.outputs)
        made.update((o, (text, outputs)) for o in outputs)
    return text


def _buffer_slice(step: Step, buffers: Mapping[str, str]) -> str | None:
    """`cos[…]` for a run of one getitem of a buffer, else None."""
    (op, *more) = step.ops
    if more or op.name != "getitem" or len(op.inputs) != 1:
        return None
    name = buffers.get(str(op.inputs[0].id))
    return None if name is None else f"{name}[…]"


def _a_part(part: tuple[Step, int, int] | None) -> bool:
    """Whether a value is one of several an op beside the stream made (a chunk's)."""
    return part is not None and part[0].kind != StepKind.helper and part[1] > 1


def _made_by_ops(step: Step | None) -> bool:
    """Whether a value made beside the stream came from a run of ops (mask[:, None, None, :]),
    written out as them rather than by their name."""
    return step is not None and step.kind in (StepKind.compute, StepKind.shape) and bool(step.ops)


def _data_inputs(step: Step) -> tuple:
    # a call is written with its data input; a helper with what it read from the stream; an op
    # with every tensor it took
    return step.inputs[:1] if step.kind == StepKind.call else step.inputs


def _operands(tree: StepTree, step: Step) -> tuple[TensorMeta, ...]:
    """Every value a step's formula is written with: a residual add's terms; an op run's operands
    from outside it; a call's or helper's data input and what it reads beside the stream."""
    if step.residual is not None:
        return step.inputs
    if step.kind in (StepKind.compute, StepKind.shape) and step.ops:
        made = {t.id for op in step.ops for t in op.outputs}
        return tuple({t.id: t for op in step.ops for t in op.inputs if t.id not in made}.values())
    return (*_data_inputs(step), *(v for _, values in tree.reads(step) for v in values))


def composition(tree: StepTree, step: Step) -> str | None:
    """Type(x) = f(g(x)) when the call's inner steps form one chain from its input to its output,
    else None."""
    if step.call is None:
        return None
    if tree.is_one_op(step.call):
        return _of_parameters(tree, step.call)
    inner = tree.inner(step.call)
    current, text = step.call.inputs[0].id if step.call.inputs else -1, "x"
    for s in inner:
        if not s.inputs or s.inputs[0].id != current or (s.kind == StepKind.compute and len(s.inputs) > 1):
            return None
        if s.kind == StepKind.helper:  # one call of a helper function: norm(x)
            names = [s.label]
        else:  # a module call and the views folded into it (c_q, view), or a run of ops
            names = [_called(s.call)] if s.call else []
            names += [o.name for o in s.ops]
        for name in names:
            text = f"{name}({text})"
        current = s.output.id
    if not inner or not step.call.outputs or step.call.outputs[0].id != current:
        return None  # a chain that does not end at what the call returned is not what it computes
    return f"{step.call.type}(x) = {text}"


def _called(call: ModuleCall) -> str:
    """A call as its parent's code calls it: by its attribute, c_fc; a Sequential's child, whose
    name is its index, by its type: Sequential(x) = Linear(GELU(Linear(x))), not 2(1(0(x)))."""
    name = short_path(call)
    return call.type if name.isdigit() else name


def _of_parameters(tree: StepTree, call: ModuleCall) -> str | None:
    """LayerScale(x) = mul(x, gamma): a module that is one untitled op of its input and its own
    parameters, written with them; a module that is its titled op (LayerNorm) says nothing more."""
    (op,) = tree.trace.ops_in(call.index)
    if (
        not op.parameters
        or facts(op.name).title
        or [t.id for t in op.inputs] != [t.id for t in call.inputs[:1]]
    ):
        return None
    read = {r.position: r.name.removeprefix(f"{call.path}.") for r in op.parameters}
    args = [read.get(k, "x") for k in range(len(read) + 1)]
    return f"{call.type}(x) = {op.name}({', '.join(args)})"


def _form(op: OpCall) -> tuple[str, str]:
    """The op's name and the form it ran in, where it has several: gelu(x, approximate="tanh")."""
    return op.name, op.attrs.get("approximate", "none")


def _stream_lines(
    tree: StepTree,
    steps: Sequence[Step],
    inputs: tuple[TensorMeta, ...] | None = None,
    called: tuple[str, ...] | None = None,
) -> list[str]:
    # a collapsed run is drawn as its first call: around it, it is one step (Block × 80); then its
    # formulas are that call's, said to hold for each
    outer, runs = _runs_as_steps(steps)
    lines = stream_formulas(tree, outer, inputs, called) if len(outer) > 1 else []
    for section, inner in runs:
        call = section.call
        taken, names = (call.inputs, call.input_names) if call is not None else ((), None)
        lines += [f"each of {section.label} ({section.title}):", *stream_formulas(tree, inner, taken, names)]
    return lines if runs else stream_formulas(tree, steps, inputs, called)


def formulas(tree: StepTree) -> list[str]:
    """The formulas of each stream drawn beside the model's (an encoder's), under its name, then the
    model's own, then what each call and op computes."""
    lines: list[str] = []
    for section, *inner in tree.beside:
        call = section.call
        inputs, called = (call.inputs, call.input_names) if call is not None else ((), None)
        lines += [f"{section.label} ({section.title}):", *_stream_lines(tree, inner, inputs, called)]
    parts = tree.residual_parts()
    main = _stream_lines(tree, tree.stream)
    lines += [f"{parts[-1][0]}:", *main] if parts and main else main
    steps = [*(s for part in tree.beside for s in part), *tree.stream]
    for step in steps:
        line = composition(tree, step) if step.kind == StepKind.call else None
        if line and line not in lines:
            lines.append(line)
    used = dict.fromkeys(_form(op) for op in tree.trace.ops)
    lines += [text for name, form in used if (text := definition(name, form))]
    return lines


def _runs_as_steps(steps: Sequence[Step]) -> tuple[list[Step], list[tuple[Step, Sequence[Step]]]]:
    """The stream with each collapsed run as one call step titled as drawn ("Block × 80"), and each
    run's section with the steps of its first call."""
    outer: list[Step] = []
    runs: list[tuple[Step, Sequence[Step]]] = []
    i = 0
    while i < len(steps):
        step = steps[i]
        if step.kind == StepKind.section and step.call is not None and step.label != step.call.path:
            runs.append((step, steps[i + 1 : i + 1 + step.span]))
            outer.append(replace(step, kind=StepKind.call, title=step.title.replace(" ", "")))
            i += 1 + step.span
        else:
            outer.append(step)
            i += 1
    return outer, runs
