"""The corpus tests' reading of a data-flow graph, in the words a person uses reading the model's
code: each residual as (the level it sums in, what made the skip, the steps of each branch, the last
one making the branch's term), and each step's side inputs by where they came from."""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch
from torch import nn

from blocktrace.tracing.graph.build import build_graph
from blocktrace.tracing.graph.model import Graph, Level
from blocktrace.tracing.trace import Trace
from blocktrace.tracing.tracer import trace
from blocktrace.views.diagram.formulas import formulas
from blocktrace.views.steps import StepTree

# (level path, what made the skip: "input" for the level's own input, else the step's name, the
# steps of each branch in the order they ran)
Residual = tuple[str, str, tuple[tuple[str, ...], ...]]


def traced(module: nn.Module, args: tuple = (), kwargs: dict[str, Any] | None = None) -> tuple[Trace, Graph]:
    """The trace of a real CPU forward, and its graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = trace(module.eval(), args, kwargs or {})
    return t, build_graph(t)


def _skip_source(level: Level, skip_id: int) -> str:
    if level.main_input is not None and skip_id == level.main_input.id:
        return "input"
    if level.skip_input is not None and skip_id == level.skip_input.id:
        return "skip input"  # a join call's: the stream value handed to it (BertSelfOutput's x)
    return next(s.name for s in level.steps if any(o.id == skip_id for o in s.outputs))


def residuals(t: Trace, g: Graph) -> list[Residual]:
    """Every residual of every level, outer levels first; a join call's residual once, inside it."""
    found = []
    for level in g.levels:
        for r in level.residuals:
            join = level.steps[r.join]
            inner = g.level(join.call) if join.call is not None else g.level(level.call, join.frame)
            if not r.adds and inner is not None and inner.residuals:
                continue  # the join call's own level has the add
            branches = tuple(tuple(level.steps[i].name for i in b.steps) for b in r.branches)
            found.append((t.calls[level.call].path, _skip_source(level, r.skip.id), branches))
    return found


def side_inputs(t: Trace, g: Graph, path: str) -> set[tuple[str, str]]:
    """(step, source) for every side input of the level of the call at `path`."""
    level = next(lv for lv in g.levels if t.calls[lv.call].path == path and lv.frame is None)
    return {(level.steps[s.step].name, s.source) for s in level.side_inputs}


def stream_formulas(t: Trace) -> list[str]:
    """The formulas' lines of the stream (and what leaves beside it), without the lines that say
    what a module or an op computes (`Linear(x) = x W^T (+ b)`, `SDPA(q, k, v) = ...`)."""
    return [line for line in formulas(StepTree(t)) if not re.match(r"[\w.<>]+\([\w, ]*\) = ", line)]


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 40, shape, generator=torch.Generator().manual_seed(seed))
