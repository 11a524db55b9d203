"""The trace: plain, JSON-able data about one forward pass. The contract between tracing and drawing.

No torch here, so layout and rendering can be built and tested without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

SCHEMA = "blocktrace.trace"
SCHEMA_VERSION = 4


@dataclass(frozen=True)
class TensorMeta:
    id: int  # one id per tensor value; follow it from producer to consumers
    shape: tuple[int, ...]
    dtype: str
    symbols: tuple[str, ...] | None = None  # e.g. ("B", "T", "4C"); None where no names are known

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "shape": list(self.shape), "dtype": self.dtype}
        if self.symbols is not None:
            out["symbols"] = list(self.symbols)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorMeta:
        symbols = d.get("symbols")
        return cls(d["id"], tuple(d["shape"]), d["dtype"], None if symbols is None else tuple(symbols))


@dataclass(frozen=True)
class Weight:
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Weight:
        symbols = d.get("symbols")
        return cls(
            d["name"],
            tuple(d["shape"]),
            d["trainable"],
            None if symbols is None else tuple(symbols),
            d.get("tied"),
        )


@dataclass(frozen=True)
class Site:
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

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Site | None:
        if d is None:
            return None
        return cls(d["file"], d["function"], d["first_line"], d["line"], d["frame"])


@dataclass(frozen=True)
class Frame:
    """One call of one Python function of the model's code (a forward, a helper such as norm)."""

    frame: int  # its number: what OpCall.frame and Site.frame name; numbered in the order calls began
    file: str  # the function's file (co_filename)
    function: str  # its name (co_name)
    first_line: int  # where its definition starts (co_firstlineno)
    caller: int | None  # the frame that called it, where that is model code called directly (a helper)
    line: int  # the caller's line that made the call; 0 without a caller

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "file": self.file,
            "function": self.function,
            "first_line": self.first_line,
            "caller": self.caller,
            "line": self.line,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Frame:
        return cls(d["frame"], d["file"], d["function"], d["first_line"], d["caller"], d["line"])


@dataclass(frozen=True)
class ModuleCall:
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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModuleCall:
        return cls(
            d["index"],
            d["path"],
            d["type"],
            d["parent"],
            tuple(TensorMeta.from_dict(t) for t in d["inputs"]),
            tuple(TensorMeta.from_dict(t) for t in d["outputs"]),
            d["params"],
            d["trainable"],
            tuple(Weight.from_dict(w) for w in d["weights"]),
            d["end"],
            Site.from_dict(d["site"]),
        )


@dataclass(frozen=True)
class OpCall:
    """One functional op (F.rms_norm, relu, view, +, ...) that returned tensors."""

    index: int  # position among ops, in execution order
    name: str  # the torch function's name: "rms_norm", "scaled_dot_product_attention", "add", ...
    call: int | None  # index of the module call it ran in
    function: str  # the Python function that called it: "forward", "norm", "apply_rotary_emb"
    line: int  # the line in that function
    frame: int  # which call of that function: ops of one apply_rotary_emb(q) share it
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    attrs: dict[str, Any] = field(default_factory=dict)  # scalar arguments, e.g. is_causal
    time: int = 0  # when it ran: one clock ticks at every op and every module call's return
    file: str = ""  # the file of that function, as Python knows it (co_filename)
    first_line: int = 0  # where that function's definition starts in the file (co_firstlineno)
    flops: int = 0  # forward FLOPs of its aten ops that have a formula (see flops.py)
    uncounted: tuple[str, ...] = ()  # its aten ops with no formula ("aten.linalg_inv_ex"): FLOPs unknown

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
            "attrs": dict(self.attrs),
            "time": self.time,
            "flops": self.flops,
            "uncounted": list(self.uncounted),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpCall:
        return cls(
            d["index"],
            d["name"],
            d["call"],
            d["function"],
            d["line"],
            d["frame"],
            tuple(TensorMeta.from_dict(t) for t in d["inputs"]),
            tuple(TensorMeta.from_dict(t) for t in d["outputs"]),
            dict(d["attrs"]),
            d["time"],
            d["file"],
            d["first_line"],
            d["flops"],
            tuple(d["uncounted"]),
        )


@dataclass(frozen=True)
class Branch:
    """One term f(x) of a residual sum: what was computed from the stream on the way to the add."""

    output: TensorMeta  # f(x)
    calls: tuple[int, ...]  # the outermost module calls on it, in the order they returned
    ops: tuple[int, ...]  # ops on it outside those calls, at the add's own level

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output.to_dict(), "calls": list(self.calls), "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Branch:
        return cls(TensorMeta.from_dict(d["output"]), tuple(d["calls"]), tuple(d["ops"]))


