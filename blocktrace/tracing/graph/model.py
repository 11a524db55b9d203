"""The data-flow graph's plain data: steps, the stream of each level, its residuals, its side inputs
and side outputs. Built by graph/build.py, read by every view. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from blocktrace.tracing.trace import TensorMeta


class StepKind(StrEnum):
    call = "call"  # a module call
    helper = "helper"  # one call of a function of the model's code that is not a forward, all it ran
    op = "op"  # a functional op (F.rms_norm, relu, view, +, ...)


@dataclass(frozen=True)
class Step:
    """One thing done at one level: a module call, a helper call, or an op, with every input it
    took from outside itself and every output it made that is used after it or leaves the level."""

    kind: StepKind
    name: str  # as the code names it: "attn" (the module's attribute), "apply_rotary_emb", "add"
    title: str  # the module's class, the helper's function, or the op's name
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    time: int  # when it finished, on the trace's clock
    call: int | None = None  # a call step's module call (Trace.calls index)
    ops: tuple[int, ...] = ()  # an op step's op; a helper's ops at this level (Trace.ops indices)
    calls: tuple[int, ...] = ()  # a helper's module calls
    frame: int | None = None  # a helper's call (Frame.frame)


@dataclass(frozen=True)
class Branch:
    """One term f(x) of a residual sum, and the steps that computed it from the stream."""

    output: TensorMeta
    steps: tuple[int, ...]  # indices into Level.steps, in the order they ran


@dataclass(frozen=True)
class Residual:
    """x + f(x) (+ g(x) ...) on a level's stream: the stream value `skip` leaves the stream, the
    branches compute from it, and the join sums them. The join is the sum's last add, or a module
    call that takes both the stream value and a branch result and sums them inside (BERT's
    BertSelfOutput(attn(x), x)): then that call is a level of its own whose `skip_input` is x."""

    join: int  # index into Level.steps
    adds: tuple[int, ...]  # the sum's add steps at this level, the join's last; () for a call
    skip: TensorMeta  # x
    scaled: tuple[int, ...]  # the ops that scaled x on its way to the sum (β·x), usually none
    branches: tuple[Branch, ...]
    output: TensorMeta


@dataclass(frozen=True)
class Segment:
    """The stream from one of its values to the next: a chain of steps, or a residual."""

    start: TensorMeta
    end: TensorMeta
    steps: tuple[int, ...]  # the chain; for a residual, the join's adds (or the join call)
    residual: Residual | None = None


@dataclass(frozen=True)
class SideInput:
    """An input of a step that the level did not compute from its main input: a mask, the rotary
    tables, value embeddings, an encoder's output."""

    step: int  # index into Level.steps of the step that reads it
    value: TensorMeta
    source: str  # where it came from: the step that made it ("rotary_emb", "value_embeds.3"), or "input 2"


@dataclass(frozen=True)
class Level:
    """The inside of one module call that the drawing opens: the root, and every call on a stream
    that holds residuals (a Block, a stack of them, a model around its layers)."""

    call: int  # Trace.calls index
    frame: int | None  # the helper call inside it whose inside this is; None: the call's own
    steps: tuple[Step, ...]  # every step directly inside the call, in the order they finished
    main_input: TensorMeta | None  # the call's first tensor input
    main_output: TensorMeta | None  # its first tensor output
    stream: tuple[TensorMeta, ...]  # the values every path from main input to main output passes
    segments: tuple[Segment, ...]  # between each two consecutive stream values
    side_inputs: tuple[SideInput, ...]
    side_outputs: tuple[TensorMeta, ...]  # the call's outputs besides the main one
    opened: tuple[int, ...]  # indices into steps of the calls drawn as levels of their own
    skip_input: TensorMeta | None = None  # for a join call: the stream value it adds inside

    @property
    def residuals(self) -> tuple[Residual, ...]:
        return tuple(s.residual for s in self.segments if s.residual is not None)


@dataclass(frozen=True)
class Graph:
    """Every opened level of a trace, the root's first, and the calls beside every stream that hold
    residuals of their own (an encoder-decoder's encoder): their levels are among `levels`, after
    those of the stream they are beside."""

    levels: tuple[Level, ...]
    beside: tuple[tuple[int, int], ...] = ()  # (Trace.calls index, how many residuals it holds)

    def level(self, call: int, frame: int | None = None) -> Level | None:
        return next((lv for lv in self.levels if (lv.call, lv.frame) == (call, frame)), None)

    @property
    def root(self) -> Level:
        return self.levels[0]

    @property
    def residuals(self) -> tuple[Residual, ...]:
        """Every residual of every level; a join call's residual once, inside it."""
        return tuple(
            r for lv in self.levels for r in lv.residuals if not (r.adds == () and self._inside(lv, r))
        )

    def _inside(self, level: Level, r: Residual) -> bool:
        step = level.steps[r.join]
        inner = self.level(step.call) if step.call is not None else self.level(level.call, step.frame)
        return inner is not None and bool(inner.residuals)
