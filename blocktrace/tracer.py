"""Run a module once and record what happened: the only place that touches hooks.

Forward pre/post hooks on every submodule record each module call. A TorchFunctionMode active
during the forward records the functional ops that hooks cannot see (F.rms_norm, relu, views,
scaled_dot_product_attention, `+`). Every tensor value gets an id and the ids it was computed
from, so a residual add is recognised by data flow: one operand is an ancestor of the other
through at least one module call. Names are never consulted.
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from blocktrace.trace import ModuleCall, OpCall, ResidualAdd, TensorMeta, Trace, TraceError, Weight

_TORCH_DIR = os.path.dirname(torch.__file__)
_THIS_FILE = __file__
_ADDS = ("add", "radd", "iadd")
_TAG = "_blocktrace_id"
_ATTR_TYPES = (bool, float, str)  # scalar kwargs worth keeping; ints are left out as they may be sizes


@dataclass
class _OpenCall:
    index: int
    path: str
    module: nn.Module
    parent: int | None
    inputs: tuple[TensorMeta, ...]


@dataclass
class _Recorder:
    names: dict[int, str]  # id(module) -> path
    # each tensor seen carries (token, id) in an attribute: cheaper than any lookup table, and it
    # dies with the tensor; tensors the trace did not make are untagged when it ends
    token: object = field(default_factory=object)
    untag: list[weakref.ref] = field(default_factory=list)
    parents: list[tuple[int, ...]] = field(default_factory=list)  # tensor id -> ids it came from
    produced_by_call: dict[int, list[int]] = field(default_factory=dict)  # tensor id -> call indices
    producer_op: dict[int, int] = field(default_factory=dict)  # tensor id -> op index
    stack: list[_OpenCall] = field(default_factory=list)
    calls: list[ModuleCall | None] = field(default_factory=list)
    ops: list[OpCall] = field(default_factory=list)
    residual_adds: list[ResidualAdd] = field(default_factory=list)
    # the caller's frame of the last op, held so that its id cannot be reused by the next call
    last_frame: FrameType | None = None
    frames: int = 0

    def meta(self, t: torch.Tensor, parents: tuple[int, ...] = (), new: bool = False) -> TensorMeta:
        """The TensorMeta of `t`, giving it a fresh id if it is new (or `new` is asked)."""
        tag = None if new else getattr(t, _TAG, None)
        if tag is not None and tag[0] is self.token:
            tid = tag[1]
        else:
            tid = len(self.parents)
            self.parents.append(parents)
            if not new:
                self.untag.append(weakref.ref(t))
            setattr(t, _TAG, (self.token, tid))
        return TensorMeta(tid, tuple(t.shape), _dtype_name(t.dtype))

    def remove_tags(self, outputs: Any) -> None:
        for t in (*(ref() for ref in self.untag), *_tensors(outputs)):
            if t is not None and hasattr(t, _TAG):
                delattr(t, _TAG)

    def metas(self, values: Any) -> tuple[TensorMeta, ...]:
        return tuple(self.meta(t) for t in _tensors(values) if not isinstance(t, nn.Parameter))

    # --- module hooks -------------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        index = len(self.calls)
        self.calls.append(None)  # filled in when the call returns
        parent = self.stack[-1].index if self.stack else None
        path = self.names[id(module)]
        self.stack.append(_OpenCall(index, path, module, parent, self.metas((args, kwargs))))

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        call = self.stack.pop()
        outputs = self.metas(output)
        for t in outputs:
            self.produced_by_call.setdefault(t.id, []).append(call.index)
        self.calls[call.index] = ModuleCall(
            call.index,
            call.path,
            type(module).__name__,
            call.parent,
            call.inputs,
            outputs,
            *parameters(module),
        )

    # --- ops ----------------------------------------------------------------------------------
    def record_op(self, func: Any, args: tuple, kwargs: dict, result: Any) -> None:
        if isinstance(result, torch.Tensor):
            out_tensors: list[torch.Tensor] = [result]
        elif isinstance(result, (tuple, list)) and not isinstance(result, torch.Size):
            out_tensors = list(_tensors(result))
        else:
            return  # size(), dim(), shape: no data flow
        if not out_tensors:
            return
        inputs = self.metas(args)
        if kwargs:
            inputs += self.metas(kwargs)
        index = len(self.ops)
        parent_ids = tuple(t.id for t in inputs)
        outputs = tuple(self.meta(t, parent_ids, new=True) for t in out_tensors)
        for t in outputs:
            self.producer_op[t.id] = index
        frame = _caller()
        if frame is not self.last_frame:
            self.frames += 1
            self.last_frame = frame
        function, line = (frame.f_code.co_name, frame.f_lineno) if frame else ("?", 0)
        attrs = {k: v for k, v in kwargs.items() if isinstance(v, _ATTR_TYPES)}
        call = self.stack[-1].index if self.stack else None
        name = _op_name(func)
        self.ops.append(OpCall(index, name, call, function, line, self.frames, inputs, outputs, attrs))
        if name in _ADDS and len(inputs) == 2:
            self.check_residual(self.ops[-1])

    def check_residual(self, op: OpCall) -> None:
        a, b = op.inputs
        for stream, branch in ((a, b), (b, a)):
            on_path = self.between(stream.id, branch.id)
            calls = sorted({c for t in on_path for c in self.produced_by_call.get(t, ())})
            if not calls:
                continue
            inside = set(calls)
            outermost = tuple(c for c in calls if not self._has_ancestor_in(c, inside))
            branch_ops = tuple(
                sorted(
                    self.producer_op[t]
                    for t in on_path
                    if t in self.producer_op and self.ops[self.producer_op[t]].call == op.call
                )
            )
            self.residual_adds.append(
                ResidualAdd(op.index, stream, branch, op.outputs[0], outermost, branch_ops)
            )
            return

    def between(self, ancestor: int, descendant: int) -> set[int]:
        """Ids on some data-flow path ancestor -> descendant, the descendant included."""
        # ids grow with time, so nothing older than the ancestor can lie on such a path, and a
        # tensor's parents always have smaller ids: one pass in id order decides each tensor
        upstream: set[int] = set()
        todo = [descendant]
        while todo:
            t = todo.pop()
            if t >= ancestor and t not in upstream:
                upstream.add(t)
                todo.extend(self.parents[t])
        on_path = {ancestor}
        for t in sorted(upstream - {ancestor}):
            if any(p in on_path for p in self.parents[t]):
                on_path.add(t)
        return on_path - {ancestor} if descendant in on_path else set()

    def _has_ancestor_in(self, call: int, calls: set[int]) -> bool:
        parent = self._parent_of(call)
        while parent is not None:
            if parent in calls:
                return True
            parent = self._parent_of(parent)
        return False

    def _parent_of(self, call: int) -> int | None:
        done = self.calls[call]
        if done is not None:
            return done.parent
        return next(c.parent for c in self.stack if c.index == call)


def parameters(module: nn.Module) -> tuple[int, int, tuple[Weight, ...]]:
    """(parameters, trainable parameters, own weights) of a module, its submodules' included."""
    params = trainable = 0
    for p in module.parameters():
        params += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    weights = tuple(
        Weight(name, tuple(p.shape), p.requires_grad) for name, p in module.named_parameters(recurse=False)
    )
    return params, trainable, weights


