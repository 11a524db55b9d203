"""Run a module once and record what happened: the only place that touches hooks.

Forward pre/post hooks on every submodule record each module call. A TorchFunctionMode active
during the forward records the functional ops that hooks cannot see (F.rms_norm, relu, views,
scaled_dot_product_attention, `+`). Every tensor value gets an id and the ids it was computed
from, so that residual adds are recognised by data flow (residual_rule.py), never by name.
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from dataclasses import dataclass, field, replace
from types import CodeType, FrameType
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from blocktrace import progress
from blocktrace.errors import ForwardError, error_line
from blocktrace.tracing.flops import Counts, FlopCounter
from blocktrace.tracing.graph.build import handed_on, residual_joins
from blocktrace.tracing.input_names import input_names
from blocktrace.tracing.named_reads import NamedReads
from blocktrace.tracing.ops import facts
from blocktrace.tracing.records import FrozenDict
from blocktrace.tracing.residual_rule import ResidualRule
from blocktrace.tracing.trace import Frame, ModuleCall, OpCall, Site, TensorMeta, TensorStats, Trace, Weight
from blocktrace.tracing.values import tensor_stats

_TORCH_DIR = os.path.dirname(torch.__file__)
_THIS_FILE = __file__
_TAG = "_blocktrace_id"
_ATTR_TYPES = (bool, float, str)  # scalar kwargs worth keeping; ints are left out as they may be sizes


@dataclass
class _OpenCall:
    index: int
    path: str
    module: nn.Module
    parent: int | None
    inputs: tuple[TensorMeta, ...]
    file: str  # where the module's class is written: its ops are attributed to code there
    site: Site | None  # where it was called from
    live: int  # how many frames were numbered when it began: those numbered after end with it
    input_names: tuple[str, ...] | None  # its inputs as its forward names them


@dataclass
class _Recorder:
    names: dict[int, str]  # id(module) -> path
    counts: dict[int, tuple[int, int, tuple[Weight, ...]]]  # id(module) -> parameter_counts()
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
    clock: int = 0  # ticks at every op and every call's return: one order for both
    # frames are numbered per call of their function, in the order the calls began. A numbered frame
    # is held while it may still run (until the module call it began in returns), so that its id
    # cannot be taken by another frame meanwhile
    live: dict[int, tuple[FrameType, int]] = field(default_factory=dict)  # id(frame) -> (frame, number)
    live_order: list[int] = field(default_factory=list)  # ids of `live`, in the order they were numbered
    last_frame: FrameType | None = None
    last_number: int = 0
    frames: int = 0
    frame_records: list[Frame] = field(default_factory=list)
    values: dict[int, TensorStats | None] | None = None  # tensor id -> its stats, with --stats
    failed: str | None = None  # the op that raised: where it was written, its name and operands
    layers: dict[int, str] = field(default_factory=dict)  # id(layer) -> the stage it begins
    named: NamedReads = field(default_factory=lambda: NamedReads({}, {}))
    input_names: tuple[str, ...] | None = None  # the forward's names of the inputs, where it gives them

    def number(self, frame: FrameType) -> int:
        """Which call of its function `frame` is: one number per frame, first come first numbered.
        The user frames it was called from are numbered first, as they began first."""
        if frame is self.last_frame:
            return self.last_number
        entry = self.live.get(id(frame))
        if entry is None or entry[0] is not frame:
            callers = []
            caller = frame.f_back
            while caller is not None and caller.f_code.co_filename != _THIS_FILE:
                known = self.live.get(id(caller))
                if known is not None and known[0] is caller:
                    break
                if not _is_torch_code(caller.f_code):
                    callers.append(caller)
                caller = caller.f_back
            for f in (*reversed(callers), frame):
                self.frames += 1
                self.live[id(f)] = (f, self.frames)
                self.live_order.append(id(f))
                self.frame_records.append(self.frame_record(f, self.frames))
            entry = (frame, self.frames)  # numbered last
        self.last_frame, self.last_number = frame, entry[1]
        return entry[1]

    def frame_record(self, frame: FrameType, number: int) -> Frame:
        """The record of a frame just numbered, with its caller where model code called it directly."""
        code, back = frame.f_code, frame.f_back
        caller = None
        if back is not None and not _is_torch_code(back.f_code):
            known = self.live.get(id(back))
            caller = known[1] if known is not None and known[0] is back else None
        line = back.f_lineno if back is not None and caller is not None else 0
        arguments = self.argument_ids(frame)
        return Frame(number, code.co_filename, code.co_name, code.co_firstlineno, caller, line, arguments)

    def argument_ids(self, frame: FrameType) -> tuple[int, ...] | None:
        """The ids of the tensors `frame`'s parameters hold, in its signature's order, -1 for one
        holding no tensor seen here; None for a function that takes nothing."""
        code = frame.f_code
        count = code.co_argcount + code.co_kwonlyargcount
        if count == 0:
            return None
        local = frame.f_locals
        ids = []
        for name in code.co_varnames[:count]:
            value = local.get(name)
            tag = getattr(value, _TAG, None) if isinstance(value, torch.Tensor) else None
            ids.append(tag[1] if tag is not None and tag[0] is self.token else -1)
        return tuple(ids)

    def forget_frames(self, keep: int = 0) -> None:
        """Let go of the frames numbered after the first `keep`: their calls are over."""
        for key in self.live_order[keep:]:
            del self.live[key]
        del self.live_order[keep:]
        self.last_frame = None

    def meta(self, t: torch.Tensor, parents: tuple[int, ...] = (), new: bool = False) -> TensorMeta:
        """The TensorMeta of `t`, giving it a fresh id if it is new (or `new` is asked)."""
        tag = None if new else getattr(t, _TAG, None)
        if tag is not None and tag[0] is self.token:
            known = tag[2]
            if known.shape == t.shape:  # what it was made with: its consumers share one TensorMeta
                return known
            tid = tag[1]  # reshaped in place where no op was recorded: its id, its new shape
        else:
            tid = len(self.parents)
            self.parents.append(parents)
            if not new:
                self.untag.append(weakref.ref(t))
            if self.values is not None:  # the value it has when first seen, before any in-place op
                self.values[tid] = tensor_stats(t)
        meta = TensorMeta(tid, tuple(t.shape), _dtype_name(t.dtype), stats=self.stats(tid))
        setattr(t, _TAG, (self.token, tid, meta))
        return meta

    def stats(self, tid: int) -> TensorStats | None:
        return None if self.values is None else self.values.get(tid)

    def alias(self, t: torch.Tensor, tid: int) -> TensorMeta:
        """`t` under the id `tid` of a tensor holding the same value."""
        if getattr(t, _TAG, None) is None:
            self.untag.append(weakref.ref(t))
        meta = TensorMeta(tid, tuple(t.shape), _dtype_name(t.dtype), stats=self.stats(tid))
        setattr(t, _TAG, (self.token, tid, meta))
        return meta

    def remove_tags(self, outputs: Any) -> None:
        for t in (*(ref() for ref in self.untag), *_tensors(outputs)):
            if t is not None and hasattr(t, _TAG):
                delattr(t, _TAG)

    def metas(self, values: Any) -> tuple[TensorMeta, ...]:
        return tuple(self.meta(t) for t in _tensors(values) if not _is_parameter(t))

    # --- module hooks -------------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        with torch._C.DisableTorchFunction():  # what the hook reads (t.shape) is not the model's op
            self._begin(module, args, kwargs)

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        with torch._C.DisableTorchFunction():
            self._end(module, output)

    def _begin(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        index = len(self.calls)
        self.calls.append(None)  # filled in when the call returns
        parent = self.stack[-1].index if self.stack else None
        path = self.names[id(module)]
        inputs = self.metas((args, kwargs))
        site = None
        if self.stack:  # the root call is made by the tracer: it has no site in the model's code
            frame = _caller(self.stack[-1].file)
            if frame is not None:
                code = frame.f_code
                number = self.number(frame)
                site = Site(code.co_filename, code.co_name, code.co_firstlineno, frame.f_lineno, number)
        file = _module_file(type(module).__module__)
        named = input_names(module, args, kwargs, len(inputs))
        live = len(self.live_order)
        self.stack.append(_OpenCall(index, path, module, parent, inputs, file, site, live, named))
        if (begun := self.layers.get(id(module))) is not None:
            progress.stage(begun)

    def _end(self, module: nn.Module, output: Any) -> None:
        call = self.stack.pop()
        self.forget_frames(call.live)
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
            *self.counts[id(module)],
            self.clock,
            call.site,
            call.input_names,
        )
        self.clock += 1

    # --- ops ----------------------------------------------------------------------------------
    def fail(self, func: Any, args: tuple, kwargs: dict) -> None:
        """Remember the op that raised, as `file:line Class.function: op (shape) @ (shape)`; the
        innermost only (F.linear fails inside a module, an outer op around it fails with it)."""
        if self.failed is not None:
            return
        frame = _caller(None)  # the user's line, also where the op is inside torch's own layer
        name = _op_name(func)
        shapes = [str(tuple(t.shape)) for t in _tensors((args, kwargs))]
        symbol = _INFIX.get(name)
        operands = f" {symbol} ".join(shapes) if symbol and len(shapes) == 2 else ", ".join(shapes)
        site = ""
        if frame is not None:
            file = frame.f_code.co_filename
            shown = os.path.relpath(file) if file.startswith(os.getcwd() + os.sep) else file
            site = f"{shown}:{frame.f_lineno} {frame.f_code.co_qualname}: "
        self.failed = f"{site}{name} {operands}".rstrip()

    def record_op(self, func: Any, args: tuple, kwargs: dict, result: Any, counts: Counts) -> None:
        out_tensors = _tensors(result)
        if not out_tensors:
            return
        tensors = _tensors((args, kwargs) if kwargs else args)  # args alone: one level fewer to look into
        taken = [t for t in tensors if not _is_parameter(t)]
        inputs = tuple(self.meta(t) for t in taken)
        index = len(self.ops)
        parent_ids = tuple(t.id for t in inputs)
        in_place = _is_in_place(func)
        name = _op_name(func)
        params = self.named.read(name, tensors, args) if len(taken) < len(tensors) else ()
        outputs = []
        for t in out_tensors:
            # an op that hands back its input (x.float() on a float, eval-mode dropout) leaves the
            # value as it was: it keeps its id. So does contiguous(), whether or not the memory
            # layout (which differs between devices) made it copy.
            if not in_place and any(t is x for x in taken):
                meta = self.meta(t)
            elif facts(name).keeps_value and len(inputs) == 1:
                meta = self.alias(t, inputs[0].id)
            else:
                meta = self.meta(t, parent_ids, new=True)
                self.producer_op[meta.id] = index
            outputs.append(meta)
        frame = _caller(self.stack[-1].file if self.stack else None)
        attrs = _attrs(kwargs)
        call = self.stack[-1].index if self.stack else None
        if frame is None:
            where: tuple[str, int, int, str, int] = ("?", 0, 0, "", 0)
        else:
            code = frame.f_code
            where = (code.co_name, frame.f_lineno, self.number(frame), code.co_filename, code.co_firstlineno)
        function, line, number, file, first_line = where
        self.ops.append(
            OpCall(
                index, name, call, function, line, number, inputs, tuple(outputs), attrs, self.clock,
                file, first_line, counts.flops, tuple(counts.uncounted), params,
            )
        )  # fmt: skip
        self.clock += 1


def parameter_counts(root: nn.Module) -> dict[int, tuple[int, int, tuple[Weight, ...]]]:
    """id(module) -> (parameters, trainable parameters, own weights) of every module under `root`,
    its submodules' parameters included and each counted once (tied weights too), as
    module.parameters() counts them; worked out in one pass, not once per module and depth."""
    below: dict[int, dict[int, nn.Parameter]] = {}  # id(module) -> its parameters and its submodules'

    def collect(m: nn.Module) -> dict[int, nn.Parameter]:
        if id(m) not in below:
            found = {id(p): p for p in m._parameters.values() if p is not None}
            for child in m._modules.values():
                if child is not None:
                    found.update(collect(child))
            below[id(m)] = found
        return below[id(m)]

    collect(root)
    counts = {}
    owners: dict[int, str] = {}  # id(parameter) -> "path.name" of its first owner
    for path, m in root.named_modules():
        params = [(p.numel(), p.requires_grad) for p in below[id(m)].values()]
        own = []
        for n, p in m._parameters.items():
            if p is not None:
                name = f"{path}.{n}" if path else n
                first = owners.setdefault(id(p), name)
                own.append(Weight(n, tuple(p.shape), p.requires_grad, tied=None if first == name else first))
        counts[id(m)] = (sum(n for n, _ in params), sum(n for n, grad in params if grad), tuple(own))
    return counts


class _OpRecorder(TorchFunctionMode):
    def __init__(self, recorder: _Recorder, counter: FlopCounter):
        super().__init__()
        self.recorder = recorder
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            result, counts = self.counter.count(func, args, kwargs)
        except Exception:
            self.recorder.fail(func, args, kwargs)
            raise
        # most calls are x.shape, x.size(), x.dim(): no tensor comes back, nothing to record
        if isinstance(result, torch.Tensor) or (
            isinstance(result, (tuple, list)) and type(result) is not torch.Size
        ):
            self.recorder.record_op(func, args, kwargs, result, counts)
        return result


_NO_ATTRS = FrozenDict()  # what most ops keep: one record of no arguments, shared by all


def _attrs(kwargs: dict) -> FrozenDict:
    """The scalar keyword arguments an op's record keeps, frozen here: its OpCall need not copy them."""
    kept = {k: v for k, v in kwargs.items() if isinstance(v, _ATTR_TYPES)} if kwargs else None
    return FrozenDict(kept) if kept else _NO_ATTRS


