"""Facts about the ops the tracer records, by torch's name for them: one table per kind of fact.
No torch here."""

from __future__ import annotations

# Ops whose output shares its input's storage: they create no activation memory.
VIEW_OPS = frozenset(
    {
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "transpose",
        "swapaxes",
        "permute",
        "movedim",
        "t",
        "getitem",
        "select",
        "narrow",
        "unsqueeze",
        "squeeze",
        "expand",
        "expand_as",
        "flatten",
        "unflatten",
        "split",
        "chunk",
        "unbind",
        "detach",
        "as_strided",
        "diagonal",
    }
)
OP_KINDS = {
    "rms_norm": "RMSNorm op",
    "layer_norm": "LayerNorm op",
    "scaled_dot_product_attention": "SDPA",
    "linear": "matmul",
    "matmul": "matmul",
    "mm": "matmul",
    "bmm": "matmul",
    "addmm": "matmul",
    "baddbmm": "matmul",
    "contiguous": "copy",
    "cat": "copy",
    "stack": "copy",
    "clone": "copy",
}
ELEMENTWISE = frozenset(
    {"add", "radd", "iadd", "sub", "rsub", "mul", "rmul", "div", "neg", "pow", "square", "sqrt", "rsqrt"}
    | {"exp", "log", "tanh", "sigmoid", "relu", "gelu", "silu", "softmax", "sin", "cos"}
)


def op_kind(name: str) -> str:
    """What an op is, for the kind column: "SDPA", "RMSNorm op", "view", "elementwise", ..."""
    if name in OP_KINDS:
        return OP_KINDS[name]
    if name in VIEW_OPS:
        return "view"
    if name in ELEMENTWISE:
        return "elementwise"
    return "op"
