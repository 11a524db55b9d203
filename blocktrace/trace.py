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
SCHEMA_VERSION = 1


class TraceError(RuntimeError):
    """A forward pass that could not be traced; the message says where, in one sentence."""


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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "trainable": self.trainable}
        if self.symbols is not None:
            out["symbols"] = list(self.symbols)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Weight:
        symbols = d.get("symbols")
        return cls(d["name"], tuple(d["shape"]), d["trainable"], None if symbols is None else tuple(symbols))


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "call": self.call,
            "function": self.function,
            "line": self.line,
            "frame": self.frame,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "attrs": dict(self.attrs),
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
        )


@dataclass(frozen=True)
class ResidualAdd:
    """An add x + f(x): one operand (the stream) is a data-flow ancestor of the other (the branch)
    through at least one module call."""

    op: int  # index of the add in Trace.ops
    stream: TensorMeta  # x, the residual stream that skips the branch
    branch: TensorMeta  # f(x)
    output: TensorMeta  # x + f(x)
    calls: tuple[int, ...]  # the outermost module calls on the branch, in order
    ops: tuple[int, ...]  # ops on the branch outside those calls, at the add's own level

    def to_dict(self, trace: Trace) -> dict[str, Any]:
        return {
            "op": self.op,
            "wraps": [trace.calls[i].path for i in self.calls],
            "stream": self.stream.to_dict(),
            "branch": self.branch.to_dict(),
            "output": self.output.to_dict(),
            "calls": list(self.calls),
            "ops": list(self.ops),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResidualAdd:
        return cls(
            d["op"],
            TensorMeta.from_dict(d["stream"]),
            TensorMeta.from_dict(d["branch"]),
            TensorMeta.from_dict(d["output"]),
            tuple(d["calls"]),
            tuple(d["ops"]),
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

    def children(self, call: int | None) -> list[ModuleCall]:
        """The calls made directly inside `call` (None: the root calls)."""
        return self._children.get(call, [])

    def ops_in(self, call: int | None) -> list[OpCall]:
        """The ops run directly inside `call`, not inside its children."""
        return self._ops_in.get(call, [])

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
            found += (r.stream, r.branch, r.output)
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
                    c.params, c.trainable, c.weights,
                )
                for c in self.calls
            ),
            ops=tuple(
                OpCall(
                    o.index, o.name, o.call, o.function, o.line, o.frame, each(o.inputs), each(o.outputs),
                    o.attrs,
                )
                for o in self.ops
            ),
            residual_adds=tuple(
                ResidualAdd(r.op, fn(r.stream), fn(r.branch), fn(r.output), r.calls, r.ops)
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
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "calls": [c.to_dict() for c in self.calls],
            "ops": [o.to_dict() for o in self.ops],
            "residual_adds": [r.to_dict(self) for r in self.residual_adds],
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
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Trace:
        return cls.from_dict(json.loads(text))
