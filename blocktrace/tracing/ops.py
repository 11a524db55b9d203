"""What blocktrace knows about the ops the tracer records, by torch's name for them: one table, one
entry per op, read by the tracer, the steps, the table, the formulas and the totals. No torch here.

An op not in the table is an "op" with no title of its own and none of the facts below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class OpFacts:
    """What blocktrace knows about one op; the defaults are those of an op it knows nothing about."""

    kind: str = "op"  # the table's kind column: "view", "elementwise", "matmul", "copy", "SDPA", ...
    title: str = ""  # in a box and the formulas: "RMSNorm" for rms_norm; "": the op's own name
    is_view: bool = False  # its output shares its input's storage: it creates no activation memory
    reshapes: bool = False  # it only rearranges its one input: folded into the step that made the input
    keeps_value: bool = False  # the tracer gives its output its input's id (see contiguous below)
    is_add: bool = False  # a + b, of which residual adds are made
    definition: str = ""  # what it computes, for the formulas
    forms: tuple[tuple[str, str], ...] = ()  # (form, definition) where it runs in another: gelu's tanh


_VIEW = OpFacts("view", is_view=True)
_RESHAPE = replace(_VIEW, reshapes=True)
_ELEMENTWISE = OpFacts("elementwise")
_ADD = replace(_ELEMENTWISE, is_add=True)
_MATMUL = OpFacts("matmul")
_COPY = OpFacts("copy")

OPS: dict[str, OpFacts] = {
    **dict.fromkeys(
        ("view", "reshape", "transpose", "permute", "flatten", "unflatten", "squeeze", "unsqueeze"), _RESHAPE
    ),
    # reshape and flatten copy where no view of their input can be made; counted as views all the same
    **dict.fromkeys(("view_as", "reshape_as", "swapaxes", "movedim", "t", "expand", "expand_as"), _VIEW),
    # views of a part, or of several (split, chunk, unbind): not a rearranging of one input
    **dict.fromkeys(("getitem", "select", "narrow", "split", "chunk", "unbind", "as_strided"), _VIEW),
    **dict.fromkeys(("detach", "diagonal"), _VIEW),
    # contiguous() copies only an input whose memory layout is not already contiguous, and layouts
    # differ between devices (meta, cpu): it keeps its input's id so that a trace is the same on every
    # device, and is folded like a view. Its copy, when there is one, is not counted as new memory.
    "contiguous": replace(_COPY, reshapes=True, keeps_value=True),
    **dict.fromkeys(("cat", "stack", "clone"), _COPY),
    "linear": replace(
        _MATMUL, title="Linear", definition="Linear(x) = x W^T (+ b); W has shape (out_features, in_features)"
    ),
    **dict.fromkeys(("matmul", "mm", "bmm", "addmm", "baddbmm"), _MATMUL),
    **dict.fromkeys(("add", "radd", "iadd"), _ADD),
    **dict.fromkeys(("sub", "rsub", "mul", "rmul", "div", "neg", "pow", "sqrt", "rsqrt"), _ELEMENTWISE),
    **dict.fromkeys(("exp", "log", "tanh", "sigmoid", "softmax", "sin", "cos"), _ELEMENTWISE),
    "square": replace(_ELEMENTWISE, definition="square(x) = x^2"),
    "relu": replace(_ELEMENTWISE, title="ReLU", definition="relu(x) = max(0, x)"),
    "gelu": replace(
        _ELEMENTWISE,
        title="GELU",
        definition="gelu(x) = x * Phi(x)",
        forms=(
            ("tanh", "gelu(x) = x * Phi(x), computed as 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"),
        ),
    ),
    "silu": replace(_ELEMENTWISE, title="SiLU", definition="silu(x) = x * sigmoid(x)"),
    "rms_norm": OpFacts(
        "RMSNorm op", "RMSNorm", definition="RMSNorm(x) = x / sqrt(mean(x^2) + eps), over the last dim"
    ),
    "layer_norm": OpFacts(
        "LayerNorm op",
        "LayerNorm",
        definition="LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps), over the last dim",
    ),
    "scaled_dot_product_attention": OpFacts(
        "SDPA",
        "SDPA",
        definition=(
            "SDPA(q, k, v) = softmax(q k^T / sqrt(d) + mask) v, d = q's last dim; causal mask if is_causal"
        ),
    ),
}
_UNKNOWN = OpFacts()


def facts(name: str) -> OpFacts:
    return OPS.get(name, _UNKNOWN)


def op_title(name: str) -> str:
    """How an op is titled in a box and in the formulas: "RMSNorm", "SDPA", else its name."""
    return facts(name).title or name


def definition(name: str, form: str = "none") -> str:
    """What the op computes in `form` (gelu's approximate="tanh"; "none": its plain form), for the
    formulas; "" where the table says nothing."""
    op = facts(name)
    return op.definition if form == "none" else dict(op.forms).get(form, "")
