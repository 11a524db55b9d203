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

from blocktrace.steps import Step, StepKind, StepTree, short_path
from blocktrace.trace import OpCall, Trace

# What a functional op computes, by the name torch gives it.
DEFINITIONS = {
    "rms_norm": "RMSNorm(x) = x / sqrt(mean(x^2) + eps), over the last dim",
    "layer_norm": "LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps), over the last dim",
    "relu": "relu(x) = max(0, x)",
    "square": "square(x) = x^2",
    "gelu": "gelu(x) = x * Phi(x)",
    "gelu tanh": "gelu(x) = x * Phi(x), computed as 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))",
    "silu": "silu(x) = x * sigmoid(x)",
    "linear": "Linear(x) = x W^T (+ b); W has shape (out_features, in_features)",
    "scaled_dot_product_attention": (
        "SDPA(q, k, v) = softmax(q k^T / sqrt(D) + mask) v; causal mask if is_causal"
    ),
}


def _stream_names(count: int) -> list[str]:
    if count == 1:
        return ["x_out"]
    if count == 2:
        return ["x_mid", "x_out"]
    return [f"x_{i}" for i in range(1, count)] + ["x_out"]


def stream_formulas(tree: StepTree, steps: list[Step]) -> list[str]:
    """One line per named value of the stream, each written from the steps that made it."""
    trace = tree.trace
    made: dict[int, Step] = {s.output.id: s for s in steps if s.kind != StepKind.section}
    residuals = [s.residual for s in steps if s.residual is not None]
    if not residuals:
        return []
    named_ids = [r.stream.id for r in residuals]
    final = next(s.output.id for s in reversed(steps) if s.kind != StepKind.section)
    named_ids = list(dict.fromkeys([*named_ids, final]))
    first = trace.inputs[0].id if trace.inputs else named_ids[0]
    names = {first: "x"}
    made_ids = [i for i in named_ids if i != first and i in made]
    for i, name in zip(made_ids, _stream_names(len(made_ids)), strict=True):
        names[i] = name

    def written(tensor_id: int) -> str:
        if tensor_id in names:
            return names[tensor_id]
        step = made.get(tensor_id)
        if step is None or not step.inputs:
            return "?"
        if step.residual is not None:
            return " + ".join(written(t.id) for t in step.inputs)
        args = ", ".join(written(t.id) for t in _data_inputs(step))
        return f"{_title(step)}({args})"

    lines = []
    for i in made_ids:
        step = made[i]
        if step.residual is not None:
            text = " + ".join(written(t.id) for t in step.inputs)
        else:
            text = f"{_title(step)}({', '.join(written(t.id) for t in _data_inputs(step))})"
        lines.append(f"{names[i]} = {text}")
    return lines


def _data_inputs(step: Step) -> tuple:
    # a call or a helper is written with its data input; an op with every tensor it took
    return step.inputs if step.kind in (StepKind.compute, StepKind.shape) else step.inputs[:1]


def _title(step: Step) -> str:
    return step.title


def composition(tree: StepTree, step: Step) -> str | None:
    """Type(x) = f(g(x)) when the call's inner steps form one chain from its input, else None."""
    if step.call is None or tree.is_one_op(step.call):
        return None
    inner = tree.inner(step.call)
    current, text = step.call.inputs[0].id if step.call.inputs else -1, "x"
    for s in inner:
        if not s.inputs or s.inputs[0].id != current or (s.kind == StepKind.compute and len(s.inputs) > 1):
            return None
        if s.kind == StepKind.helper:  # one call of a helper function: norm(x)
            names = [s.label]
        else:  # a module call and the views folded into it (c_q, view), or a run of ops
            names = [short_path(s.call)] if s.call else []
            names += [o.name for o in s.ops]
        for name in names:
            text = f"{name}({text})"
        current = s.output.id
    return f"{step.call.type}(x) = {text}" if inner else None


def _form(op: OpCall) -> str:
    """The op's name, with the form it ran in where it has several: gelu(x, approximate="tanh")."""
    form = op.attrs.get("approximate", "none")
    return op.name if form == "none" else f"{op.name} {form}"


def formulas(trace: Trace, collapse: bool = True) -> list[str]:
    tree = StepTree(trace)
    steps = tree.stream(collapse)
    # a collapsed run is drawn as its first call: its formulas are that call's, said to hold for each
    runs = [s for s in steps if s.kind == StepKind.section and s.call is not None and s.label != s.call.path]
    lines = [f"each of {s.label} ({s.title}):" for s in runs]
    lines += stream_formulas(tree, steps)
    for step in steps:
        line = composition(tree, step) if step.kind == StepKind.call else None
        if line and line not in lines:
            lines.append(line)
    used = dict.fromkeys(_form(op) for op in trace.ops)
    lines += [DEFINITIONS[name] for name in used if name in DEFINITIONS]
    return lines