class _OpRecorder(TorchFunctionMode):
    def __init__(self, recorder: _Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        self.recorder.record_op(func, args, kwargs, result)
        return result


def _tensors(values: Any) -> Iterator[torch.Tensor]:
    """The tensors in a value, looking into tuples, lists and dicts: what an op takes or returns."""
    if isinstance(values, torch.Tensor):
        yield values
    elif isinstance(values, (tuple, list)):
        for v in values:
            yield from _tensors(v)
    elif isinstance(values, dict):
        for v in values.values():
            yield from _tensors(v)


@functools.cache
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@functools.cache
def _op_name(func: Any) -> str:
    return getattr(func, "__name__", str(func)).strip("_")  # Tensor.__add__ -> "add"


@functools.cache
def _is_torch_code(code: CodeType) -> bool:
    return code.co_filename.startswith(_TORCH_DIR) or code.co_filename == _THIS_FILE


def _caller() -> FrameType | None:
    """The innermost Python frame outside torch and this file: where the user wrote the op."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and _is_torch_code(frame.f_code):
        frame = frame.f_back
    return frame


def trace(module: nn.Module, args: tuple = (), kwargs: dict | None = None, device: str = "") -> Trace:
    """Call `module(*args, **kwargs)` once and return what it did."""
    kwargs = kwargs or {}
    names = {id(m): path for path, m in module.named_modules()}
    recorder = _Recorder(names)
    training = {m: m.training for m in module.modules()}
    handles = []
    output = None
    try:
        for m in module.modules():
            handles.append(m.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(recorder.post_hook, with_kwargs=True))
        module.eval()
        inputs = recorder.metas((args, kwargs))
        with torch.no_grad(), _OpRecorder(recorder):
            try:
                output = module(*args, **kwargs)
            except Exception as error:
                where = recorder.stack[-1] if recorder.stack else None
                place = f"{where.path or '<root>'} ({type(where.module).__name__})" if where else ""
                raise TraceError(f"forward failed in {place}: {error}") from error
        outputs = recorder.metas(output)
    finally:
        recorder.last_frame = None
        recorder.remove_tags(output)
        for handle in handles:
            handle.remove()
        for m, mode in training.items():
            m.train(mode)
    return Trace(
        model=type(module).__name__,
        device=device or _device_of(args),
        inputs=inputs,
        outputs=outputs,
        calls=tuple(c for c in recorder.calls if c is not None),
        ops=tuple(recorder.ops),
        residual_adds=tuple(recorder.residual_adds),
    )


def _device_of(args: Any) -> str:
    return next((t.device.type for t in _tensors(args)), "cpu")