def _tensors(values: Any) -> list[torch.Tensor]:
    """The tensors in a value, looking into tuples, lists and dicts: what an op takes or returns."""
    if isinstance(values, torch.Tensor):
        return [values]
    found: list[torch.Tensor] = []
    _gather(values, found)
    return found


def _gather(values: Any, found: list[torch.Tensor]) -> None:
    if isinstance(values, dict):
        values = values.values()
    elif not isinstance(values, (tuple, list)):
        return
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (tuple, list, dict)):
            _gather(v, found)


def _is_parameter(t: torch.Tensor) -> bool:
    # by class, not isinstance: nn.Parameter's isinstance goes through a Python metaclass hook
    return issubclass(type(t), nn.Parameter)


_INFIX = {"matmul": "@", "add": "+", "sub": "-", "mul": "*", "div": "/"}  # how `fail` writes a binary op


@functools.cache
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@functools.cache
def _op_name(func: Any) -> str:
    return getattr(func, "__name__", str(func)).strip("_")  # Tensor.__add__ -> "add"


@functools.cache
def _is_in_place(func: Any) -> bool:
    """Tensor.add_ and x += y write into their input: the value it held is gone."""
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or (
        name.startswith("__i") and name.endswith("__")
    )


@functools.cache
def _is_torch_code(code: CodeType) -> bool:
    return code.co_filename.startswith(_TORCH_DIR) or code.co_filename == _THIS_FILE


