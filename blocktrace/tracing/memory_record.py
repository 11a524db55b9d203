"""What a memory recording holds: plain data, no torch, so the memory view is built and tested
without it. tracing/saved.py records it from a run on the meta device."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SavedAt:
    """Where autograd first saved storages for backward: a module call, or an op inside one."""

    depth: int  # nesting: the root call 0, its children 1, ...
    path: str  # the module path of the call (of the innermost call, for an op)
    kind: str  # the module's class, or the torch function's name for an op
    is_op: bool
    saved_bytes: int  # bytes of the distinct storages first saved here (a call: everything inside it)


@dataclass(frozen=True)
class MemoryRecord:
    """What one model holds, in bytes, measured by running it (see tracing/saved.py)."""

    model: str
    dtype: str  # the parameters' dtype
    params: int  # parameters, a tied one counted once
    trainable: int  # of which require grad
    param_bytes: int  # the bytes of those parameters, at their own dtypes
    trainable_bytes: int
    trainable_tensors: int  # how many parameters require grad: an optimizer keeps a step count for each
    buffer_bytes: int  # the module's buffers (rotary tables, masks), which are neither trained nor saved
    saved: tuple[SavedAt, ...]  # in execution order; calls and the ops that saved anything
    saved_bytes: int  # every distinct storage autograd saved, parameters and buffers excluded
    peak_bytes: int  # inference: the most bytes of the forward's own tensors alive at once
    kv_bytes: int  # inference: the keys and values every attention call took, at the full sequence
    seq: int | None  # the sequence length the key/value cache is at (None: the model has none)
    training_mode: bool  # whether the module has dropout, and so was recorded in train mode
