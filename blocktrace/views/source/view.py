"""Trace -> the model's code, each line annotated with the shapes traced on it (`blocktrace source`).

Every function that ran (each module's forward and the helpers it calls) is printed once, in the order
the functions were first called, with its run count. No torch here: the view is built from the trace
(each op's and each module call's file, function and line) and the source files, read as text.

What a line lists: the tensors it *left*. Those are the outputs of the ops recorded at it and of the
module calls made from it, less the ones another op or call on the same line took (in the same run of
the function: `self.c_q(x).view(...)` lists the view's output, not c_q's), less an op's output that is
its input handed back unchanged (`contiguous()`, `x.float()` on a float); each value once, in the
order they were made. A statement over several lines is annotated on its last line. Where runs of the
function left different shapes on a line, each is listed with the runs it came from.

A branch is marked "not run" only where that is proven: an `if` (not inside a loop) whose other branch
recorded something in every run of the function ran that other branch, so not this one.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import linecache
import os
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from blocktrace.errors import ConfigError
from blocktrace.tracing.trace import TensorMeta, Trace
from blocktrace.views.shapes import Shapes, shapes_text

NOT_RUN = "not run"


@dataclass(frozen=True)
class _Event:
    """One op, or one module call, at a line of one run of a function."""

    time: int
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    name: str  # the op's name, or the called module's path


@dataclass
class _Run:
    frame: int
    call: int | None  # the module call the run was made in
    events: dict[int, list[_Event]] = field(default_factory=dict)  # line -> events at it


@dataclass
class _Function:
    file: str
    first_line: int
    name: str  # co_name
    runs: dict[int, _Run] = field(default_factory=dict)  # frame -> run, in the order they began


@dataclass(frozen=True)
class Annotation:
    """What one line left, in the runs listed (their labels: a module path, or "call 2")."""

    tensors: tuple[TensorMeta, ...]
    runs: tuple[str, ...]


@dataclass(frozen=True)
class Line:
    number: int
    code: str
    annotations: tuple[Annotation, ...] = ()
    not_run: bool = False  # the first line of a branch that provably did not run


@dataclass(frozen=True)
class FunctionView:
    file: str
    name: str  # qualified where the source is known: "CausalSelfAttention.forward"
    first_line: int
    calls: int
    where: tuple[str, ...]  # module paths of the calls it ran in, in order, each once
    lines: tuple[Line, ...]  # the source, annotated; for a fallback, the annotated lines only
    found: bool  # whether the source was found; if not, `lines` lists the ops by line
    ops: dict[int, tuple[str, ...]] = field(default_factory=dict)  # fallback: line -> op names


@dataclass(frozen=True)
class SourceView:
    trace: Trace
    functions: tuple[FunctionView, ...]  # those shown
    ran: int = 0  # how many functions ran, shown or not


# --- from the trace ----------------------------------------------------------------------------


def _functions(trace: Trace) -> list[_Function]:
    """The functions that ran, outside torch, in the order they were first called."""
    found: dict[tuple[str, int], _Function] = {}
    runs: dict[int, _Run] = {}  # frame -> its run

    def run_of(file: str, first_line: int, name: str, frame: int) -> _Run:
        fn = found.setdefault((file, first_line), _Function(file, first_line, name))
        if frame not in runs:
            runs[frame] = fn.runs[frame] = _Run(frame, None)
        return runs[frame]

    for f in trace.frames:
        run_of(f.file, f.first_line, f.function, f.frame)
    for op in trace.ops:
        if op.file and op.line:
            run = run_of(op.file, op.first_line, op.function, op.frame)
            run.call = op.call
            run.events.setdefault(op.line, []).append(_Event(op.time, op.inputs, op.outputs, op.name))
    for c in trace.calls:
        s = c.site
        if s is not None and s.line:
            run = run_of(s.file, s.first_line, s.function, s.frame)
            run.call = c.parent
            run.events.setdefault(s.line, []).append(_Event(c.end, c.inputs, c.outputs, c.path))
    # a helper's call is an event at its caller's line: it took what the helper took from outside and
    # made what the helper left. Callers are numbered before their callees, so callees go first
    for f in sorted(trace.frames, key=lambda f: -f.frame):
        if f.caller is None or f.caller not in runs:
            continue
        callee, caller = runs[f.frame], runs[f.caller]
        events = [e for line_events in callee.events.values() for e in line_events]
        made = {t.id for e in events for t in e.outputs}
        taken = tuple(dict.fromkeys(t for e in events for t in e.inputs if t.id not in made))
        time = max((e.time for e in events), default=0)
        caller.events.setdefault(f.line, []).append(_Event(time, taken, tuple(_left(events)), f.function))
        if caller.call is None:
            caller.call = callee.call
    for f in trace.frames:  # a helper with no op of its own ran in its caller's module call
        if f.caller is not None and f.caller in runs and runs[f.frame].call is None:
            runs[f.frame].call = runs[f.caller].call
    # a function that made no op and called no module itself only passed its call on (a decorator's
    # wrapper): its callee is listed, not it
    acting = {op.frame for op in trace.ops if op.file and op.line}
    acting |= {c.site.frame for c in trace.calls if c.site is not None and c.site.line}
    kept = [fn for fn in found.values() if not is_torch_file(fn.file) and fn.runs and acting & set(fn.runs)]
    for fn in kept:
        fn.runs = dict(sorted(fn.runs.items()))
    return sorted(kept, key=lambda fn: min(fn.runs))


def _left(events: list[_Event]) -> list[TensorMeta]:
    """What events left: the values they made that none of them took, less any an event handed
    back unchanged; each once, in the order they were made."""
    taken = {t.id for e in events for t in e.inputs}
    left: dict[int, TensorMeta] = {}
    for e in sorted(events, key=lambda e: e.time):
        for t in e.outputs:  # an output that is its op's input handed back was taken: by that op
            if t.id not in taken and t.id not in left:
                left[t.id] = t
    return list(left.values())


@functools.cache
def _torch_dir() -> str | None:
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.realpath(next(iter(spec.submodule_search_locations))) + os.sep


def is_torch_file(file: str) -> bool:
    """Whether `file` is torch's own code: never printed (its calls are annotated where they were made)."""
    torch_dir = _torch_dir()
    if torch_dir is None or not os.path.isabs(file):
        return False
    return os.path.realpath(file).startswith(torch_dir)


