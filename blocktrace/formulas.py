"""The formulas of a traced stream, written from its structure (question 5 of the source dialogue):

    x_mid = x + CausalSelfAttention(RMSNorm(x))
    x_out = x_mid + MLP(RMSNorm(x_mid))

plus what each functional op computes and, for a box whose internals are one chain, its composition:
MLP(x) = c_proj(square(relu(c_fc(x)))). No torch here.
"""

from __future__ import annotations

from blocktrace.steps import Step, branch, inner_steps, stream_steps
from blocktrace.trace import Trace

# What a functional op computes, by the name torch gives it.
DEFINITIONS = {
    "rms_norm": "RMSNorm(x) = x / sqrt(mean(x^2) + eps), over the last dim",
    "layer_norm": "LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps), over the last dim",
    "relu": "relu(x) = max(0, x)",
    "square": "square(x) = x^2",
    "gelu": "gelu(x) = x * Phi(x)",
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


def residual_formulas(trace: Trace) -> list[str]:
    """One line per residual add: out = stream + F(G(stream)), named by the traced branch."""
    names = {trace.inputs[0].id: "x"} if trace.inputs else {}
    adds = sorted(trace.residual_adds, key=lambda r: r.op)
    lines = []
    for r, out_name in zip(adds, _stream_names(len(adds)), strict=True):
        stream = names.get(r.stream.id, "x")
        inner = stream
        for _, title in branch(trace, r):
            inner = f"{title}({inner})"
        lines.append(f"{out_name} = {stream} + {inner}")
        names[r.output.id] = out_name
    return lines


def composition(trace: Trace, step: Step) -> str | None:
    """Type(x) = f(g(x)) when the call's inner steps form one chain from its input, else None."""
    if step.call is None:
        return None
    inner = inner_steps(trace, step.call)
    current, text = step.call.inputs[0].id if step.call.inputs else -1, "x"
    for s in inner:
        if not s.inputs or s.inputs[0].id != current:
            return None
        if s.kind == "helper":  # one call of a helper function: norm(x)
            names = [s.label]
        else:  # a module call and the views folded into it (c_q, view), or a run of ops
            names = [s.call.path.rsplit(".", 1)[-1]] if s.call else []
            names += [o.name for o in s.ops]
        for name in names:
            text = f"{name}({text})"
        current = s.output.id
    return f"{step.call.type}(x) = {text}" if inner else None


def formulas(trace: Trace) -> list[str]:
    lines = residual_formulas(trace)
    steps = stream_steps(trace)
    for step in steps:
        line = composition(trace, step) if step.kind == "call" else None
        if line and line not in lines:
            lines.append(line)
    used = dict.fromkeys(op.name for op in trace.ops)
    lines += [DEFINITIONS[name] for name in used if name in DEFINITIONS]
    return lines
