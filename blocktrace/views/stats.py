"""Totals of a trace: parameters, FLOPs and the bytes of the tensors the forward creates, and how a
count of them is written. No torch here: the memory guard and the table's footer read them alike."""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod

from blocktrace.tracing.ops import facts
from blocktrace.tracing.trace import TensorMeta, Trace


@dataclass(frozen=True)
class Totals:
    params: int
    trainable: int
    flops: int  # forward FLOPs of every op in the trace that has a formula
    activation_bytes: int  # every tensor the forward creates, counted once, views excluded
    dtype: str  # the activations' dtype (the commonest one, if several)
    unknown_ops: int = 0  # ops that ran an aten op with no FLOPs formula
    uncounted: tuple[str, ...] = ()  # those aten ops, each once, sorted

    @property
    def frozen(self) -> int:
        return self.params - self.trainable


def totals(trace: Trace) -> Totals:
    """Parameters of the root calls, FLOPs of every op, bytes of every tensor the ops created."""
    roots = trace.children(None)
    created: dict[int, TensorMeta] = {}
    for op in trace.ops:
        if not facts(op.name).is_view:
            created.update((t.id, t) for t in op.outputs)
    dtypes = [t.dtype for t in created.values()] or [t.dtype for t in trace.inputs] or ["float32"]
    return Totals(
        params=sum(c.params for c in roots),
        trainable=sum(c.trainable for c in roots),
        flops=sum(o.flops for o in trace.ops),
        activation_bytes=sum(prod(t.shape) * itemsize(t.dtype) for t in created.values()),
        dtype=max(set(dtypes), key=dtypes.count),
        unknown_ops=sum(1 for o in trace.ops if o.uncounted),
        uncounted=tuple(sorted({name for o in trace.ops for name in o.uncounted})),
    )


def itemsize(dtype: str) -> int:
    """Bytes per element of a torch dtype name: the bit width in the name ("bfloat16" -> 2)."""
    if dtype == "bool":
        return 1
    bits = re.search(r"\d+", dtype)
    if bits is None:
        raise ValueError(f"unknown element size of dtype {dtype!r}")
    return max(1, int(bits.group()) // 8)


FLOP_UNITS = ("FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP", "EFLOP")
BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human(n: int, units: tuple[str, ...], base: int = 1000) -> str:
    """Three significant digits in the largest unit that keeps the number at least 1: "142 GFLOP"."""
    value, step = float(n), 0
    while abs(value) >= base and step < len(units) - 1:
        value, step = value / base, step + 1
    digits = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"  # .3g would write 1023 as 1.02e+03
    return f"{digits} {units[step]}"


def human_bytes(n: int) -> str:
    """A size in bytes the way every output writes one: "792 MiB"."""
    return human(n, BYTE_UNITS, 1024)
