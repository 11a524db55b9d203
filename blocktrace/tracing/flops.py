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
    """Adds each aten op's FLOPs to `counts`; `count` gives each torch function Counts of its own.

    `count` runs a torch function under this mode only the first time it meets the function with
    such arguments: the same shapes, strides, dtypes, devices, aliasing and other arguments make the
    same aten ops of the same shapes, which torch's formulas count alike. Each later call runs as it
    would without the mode and takes the counts the first one made: a stack's layers run their
    ops at full speed, each op still run and recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counts()
        self.known: dict[tuple, Counts] = {}  # signature() -> what a call with it counted

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
        key = signature(func, args, kwargs)
        known = self.known.get(key) if key is not None else None
        if known is not None:
            return func(*args, **kwargs), known
        outer, self.counts = self.counts, Counts()
        try:
            with self:
                result = func(*args, **kwargs)
            if key is not None:
                self.known[key] = self.counts
            return result, self.counts
        finally:
            self.counts = outer


_PLAIN = frozenset((int, float, bool, str, type(None), type(Ellipsis)))
_PLAIN |= {torch.dtype, torch.device, torch.layout, torch.memory_format}


def signature(func: Callable, args: tuple, kwargs: dict) -> tuple | None:
    """What decides the aten ops a torch function call makes and their shapes, as a key; None where
    an argument is not plain data (a module, a function): such a call is always counted afresh."""
    key: list[Any] = [func, len(args)]
    seen: dict[int, int] = {}  # id(tensor) -> its place among the tensors: x @ x is not x @ y
    try:
        for value in args:
            key.append(_signed(value, seen))
        for name, value in kwargs.items():
            key.append(name)
            key.append(_signed(value, seen))
    except (_Unsigned, RuntimeError):  # RuntimeError: a sparse or nested tensor has no strides
        return None
    return tuple(key)


class _Unsigned(Exception):
    pass


def _signed(value: Any, seen: dict[int, int]) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return (kind, value)  # the kind too: 1, 1.0 and True are equal keys
    if isinstance(value, torch.Tensor):
        place = seen.setdefault(id(value), len(seen))
        return (kind, place, value.shape, value.stride(), value.dtype, value.device)
    if kind is tuple or kind is list or kind is torch.Size:
        return (kind, *[_signed(v, seen) for v in value])
    if kind is slice:
        return (kind, _signed(value.start, seen), _signed(value.stop, seen), _signed(value.step, seen))
    if kind is dict:
        return (kind, *[(k, _signed(v, seen)) for k, v in value.items()])
    raise _Unsigned


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
