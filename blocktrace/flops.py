"""FLOPs of each traced op, from its traced shapes alone. No torch here.

The convention is torch.utils.flop_counter's, so the numbers can be checked against FlopCounterMode:
- a matmul (m, k) @ (k, n) is 2·m·k·n (a multiply and an add per term); a bias add is not counted;
- linear is that matmul: 2 · prod(batch dims) · in_features · out_features;
- scaled_dot_product_attention is its two matmuls, Q·Kᵀ and P·V, in full: 2·(B·H)·L·S·E + 2·(B·H)·L·S·Ev
  for q (B, H, L, E), k (B, Hkv, S, E), v (B, Hkv, S, Ev). GQA counts H query heads. is_causal does
  not change the count (torch 2.13's sdpa_flop_count says "We aren't accounting for causal attention
  here"), though a causal kernel can skip about half of that work;
- every other op (norms, activations, elementwise arithmetic, views, copies) counts 0, as in torch.
"""

from __future__ import annotations

from math import prod

from blocktrace.trace import OpCall, TensorMeta

_MATMULS = ("matmul", "mm", "bmm")  # (…, m, k) @ (…, k, n)
_ADD_MATMULS = ("addmm", "baddbmm")  # bias + a @ b: the bias is the first input
_ATTENTION = "scaled_dot_product_attention"


def linear_flops(x: tuple[int, ...], y: tuple[int, ...]) -> int:
    """x (…, in) -> y (…, out): 2 · prod(…) · in · out."""
    return 2 * prod(x) * y[-1]


def matmul_flops(a: tuple[int, ...], out: tuple[int, ...]) -> int:
    """a (…, k) @ b -> out: every output element is a dot product of length k."""
    return 2 * prod(out) * a[-1]


def sdpa_flops(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> int:
    """Q·Kᵀ and P·V for q (…, H, L, E), k (…, Hkv, S, E), v (…, Hkv, S, Ev), causal or not."""
    heads, length, e = prod(q[:-2]), q[-2], q[-1]
    source, ev = k[-2], v[-1]
    return 2 * heads * length * source * e + 2 * heads * length * source * ev


def shapes_flops(name: str, inputs: tuple[TensorMeta, ...], outputs: tuple[TensorMeta, ...]) -> int:
    """FLOPs of the op `name` given its traced tensor inputs and outputs (0 where torch counts none)."""
    if not outputs or not inputs:
        return 0
    if name == "linear":
        return linear_flops(inputs[0].shape, outputs[0].shape)
    if name in _MATMULS:
        return matmul_flops(inputs[0].shape, outputs[0].shape)
    if name in _ADD_MATMULS and len(inputs) >= 3:
        return matmul_flops(inputs[1].shape, outputs[0].shape)
    if name == _ATTENTION and len(inputs) >= 3:
        return sdpa_flops(inputs[0].shape, inputs[1].shape, inputs[2].shape)
    return 0


def op_flops(op: OpCall) -> int:
    """FLOPs of one traced op."""
    return shapes_flops(op.name, op.inputs, op.outputs)
