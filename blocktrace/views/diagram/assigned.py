"""The names a line of the model's code gives the values it makes: `q, k, v = ...`, read from the
source file the trace names, each file parsed once. No torch here."""

from __future__ import annotations

import ast
import functools
import linecache


@functools.cache
def _tuple_assignments(file: str) -> dict[int, tuple[str, ...]]:
    """Line -> the names of `a, b, c = ...` for every line of such a statement in the file; nothing
    where the file cannot be read or parsed."""
    try:
        tree = ast.parse("".join(linecache.getlines(file)))
    except (SyntaxError, ValueError):
        return {}
    found: dict[int, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name) for e in target.elts):
            names = tuple(e.id for e in target.elts if isinstance(e, ast.Name))
            found.update((line, names) for line in range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return found


def assigned_names(file: str, line: int, count: int) -> tuple[str, ...] | None:
    """The `count` names the statement at `file:line` unpacks its value into, or None where it is no
    such statement (or the file is gone, or changed since)."""
    names = _tuple_assignments(file).get(line)
    return names if names is not None and len(names) == count and len(set(names)) == count else None
