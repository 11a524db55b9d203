"""The trace: plain, JSON-able data about one forward pass. The contract between tracing and drawing.

No torch here, so layout and rendering can be built and tested without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from blocktrace.tracing.records import FrozenDict, Record, leaves, map_leaves, plain

SCHEMA = "blocktrace.trace"
SCHEMA_VERSION = 6


@dataclass(frozen=True)
class TensorStats(Record):
    """The values of one tensor of a real run (--stats), over all its elements, in float64."""

    mean: float
    std: float  # the population's: sqrt(mean((x - mean)^2))
    rms: float  # sqrt(mean(x^2))
    min: float
    max: float
    zeros: float  # the fraction of elements exactly 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "rms": self.rms,
            "min": self.min,
            "max": self.max,
            "zeros": self.zeros,
        }


@dataclass(frozen=True)
class TensorMeta(Record):
    id: int  # one id per tensor value; follow it from producer to consumers
    shape: tuple[int, ...]
    dtype: str
    symbols: tuple[str, ...] | None = None  # e.g. ("B", "T", "4C"); None where no names are known
    stats: TensorStats | None = None  # its values' statistics, where the trace ran with --stats

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "shape": list(self.shape), "dtype": self.dtype}
        if self.symbols is not None:
            out["symbols"] = list(self.symbols)
        if self.stats is not None:
            out["stats"] = self.stats.to_dict()
        return out


@dataclass(frozen=True)
class Weight(Record):
    name: str  # the parameter's name inside its module, e.g. "weight"
    shape: tuple[int, ...]  # a Linear's weight is (out_features, in_features)
    trainable: bool  # requires_grad
    symbols: tuple[str, ...] | None = None  # e.g. ("4C", "C"), as for TensorMeta
    tied: str | None = None  # "wte.weight": the same Parameter, first owned there (counted there)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "trainable": self.trainable}
        if self.symbols is not None:
            out["symbols"] = list(self.symbols)
        if self.tied is not None:
            out["tied"] = self.tied
        return out


@dataclass(frozen=True)
class Site(Record):
    """Where a module was called from: the line of Python code that ran `self.attn(...)`."""

    file: str  # the code's file, as Python knows it (co_filename)
    function: str  # the function holding that line: "forward"
    first_line: int  # where that function's definition starts in the file (co_firstlineno)
    line: int  # the line of the call
    frame: int  # which call of that function, numbered as OpCall.frame is

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "function": self.function,
            "first_line": self.first_line,
            "line": self.line,
            "frame": self.frame,
        }


@dataclass(frozen=True)
class Frame(Record):
    """One call of one Python function of the model's code (a forward, a helper such as norm)."""

    frame: int  # its number: what OpCall.frame and Site.frame name; numbered in the order calls began
    file: str  # the function's file (co_filename)
    function: str  # its name (co_name)
    first_line: int  # where its definition starts (co_firstlineno)
    caller: int | None  # the frame that called it, where that is model code called directly (a helper)
    line: int  # the caller's line that made the call; 0 without a caller
    # the ids of the tensors its parameters held as its first op began, in its signature's order, -1
    # for one holding no tensor: the order a helper call took its values in, modulate(x, shift, scale)
    arguments: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "file": self.file,
            "function": self.function,
            "first_line": self.first_line,
            "caller": self.caller,
            "line": self.line,
            **({} if self.arguments is None else {"arguments": list(self.arguments)}),
        }


@dataclass(frozen=True)
class ModuleCall(Record):
    """One call of one module: a module called twice gives two calls."""

    index: int  # position among calls, in the order the calls began
    path: str  # dotted path from the root module; "" for the root itself
    type: str  # the module's class name
    parent: int | None  # index of the enclosing call
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    params: int  # parameters of the module and its submodules
    trainable: int  # how many of them require grad
    weights: tuple[Weight, ...] = ()  # the module's own parameters (not its submodules')
    end: int = 0  # when it returned, on the clock that OpCall.time reads
    site: Site | None = None  # where it was called from; None for the root call
    # each input as the module's forward names it ("hidden_states", "position_embeddings[0]"); None: not known
    input_names: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "path": self.path,
            "type": self.type,
            "parent": self.parent,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "params": self.params,
            "trainable": self.trainable,
            "weights": [w.to_dict() for w in self.weights],
            "end": self.end,
            "site": None if self.site is None else self.site.to_dict(),
            **({} if self.input_names is None else {"input_names": list(self.input_names)}),
        }


