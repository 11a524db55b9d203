"""The caption under a (+): its residual sum as the code writes it, x + attn(norm(x)), from its
branches' steps, then its side terms, each written from the data flow that made it. No torch here."""

from __future__ import annotations

import re

from blocktrace.tracing.trace import OpCall, ResidualAdd, TensorMeta
from blocktrace.views.steps import StepKind, StepTree


def expression(tree: StepTree, r: ResidualAdd) -> str:
    """x + attn(norm(x)): a residual add written as the code writes it, from its branches' steps,
    then its side terms by what made them (x + proj(a) + mean(ctx(context)))."""
    sources = {s.value.id: s.source for lv in tree.graph.levels for s in lv.side_inputs}
    terms = []
    for steps in tree.branches(r):
        inner = "x"
        returned: tuple[int, ...] = ()  # the values of the step before, where it returned several
        for part in steps:  # each step on the branch's value, then on what it read beside
            ids = [t.id for t in part.read]
            rest = tuple(t for t in part.read if t.id not in returned)
            if len(returned) > 1 and ids and ids == list(returned[1 : len(ids) + 1]):
                inner = f"*{inner}"  # all the last helper's values, in order: sdpa(*project(x, ctx))
            elif len(returned) > 1:
                rest = part.read  # some of them: each by where it came from
            beside = dict.fromkeys(_operand(tree, t, sources) for t in rest)
            inner, returned = f"{part.name}({', '.join([inner, *beside])})", part.returned
        terms.append(inner)
    return " + ".join(["x", *terms, *(side_term(tree, t) for t in r.sides)])


def read_name(tree: StepTree, source: str, values: tuple[TensorMeta, ...]) -> str:
    """What a side-input arrow says a value is: where the graph names it by the bare step that made
    it from other values beside the stream (a helper `heads`), that making written out back to the
    model's inputs, the parts of one op's values alike (k and v from one chunk: heads(chunk(kv(ctx))));
    else the graph's name (`rotary_emb`, a line's `keep`, `cos[…]`, an input's `mask`)."""
    steps = [tree.side.get(v.id) for v in values]
    if not all(s is not None and s.inputs and source in (s.label, s.title) for s in steps):
        return source
    texts = {side_term(tree, v) for v in values}
    texts = texts if len(texts) == 1 else {re.sub(r"\[\d+\]", "", text) for text in texts}
    (text, *more) = texts
    return source if more or "…" in text else text


def _operand(tree: StepTree, t: TensorMeta, sources: dict[int, str]) -> str:
    """What a branch's step read beside it: written out where the trace says all that made it,
    else by where the graph says it came from (`rotary_emb`, made from the stream's input)."""
    text = side_term(tree, t)
    return sources.get(t.id, text) if "…" in text else text


def side_term(tree: StepTree, t: TensorMeta, depth: int = 8) -> str:
    """A value made beside the stream, written as the ops and calls that made it, each on the values
    it read, back to the model's inputs by their names (or to what the trace does not say: `…`):
    mean(ctx(context));
    one of several values an op made by its index, so that ops run side by side on the parts of one
    chunk are not a chain: unsqueeze(chunk(mod(c))[2])."""
    given = next((k for k, v in enumerate(tree.trace.inputs) if v.id == t.id), None)
    if given is not None:
        return tree.trace.input_name(given)
    if str(t.id) in tree.trace.buffers:
        return tree.trace.buffers[str(t.id)]
    op = _side_ops(tree).get(t.id)
    step = tree.side.get(t.id)
    if depth == 0 or t.id in tree.from_input or (op is None and (step is None or not step.inputs)):
        return "…"
    if step is not None and step.kind == StepKind.helper:  # by the helper, on all it read: heads(k)
        text = f"{step.label}({', '.join(side_term(tree, i, depth - 1) for i in step.taken or step.inputs)})"
        ids = [o.id for o in step.returned]
        return f"{text}[{ids.index(t.id)}]" if len(ids) > 1 and t.id in ids else text
    if op is None:  # a module call (or a helper) beside the stream: on its first input
        assert step is not None
        name = step.label if step.kind == StepKind.call else step.title
        return f"{name}({side_term(tree, step.inputs[0], depth - 1)})"
    text = f"{op.name}({', '.join(side_term(tree, i, depth - 1) for i in op.inputs)})"
    ids = [o.id for o in op.outputs]
    return text if len(ids) == 1 else f"{text}[{ids.index(t.id)}]"


def _side_ops(tree: StepTree) -> dict[int, OpCall]:
    """Tensor id -> the op that made it, for every value the steps beside the stream made."""
    return {o.id: op for s in tree.side.values() for op in s.ops for o in op.outputs}