@dataclass(frozen=True)
class ResidualAdd:
    """A sum x + f(x) (+ g(x) ...): one term, the stream, is a data-flow ancestor of every other
    term, each through at least one module call. x + attn(ln1(x)) + mlp(ln2(x)) is one residual
    add of two branches, whatever the order of its terms."""

    op: int  # index in Trace.ops of the add that makes the new stream: the sum's last add
    adds: tuple[int, ...]  # every add of the sum, in order (one for x + f(x))
    stream: TensorMeta  # x, the residual stream that skips the branches
    branches: tuple[Branch, ...]  # f(x), g(x), ... in the order their values were made
    output: TensorMeta  # x + f(x) + ...

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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResidualAdd:
        return cls(
            d["op"],
            tuple(d["adds"]),
            TensorMeta.from_dict(d["stream"]),
            tuple(Branch.from_dict(b) for b in d["branches"]),
            TensorMeta.from_dict(d["output"]),
        )


@dataclass(frozen=True)
class Trace:
    model: str  # class name of the traced root module
    device: str  # where the shapes came from: "probe", "meta", "cpu", "cuda"
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    calls: tuple[ModuleCall, ...]
    ops: tuple[OpCall, ...]
    residual_adds: tuple[ResidualAdd, ...]
    config: dict[str, Any] = field(default_factory=dict)
    symbols: dict[str, int] = field(default_factory=dict)  # legend: symbol -> value, e.g. C -> 768
    meanings: dict[str, str] = field(default_factory=dict)  # legend: symbol -> meaning, e.g. C -> n_embd
    frames: tuple[Frame, ...] = ()  # every call of a function of the model's code, by number

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
        found = [*self.inputs, *self.outputs]
        for c in self.calls:
            found += c.inputs
            found += c.outputs
        for o in self.ops:
            found += o.inputs
            found += o.outputs
        for r in self.residual_adds:
            found += (r.stream, *(b.output for b in r.branches), r.output)
        return found

    def map_tensors(self, fn: Callable[[TensorMeta], TensorMeta]) -> Trace:
        """The same trace with every TensorMeta t replaced by fn(t)."""

        def each(ts: tuple[TensorMeta, ...]) -> tuple[TensorMeta, ...]:
            return tuple(map(fn, ts))

        # built field by field rather than with dataclasses.replace: a deep stack has thousands
        return replace(
            self,
            inputs=each(self.inputs),
            outputs=each(self.outputs),
            calls=tuple(
                ModuleCall(
                    c.index, c.path, c.type, c.parent, each(c.inputs), each(c.outputs),
                    c.params, c.trainable, c.weights, c.end, c.site,
                )
                for c in self.calls
            ),
            ops=tuple(
                OpCall(
                    o.index, o.name, o.call, o.function, o.line, o.frame, each(o.inputs), each(o.outputs),
                    o.attrs, o.time, o.file, o.first_line, o.flops, o.uncounted,
                )
                for o in self.ops
            ),
            residual_adds=tuple(
                ResidualAdd(
                    r.op, r.adds, fn(r.stream),
                    tuple(Branch(fn(b.output), b.calls, b.ops) for b in r.branches), fn(r.output),
                )
                for r in self.residual_adds
            ),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "model": self.model,
            "device": self.device,
            "config": dict(self.config),
            "symbols": dict(self.symbols),
            "meanings": dict(self.meanings),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "calls": [c.to_dict() for c in self.calls],
            "ops": [o.to_dict() for o in self.ops],
            "residual_adds": [r.to_dict(self) for r in self.residual_adds],
            "frames": [f.to_dict() for f in self.frames],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        if d.get("schema") != SCHEMA or d.get("version") != SCHEMA_VERSION:
            raise ValueError(
                f"not a {SCHEMA} v{SCHEMA_VERSION} document "
                f"(schema={d.get('schema')!r}, version={d.get('version')!r})"
            )
        return cls(
            d["model"],
            d["device"],
            tuple(TensorMeta.from_dict(t) for t in d["inputs"]),
            tuple(TensorMeta.from_dict(t) for t in d["outputs"]),
            tuple(ModuleCall.from_dict(c) for c in d["calls"]),
            tuple(OpCall.from_dict(o) for o in d["ops"]),
            tuple(ResidualAdd.from_dict(r) for r in d["residual_adds"]),
            dict(d["config"]),
            dict(d["symbols"]),
            dict(d["meanings"]),
            tuple(Frame.from_dict(f) for f in d["frames"]),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Trace:
        return cls.from_dict(json.loads(text))