@dataclass(frozen=True)
class ParameterRead(Record):
    """A parameter an op read: no value of the data flow, so not among the op's inputs."""

    position: int  # where it stood among the tensors the op took
    name: str  # what the code calls it there: "resid_lambdas[0]" (a slice at a number), "gamma"

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "name": self.name}


@dataclass(frozen=True)
class OpCall(Record):
    """One functional op (F.rms_norm, relu, view, +, ...) that returned tensors."""

    index: int  # position among ops, in execution order
    name: str  # the torch function's name: "rms_norm", "scaled_dot_product_attention", "add", ...
    call: int | None  # index of the module call it ran in
    function: str  # the Python function that called it: "forward", "norm", "apply_rotary_emb"
    line: int  # the line in that function
    frame: int  # which call of that function: ops of one apply_rotary_emb(q) share it
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    attrs: Mapping[str, Any] = FrozenDict()  # scalar arguments, e.g. is_causal
    time: int = 0  # when it ran: one clock ticks at every op and every module call's return
    file: str = ""  # the file of that function, as Python knows it (co_filename)
    first_line: int = 0  # where that function's definition starts in the file (co_firstlineno)
    flops: int = 0  # forward FLOPs of its aten ops that have a formula (see flops.py)
    uncounted: tuple[str, ...] = ()  # its aten ops with no formula ("aten.linalg_inv_ex"): FLOPs unknown
    parameters: tuple[ParameterRead, ...] = ()  # the parameters it read, by name

    def __post_init__(self) -> None:
        self.freeze_mappings()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "call": self.call,
            "function": self.function,
            "file": self.file,
            "first_line": self.first_line,
            "line": self.line,
            "frame": self.frame,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "attrs": plain(self.attrs),
            "time": self.time,
            "flops": self.flops,
            "uncounted": list(self.uncounted),
            "parameters": [r.to_dict() for r in self.parameters],
        }


@dataclass(frozen=True)
class Branch(Record):
    """One term f(x) of a residual sum: what was computed from the stream on the way to the add."""

    output: TensorMeta  # f(x)
    calls: tuple[int, ...]  # the outermost module calls on it, in the order they returned
    ops: tuple[int, ...]  # ops on it outside those calls, at the add's own level

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output.to_dict(), "calls": list(self.calls), "ops": list(self.ops)}


@dataclass(frozen=True)
class ResidualAdd(Record):
    """A sum x + f(x) (+ g(x) ...): one term, the stream, is a data-flow ancestor of every branch
    term, each through at least one module call; a term not computed from the stream at all (a
    context's projection, x0) is a side term. x + attn(ln1(x)) + mlp(ln2(x)) is one residual add
    of two branches, whatever the order of its terms; x + proj(a) + ctx(c) one of a branch and a
    side term."""

    op: int  # index in Trace.ops of the add that makes the new stream: the sum's last add
    adds: tuple[int, ...]  # every add of the sum, in order (one for x + f(x))
    stream: TensorMeta  # x, the residual stream that skips the branches
    branches: tuple[Branch, ...]  # f(x), g(x), ... in the order their values were made
    output: TensorMeta  # x + f(x) + ...
    sides: tuple[TensorMeta, ...] = ()  # the side terms, in the order the sum takes them

    @property
    def calls(self) -> tuple[int, ...]:
        """The outermost module calls of every branch."""
        return tuple(c for b in self.branches for c in b.calls)

    def to_dict(self, trace: Trace) -> dict[str, Any]:
        return {
            "op": self.op,
            "adds": list(self.adds),
            "wraps": [trace.calls[i].path for i in self.calls],
            "stream": self.stream.to_dict(),
            "branches": [b.to_dict() for b in self.branches],
            "output": self.output.to_dict(),
            "sides": [t.to_dict() for t in self.sides],
        }