# --- the source ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Def:
    qualname: str
    node: ast.FunctionDef | ast.AsyncFunctionDef


@functools.cache
def _defs(file: str) -> tuple[tuple[str, ...], dict[int, _Def]] | None:
    """The file's lines and its functions by the line their code starts at (co_firstlineno: the
    first decorator's line, or the def's); None where the file cannot be read or parsed."""
    lines = linecache.getlines(file)
    if not lines:
        return None
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError):
        return None
    defs: dict[int, _Def] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                defs[first] = _Def(prefix + child.name, child)
                visit(child, f"{prefix}{child.name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return tuple(line.rstrip("\r\n") for line in lines), defs


def _statement_ends(node: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[int, int]:
    """line -> the line to annotate it on: the last line of the statement it is part of (of a
    compound statement's header, for the lines of its `if`, `for` or `with` clause)."""
    ends: dict[int, int] = {}

    def visit(stmts: list[ast.stmt]) -> None:
        for s in stmts:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue  # its own code object: its lines are never this function's
            bodies = [getattr(s, name, None) or [] for name in ("body", "orelse", "finalbody")]
            bodies += [h.body for h in getattr(s, "handlers", [])]
            bodies += [c.body for c in getattr(s, "cases", [])]
            if any(bodies):
                # the header's expressions (a with's items and a match's cases carry no lines)
                header = [child for child in ast.iter_child_nodes(s) if isinstance(child, ast.expr)]
                last = max([s.lineno, *(c.end_lineno or c.lineno for c in header)])
                for line in range(s.lineno, last + 1):
                    ends[line] = last
                for body in bodies:
                    visit(body)
            else:
                for line in range(s.lineno, (s.end_lineno or s.lineno) + 1):
                    ends[line] = s.end_lineno or s.lineno

    visit(node.body)
    return ends


def _not_run(
    node: ast.FunctionDef | ast.AsyncFunctionDef, lines: tuple[str, ...], runs: list[dict[int, Any]]
) -> set[int]:
    """The first lines of the branches that provably did not run: an `if` outside loops of which
    another branch recorded something in every run. `runs`: per run, the lines that recorded."""
    marked: set[int] = set()

    def recorded(body: list[ast.stmt], run: dict[int, Any]) -> bool:
        first, last = body[0].lineno, body[-1].end_lineno or body[-1].lineno
        return any(first <= line <= last for line in run)

    def visit(stmts: list[ast.stmt], in_loop: bool) -> None:
        for s in stmts:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            loop = in_loop or isinstance(s, (ast.For, ast.AsyncFor, ast.While))
            if isinstance(s, ast.If) and not in_loop and s.orelse:
                for branch, other in ((s.body, s.orelse), (s.orelse, s.body)):
                    if runs and all(recorded(other, run) for run in runs):
                        marked.add(_branch_start(s, branch, lines))
            for name in ("body", "orelse", "finalbody"):
                visit(getattr(s, name, None) or [], loop)
            for h in getattr(s, "handlers", []):
                visit(h.body, loop)

    visit(node.body, False)
    return marked


def _branch_start(s: ast.If, branch: list[ast.stmt], lines: tuple[str, ...]) -> int:
    """The line a branch begins at: its body's first line (the `if` line's test did run), or the
    `elif` or `else:` line."""
    if branch is s.body:
        return branch[0].lineno
    first = branch[0].lineno
    if isinstance(branch[0], ast.If) and lines[first - 1].lstrip().startswith("elif"):
        return first
    for line in range((s.body[-1].end_lineno or first) + 1, first + 1):
        if lines[line - 1].lstrip().startswith("else"):
            return line
    return first


# --- the view ------------------------------------------------------------------------------------


def source_view(trace: Trace, shapes: Shapes = Shapes.symbolic, only: tuple[str, ...] = ()) -> SourceView:
    """The annotated source of every function that ran in `trace`; with `only`, of those whose
    qualified name matches one of its glob patterns (ConfigError for a pattern that matches none)."""
    views = _views(trace, shapes)
    for pattern in only:
        if not any(fnmatchcase(v.name, pattern) for v in views):
            examples = ", ".join(v.name for v in views[:3])
            raise ConfigError(f"--function {pattern!r} matches no function that ran (e.g. {examples})")
    shown = [v for v in views if any(fnmatchcase(v.name, p) for p in only)] if only else views
    return SourceView(trace, tuple(shown), len(views))


def _views(trace: Trace, shapes: Shapes) -> list[FunctionView]:
    views = []
    for fn in _functions(trace):
        runs = list(fn.runs.values())
        labels = _labels(trace, runs)
        where = tuple(dict.fromkeys(_path(trace, r.call) for r in runs))
        parsed = _defs(fn.file)
        found = parsed is not None and fn.first_line in parsed[1]
        if parsed is None or not found:
            views.append(_fallback(fn, runs, labels, where, shapes))
            continue
        lines, defs = parsed
        d = defs[fn.first_line]
        ends = _statement_ends(d.node)
        by_line: list[dict[int, list[_Event]]] = []
        for run in runs:
            mapped: dict[int, list[_Event]] = {}
            for line, events in run.events.items():
                mapped.setdefault(ends.get(line, line), []).extend(events)
            by_line.append(mapped)
        not_run = _not_run(d.node, lines, by_line)
        last = d.node.end_lineno or d.node.lineno
        rows = []
        for number in range(fn.first_line, last + 1):
            notes = _annotations([m.get(number, []) for m in by_line], labels, shapes)
            rows.append(Line(number, lines[number - 1], notes, number in not_run))
        views.append(FunctionView(fn.file, d.qualname, fn.first_line, len(runs), where, tuple(rows), True))
    return views


def _fallback(
    fn: _Function, runs: list[_Run], labels: list[str], where: tuple[str, ...], shapes: Shapes
) -> FunctionView:
    numbers = sorted({line for r in runs for line in r.events})
    rows = []
    ops: dict[int, tuple[str, ...]] = {}
    for number in numbers:
        notes = _annotations([r.events.get(number, []) for r in runs], labels, shapes)
        names = [e.name for r in runs for e in sorted(r.events.get(number, []), key=lambda e: e.time)]
        ops[number] = tuple(dict.fromkeys(names))
        rows.append(Line(number, "", notes))
    return FunctionView(fn.file, fn.name, fn.first_line, len(runs), where, tuple(rows), False, ops)


def _annotations(per_run: list[list[_Event]], labels: list[str], shapes: Shapes) -> tuple[Annotation, ...]:
    """Each distinct list of shapes the line left, with the runs that left it; runs that left
    nothing there (the line did not run in them, or made nothing) are not listed."""
    groups: dict[str, tuple[list[TensorMeta], list[str]]] = {}
    for events, label in zip(per_run, labels, strict=True):
        left = _left(events) if events else []
        if left:
            groups.setdefault(shapes_text(tuple(left), shapes), (left, []))[1].append(label)
    return tuple(Annotation(tuple(ts), tuple(runs)) for ts, runs in groups.values())


def _path(trace: Trace, call: int | None) -> str:
    if call is None:
        return trace.model
    return trace.calls[call].path or trace.calls[call].type


def _labels(trace: Trace, runs: list[_Run]) -> list[str]:
    """What names each run: the path of the module call it ran in where each ran in another one,
    else its place among the function's runs ("call 2")."""
    paths = [_path(trace, r.call) for r in runs]
    if len(set(paths)) == len(paths):
        return paths
    return [f"call {i}" for i in range(1, len(runs) + 1)]