@functools.cache
def _module_file(name: str) -> str:
    return getattr(sys.modules.get(name), "__file__", None) or ""


def _caller(module_file: str | None) -> FrameType | None:
    """Where the op was written: the innermost Python frame outside torch and this file, or in the
    file of the module running it (torch's own layers, such as nn.TransformerEncoderLayer, are code
    too: their ops belong to them, not to whoever called the module)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and _is_torch_code(frame.f_code) and frame.f_code.co_filename != module_file:
        frame = frame.f_back
    return frame


def trace(
    module: nn.Module, args: tuple = (), kwargs: dict | None = None, device: str = "", stats: bool = False
) -> Trace:
    """Call `module(*args, **kwargs)` once and return what it did; with `stats`, each tensor with
    the statistics of its values (tracing/values.py)."""
    kwargs = kwargs or {}
    names = {id(m): path for path, m in module.named_modules()}
    recorder = _Recorder(names, parameter_counts(module), values={} if stats else None)
    begun = progress.current
    recorder.layers = layer_stages(module, begun)
    training = {m: m.training for m in module.modules()}
    handles = []
    output = None
    try:
        for m in module.modules():
            handles.append(m.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(recorder.post_hook, with_kwargs=True))
        module.eval()
        inputs = recorder.metas((args, kwargs))
        recorder.input_names = input_names(module, args, kwargs, len(inputs))
        recorder.named = NamedReads.of(module, recorder.meta)
        counter = FlopCounter()
        with torch.no_grad(), _OpRecorder(recorder, counter):
            try:
                output = module(*args, **kwargs)
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # sys.exit() or GeneratorExit in a forward is a failure too
                where = recorder.stack[-1] if recorder.stack else None
                place = f"{where.path or '<root>'} ({type(where.module).__name__})" if where else ""
                said = error if isinstance(error, Exception) else error_line(error, named=True)
                at = f" at {recorder.failed}" if recorder.failed else ""
                ran = _ran(recorder, module, inputs, device or _device_of(args))
                raise ForwardError(f"forward failed in {place}{at}: {said}", ran) from error
        outputs = recorder.metas(output)
    finally:
        recorder.forget_frames()
        recorder.remove_tags(output)
        for handle in handles:
            handle.remove()
        for m, mode in training.items():
            m.training = mode  # each module's own flag: train() would redo its whole subtree
        progress.stage(begun)
    return _assembled(recorder, module, inputs, outputs, device or _device_of(args), recorder.calls)


def _assembled(
    recorder: _Recorder,
    module: nn.Module,
    inputs: tuple[TensorMeta, ...],
    outputs: tuple[TensorMeta, ...],
    device: str,
    calls: list[ModuleCall | None],
) -> Trace:
    """The Trace of what `recorder` recorded, its residual adds found from its data flow."""
    traced = Trace(
        model=type(module).__name__,
        device=device,
        inputs=inputs,
        outputs=outputs,
        calls=tuple(c for c in calls if c is not None),
        ops=tuple(recorder.ops),
        residual_adds=(),
        frames=tuple(recorder.frame_records),
        buffers=recorder.named.buffers,
        input_names=recorder.input_names,
    )
    rule = ResidualRule(
        recorder.ops, recorder.parents, recorder.producer_op, recorder.produced_by_call, calls
    )
    joined = replace(traced, residual_adds=tuple(rule.residual_adds(residual_joins(traced))))
    return handed_on(traced, joined)


def _ran(
    recorder: _Recorder,
    module: nn.Module,
    inputs: tuple[TensorMeta, ...],
    device: str,
) -> Trace:
    """What ran before the forward raised: the calls still open (the failing one and those around
    it) closed there, returning nothing, so that every op recorded has its call. Its residual adds
    are found as if each open call ended the stream with what it was reading when it stopped; its
    outputs are what the root call was reading, where the stream stopped."""
    for i, open_call in enumerate(recorder.stack):
        reading = (recorder.stack[i + 1] if i + 1 < len(recorder.stack) else open_call).inputs[:1]
        counts = recorder.counts[id(open_call.module)]
        kind, site, named = type(open_call.module).__name__, open_call.site, open_call.input_names
        closed = (open_call.parent, open_call.inputs, reading, *counts, recorder.clock, site, named)
        recorder.calls[open_call.index] = ModuleCall(open_call.index, open_call.path, kind, *closed)
    ended = _assembled(recorder, module, inputs, (), device, recorder.calls)
    still_open = {c.index for c in recorder.stack}
    calls = tuple(replace(c, outputs=()) if c.index in still_open else c for c in ended.calls)
    root = recorder.calls[recorder.stack[0].index] if recorder.stack else None
    return replace(ended, calls=calls, outputs=() if root is None else root.outputs)


def layer_stages(module: nn.Module, stage: str) -> dict[int, str]:
    """id(layer) -> "STAGE: layer k of N", for the layers of the longest ModuleList in `module` (a
    stack's Blocks, a transformers model's decoder layers): the progress line follows them."""
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
    if not lists:
        return {}
    layers = max(lists, key=len)  # the first of the longest
    return {id(layer): f"{stage}: layer {k} of {len(layers)}" for k, layer in enumerate(layers, 1)}


def _device_of(args: Any) -> str:
    return next((t.device.type for t in _tensors(args)), "cpu")