@dataclass(frozen=True)
class Trace(Record):
    model: str  # class name of the traced root module
    device: str  # where the shapes came from: "probe", "meta", "cpu", "cuda"
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    calls: tuple[ModuleCall, ...]
    ops: tuple[OpCall, ...]
    residual_adds: tuple[ResidualAdd, ...]
    config: Mapping[str, Any] = FrozenDict()  # what the model spec describes; JSON-able
    symbols: Mapping[str, int] = FrozenDict()  # legend: symbol -> value, e.g. C -> 768
    meanings: Mapping[str, str] = FrozenDict()  # legend: symbol -> meaning, e.g. C -> n_embd
    frames: tuple[Frame, ...] = ()  # every call of a function of the model's code, by number
    stopped: str | None = None  # a partial trace: the failure the forward stopped at (--partial)
    buffers: Mapping[str, str] = FrozenDict()  # str(tensor id) -> the buffer's path ("cos", "h.0.attn.bias")
    # each input as the traced module's forward names it ("ctx", "cos_sin[0]"); None: not known
    input_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.freeze_mappings()

    def input_name(self, k: int) -> str:
        """The model's input at index k as its forward names it (`ctx`), else by its place: "input",
        "input 2", ..."""
        if self.input_names is not None and k < len(self.input_names):
            return self.input_names[k]
        return "input" if k == 0 else f"input {k + 1}"

    def children(self, call: int | None) -> list[ModuleCall]:
        """The calls made directly inside `call` (None: the root calls)."""
        return self._children.get(call, [])

    def ops_in(self, call: int | None) -> list[OpCall]:
        """The ops run directly inside `call`, not inside its children."""
        return self._ops_in.get(call, [])

    def timeline(self, call: int | None) -> list[ModuleCall | OpCall]:
        """The calls and ops made directly inside `call`, in the order they finished."""
        found: list[ModuleCall | OpCall] = [*self.children(call), *self.ops_in(call)]
        return sorted(found, key=lambda item: item.end if isinstance(item, ModuleCall) else item.time)

    @cached_property
    def _children(self) -> dict[int | None, list[ModuleCall]]:
        index: dict[int | None, list[ModuleCall]] = {}
        for c in self.calls:
            index.setdefault(c.parent, []).append(c)
        return index

    @cached_property
    def _ops_in(self) -> dict[int | None, list[OpCall]]:
        index: dict[int | None, list[OpCall]] = {}
        for o in self.ops:
            index.setdefault(o.call, []).append(o)
        return index

    @property
    def float_dtype(self) -> str | None:
        """The dtype it computes in: its first floating input's, or, fed token ids, its output's."""
        return next((t.dtype for t in (*self.inputs, *self.outputs) if "float" in t.dtype), None)

    def tensors(self) -> list[TensorMeta]:
        """Every TensorMeta in the trace, once per place it is recorded, in map_tensors' order."""
        return leaves(self, TensorMeta)

    def map_tensors(self, fn: Callable[[TensorMeta], TensorMeta]) -> Trace:
        """The same trace with every TensorMeta t replaced by fn(t), wherever a field holds one."""
        return map_leaves(self, TensorMeta, fn)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "model": self.model,
            "device": self.device,
            "config": plain(self.config),
            "symbols": plain(self.symbols),
            "meanings": plain(self.meanings),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "calls": [c.to_dict() for c in self.calls],
            "ops": [o.to_dict() for o in self.ops],
            "residual_adds": [r.to_dict(self) for r in self.residual_adds],
            "frames": [f.to_dict() for f in self.frames],
            **({} if self.stopped is None else {"stopped": self.stopped}),
            "buffers": plain(self.buffers),
            **({} if self.input_names is None else {"input_names": list(self.input_names)}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trace:
        if d.get("schema") != SCHEMA or d.get("version") != SCHEMA_VERSION:
            raise ValueError(
                f"not a {SCHEMA} v{SCHEMA_VERSION} document "
                f"(schema={d.get('schema')!r}, version={d.get('version')!r})"
            )
        return super().from_dict(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Trace:
        return cls.from_dict(json.loads(text))
