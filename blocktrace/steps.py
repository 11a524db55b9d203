"""From a trace to the steps a reader follows: the stream's nodes and each box's internals.

A module call is opened up (its steps drawn on the stream) when a residual add happens inside it;
the root always is. Any other call is one box, with its internals listed beside it. Ops that one
call of a helper function made (apply_rotary_emb(q), norm(x)) are one step; so is a call followed
by the views that reshape its output, and a run of ops each consuming the last one's output.
No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocktrace.trace import ModuleCall, OpCall, ResidualAdd, TensorMeta, Trace

# Ops that only rearrange a tensor: folded into the step that produced their input.
SHAPE_OPS = frozenset(
    {"view", "reshape", "transpose", "permute", "contiguous", "flatten", "unflatten", "squeeze", "unsqueeze"}
)
# How well-known functional ops are titled in a box and in formulas.
TITLES = {
    "rms_norm": "RMSNorm",
    "layer_norm": "LayerNorm",
    "relu": "ReLU",
    "gelu": "GELU",
    "silu": "SiLU",
    "scaled_dot_product_attention": "SDPA",
    "linear": "Linear",
}


@dataclass(frozen=True)
class Step:
    """One thing done to the data: a module call, a helper call, a run of ops, or a residual add."""

    kind: str  # "call", "helper", "shape" (views), "compute" (other ops), "residual", "section"
    label: str  # as the code names it: "attn", "c_q, view", "norm", "relu, square", "+"
    title: str  # for a box: "CausalSelfAttention", "RMSNorm", "MLP"
    inputs: tuple[TensorMeta, ...]
    output: TensorMeta
    call: ModuleCall | None = None  # for "call" and "section" (an opened call's header)
    ops: tuple[OpCall, ...] = ()  # the ops the step is made of
    residual: ResidualAdd | None = None  # for "residual"

    @property
    def time(self) -> int:
        # tensor ids are handed out in creation order, so the output's id orders the steps
        return self.output.id


def _op_title(op: OpCall) -> str:
    return TITLES.get(op.name, op.name)


def branch(trace: Trace, r: ResidualAdd) -> list[tuple[str, str]]:
    """(name in the code, title) of each step on a residual add's branch, first applied first:
    [("norm", "RMSNorm"), ("attn", "CausalSelfAttention")] for x + attn(norm(x))."""
    parts = [
        (trace.calls[i].outputs[0].id, trace.calls[i].path.rsplit(".", 1)[-1], trace.calls[i].type)
        for i in r.calls
    ]
    for i in r.ops:
        op = trace.ops[i]
        parts.append((op.outputs[0].id, op.function if op.function != "forward" else op.name, _op_title(op)))
    return [(name, title) for _, name, title in sorted(parts)]


def opened_calls(trace: Trace) -> set[int]:
    """Indices of the calls drawn as a stream: the root and every call with a residual add inside."""
    by_index = {c.index: c for c in trace.calls}
    opened = {c.index for c in trace.calls if c.parent is None}
    for r in trace.residual_adds:
        call = trace.ops[r.op].call
        while call is not None:
            opened.add(call)
            call = by_index[call].parent
    return opened


def inner_steps(trace: Trace, call: ModuleCall) -> list[Step]:
    """The steps directly inside `call`, grouped and folded as described above, in order."""
    steps = [
        Step("call", c.path.rsplit(".", 1)[-1], c.type, c.inputs, c.outputs[0], call=c)
        for c in trace.children(call.index)
        if c.outputs
    ]
    residual_ops = {r.op: r for r in trace.residual_adds}
    for op in trace.ops_in(call.index):
        r = residual_ops.get(op.index)
        if r is not None:
            steps.append(Step("residual", "+", "+", (r.stream, r.branch), r.output, ops=(op,), residual=r))
        elif op.function != "forward":
            steps.append(Step("helper", op.function, _op_title(op), op.inputs[:1], op.outputs[0], ops=(op,)))
        else:
            kind = "shape" if op.name in SHAPE_OPS else "compute"
            steps.append(Step(kind, op.name, _op_title(op), op.inputs, op.outputs[0], ops=(op,)))
    steps.sort(key=lambda s: s.time)
    merged: list[Step] = []
    for step in steps:
        if merged and _joins(merged[-1], step):
            last = merged[-1]
            # a helper of several ops is titled by its function's name: "apply_rotary_emb"
            if step.kind == "helper":
                label, title = last.label, last.label
            elif step.kind == "compute":  # relu, square -> "ReLU, square"
                label, title = f"{last.label}, {step.label}", f"{last.title}, {step.title}"
            else:
                label, title = f"{last.label}, {step.label}", last.title
            step = Step(last.kind, label, title, last.inputs, step.output, last.call, (*last.ops, *step.ops))
            merged[-1] = step
        else:
            merged.append(step)
    return merged


def _joins(last: Step, step: Step) -> bool:
    """Whether `step` continues `last` as one step."""
    if step.kind == "helper":  # more ops of the same call of the same helper function
        return last.kind == "helper" and (last.ops[0].function, last.ops[0].frame) == (
            step.ops[0].function,
            step.ops[0].frame,
        )
    if not step.inputs or step.inputs[0].id != last.output.id:
        return False
    if step.kind == "shape":  # views of what the last step made
        return last.kind in ("call", "helper", "shape")
    return step.kind == "compute" and last.kind == "compute"  # a chain like relu, square


def stream_steps(trace: Trace, collapse: bool = True) -> list[Step]:
    """The stream from input to output: opened calls expanded in place, each after a section step.
    With `collapse`, a run of opened calls doing the same thing (a stack of identical Blocks, with
    the same shapes all through) is drawn once: its section reads "h.0 … h.79" and "Block × 80"."""
    opened = opened_calls(trace)

    def expand(call: ModuleCall) -> list[Step]:
        out: list[Step] = []
        run: tuple[int, int, tuple] | None = None  # (index of the run's section in out, length, signature)
        for step in inner_steps(trace, call):
            if step.call is None or step.call.index not in opened:
                out.append(step)
                run = None
                continue
            inner = expand(step.call)
            signature = (step.call.type, _signature(trace, inner))
            if collapse and run is not None and run[2] == signature:
                first = out[run[0]]
                assert first.call is not None
                count = run[1] + 1
                label = f"{first.call.path} … {step.call.path}"
                out[run[0]] = Step(
                    "section", label, f"{first.call.type} × {count}", first.inputs, step.output, first.call
                )
                run = (run[0], count, signature)
                continue
            run = (len(out), 1, signature)
            out.append(Step("section", step.call.path, step.call.type, step.inputs, step.output, step.call))
            out.extend(inner)
        return out

    return [s for root in trace.calls if root.parent is None for s in expand(root)]


def _signature(trace: Trace, steps: list[Step]) -> tuple:
    """What a reader of these steps sees, internals of boxes included: equal signatures draw alike."""

    def shape(t: TensorMeta) -> tuple:
        return t.shape, t.symbols

    return tuple(
        (s.kind, s.label, s.title, tuple(map(shape, s.inputs)), shape(s.output))
        + ((_signature(trace, inner_steps(trace, s.call)),) if s.kind == "call" and s.call else ())
        for s in steps
    )
