"""FLOPs of each aten op by torch's own formulas: the registry behind torch.utils.flop_counter.

FlopCounterMode counts the ops in that registry (matmuls, convolutions, attention kernels; here also
their TWINS) and every other op as 0. Here an op outside the registry counts 0 only where it is known
to do no multiply-adds by torch's convention: pointwise and reduction ops (torch tags them), views, ops that
return nothing, and the norms, softmaxes, copies, factories and indexing named in ZERO. Any other op
has no formula: its FLOPs are unknown and it is named, never counted as 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

# aten ops (by packet name) that do no multiply-adds but carry neither a pointwise nor a reduction tag
ZERO = frozenset(
    {"native_layer_norm", "native_group_norm", "native_batch_norm", "_native_batch_norm_legit_no_training"}
    | {"_fused_rms_norm", "_softmax", "_safe_softmax", "_log_softmax", "softmax", "log_softmax"}
    | {"clone", "_to_copy", "copy_", "cat", "stack", "_unsafe_view", "lift_fresh", "alias", "repeat"}
    | {"empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full"}
    | {"full_like", "arange", "scalar_tensor", "randn", "rand", "randint", "normal_", "uniform_", "fill_"}
    | {"zero_", "tril", "triu", "embedding", "index", "index_select", "gather", "scatter", "masked_fill"}
    | {"masked_fill_", "index_put_", "constant_pad_nd", "nonzero", "_local_scalar_dense", "sort", "topk"}
    | {"one_hot", "new_ones", "new_zeros", "new_empty", "new_full"}
    | {"histc", "cumsum", "floor_divide"}  # an MoE's routing: its counts, offsets and expert ids
)

# a kernel missing from the registry that computes what a registered one does, on another device: torch
# 2.13 runs CPU attention as this, and FlopCounterMode counts it 0 (the same inputs, the same formula)
aten = torch.ops.aten
TWINS = {aten._scaled_dot_product_flash_attention_for_cpu: aten._scaled_dot_product_flash_attention}


def grouped_mm_flops(mat_a: Any, mat_b: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """torch has no formula for _grouped_mm (an MoE's experts): 2 multiply-adds per output element
    per contracted element. Rows of a (S, K) grouped against (E, K, N) and a batch (E, M, K) @ (E, K, N)
    contract K for each output; a (M, K) @ (K, N) split along K by the offsets makes E outputs of
    (M, N), each contracting only its group, K in all."""
    k = mat_a.shape[-1]
    if mat_a.dim() == 2 and mat_b.dim() == 2:
        return 2 * mat_a.shape[0] * mat_b.shape[1] * k
    return 2 * out_val.numel() * k


OURS = {aten._grouped_mm: grouped_mm_flops}  # formulas torch's registry lacks

# how to count an aten overload, besides its registry formula
_ZERO, _UNKNOWN = "zero", "unknown"


@dataclass
class Counts:
    """What the aten ops under one torch function did: FLOPs of those with a formula, and the
    names of those without one."""

    flops: int = 0
    uncounted: list[str] = field(default_factory=list)


class FlopCounter(TorchDispatchMode):
    """Adds each aten op's FLOPs to `counts`; `count` gives each torch function Counts of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch would wrap __torch_dispatch__ in torch._dynamo.disable, importing torch._dynamo (2 s) at
        # the first op and adding a wrapper to every op; nothing is compiled under this mode
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = _rule(func)
        if rule == _ZERO:
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        if rule == _UNKNOWN:
            self.counts.uncounted.append(str(func.overloadpacket))
        else:
            self.counts.flops += rule(*args, **kwargs, out_val=out)
        return out

    def count(self, func: Callable, args: tuple, kwargs: dict) -> tuple[Any, Counts]:
        """func(*args, **kwargs) and what its aten ops counted."""
        outer, self.counts = self.counts, Counts()
        try:
            result = func(*args, **kwargs)
            return result, self.counts
        finally:
            self.counts = outer


@functools.cache
def _rule(func: torch._ops.OpOverload) -> Callable | str:
    """How to count one aten overload: its registry formula, else _ZERO or _UNKNOWN."""
    packet = TWINS.get(func.overloadpacket, func.overloadpacket)
    formula = flop_registry.get(packet) or OURS.get(packet)
    if formula is not None:
        return formula
    return _ZERO if known_zero(func) else _UNKNOWN


def known_zero(func: torch._ops.OpOverload) -> bool:
    """Whether torch's convention counts the op as doing no multiply-adds (see the module's doc)."""
    tags = func.tags
    if torch.Tag.pointwise in tags or torch.Tag.reduction in tags or torch.Tag.view_copy in tags:
        return True
    returns = func._schema.returns
    if not returns or func.is_view or any(r.alias_info is not None for r in returns):
        return True  # a check that returns nothing (_linalg_check_errors), or a view of its input
    return func.overloadpacket.__name__ in ZERO
