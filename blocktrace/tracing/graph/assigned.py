"""The names a line of the model's code gives the values it makes, `q, k, v = ...` or
`position_ids = ...`, read from the source file the trace names, each file parsed once; and which
values of a trace are what their line leaves. No torch here."""

from __future__ import annotations

import ast
import functools
import linecache
from collections.abc import Mapping

from blocktrace.tracing.trace import Trace


@functools.cache
def _assignments(file: str) -> dict[int, tuple[str, ...]]:
    """Line -> the names of `a, b, c = ...` (or the one of `a = ...`) for every line of such a
    statement in the file; nothing where the file cannot be read or parsed."""
    try:
        tree = ast.parse("".join(linecache.getlines(file)))
    except (SyntaxError, ValueError):
        return {}
    found: dict[int, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        elements = target.elts if isinstance(target, ast.Tuple) else [target]
        if all(isinstance(e, ast.Name) for e in elements):
            names = tuple(e.id for e in elements if isinstance(e, ast.Name))
            found.update((line, names) for line in range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return found


@functools.cache
def _statements(file: str) -> dict[int, int]:
    """Line -> the first line of the simple statement (an assignment, a return, an expression) that
    holds it, for every line of such a statement in the file; nothing where it cannot be parsed."""
    try:
        tree = ast.parse("".join(linecache.getlines(file)))
    except (SyntaxError, ValueError):
        return {}
    simple = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return)
    found: dict[int, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, simple):
            found.update(
                (line, node.lineno) for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
            )
    return found


def one_statement(file: str, line: int, other: int) -> bool:
    """Whether two lines of `file` are of one statement: `self.attn(self.attn_norm(h), ...)` over
    several lines."""
    found = _statements(file)
    return line == other or (line in found and found[line] == found.get(other))


def assigned_names(file: str, line: int, count: int) -> tuple[str, ...] | None:
    """The `count` names the statement at `file:line` unpacks its value into, or None where it is no
    such statement (or the file is gone, or changed since)."""
    names = _assignments(file).get(line)
    return names if names is not None and len(names) == count and len(set(names)) == count else None


def line_parts(trace: Trace, op_of: Mapping[int, int]) -> set[int]:
    """Ids of the values that an op or a module call of the line that made them reads: parts of
    what the line computes (`mask.unsqueeze(1)` in `h = self.attn(x, mask.unsqueeze(1))`), not what
    it assigns. `op_of`: tensor id -> the op that made it."""
    made = {tid: (trace.ops[i].frame, trace.ops[i].line) for tid, i in op_of.items()}
    readers = [((op.frame, op.line), op.inputs) for op in trace.ops]
    readers += [((c.site.frame, c.site.line), c.inputs) for c in trace.calls if c.site is not None]
    return {t.id for line, read in readers for t in read if made.get(t.id) == line}
