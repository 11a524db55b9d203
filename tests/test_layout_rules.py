"""The package's layout, held: data flows one way (cli -> pipeline -> models, sizes, tracing; views
read the trace; output reaches a view only through views/view.py), nothing imports cli, and no
module imports itself round a cycle. Imports are read from the source (ast), lazy ones inside
functions included; those under `if TYPE_CHECKING:` are for the type checker only and left out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "blocktrace"
PROTOCOL = "blocktrace.views.view"

# a stage -> the stages it may import (itself included); pipeline, cache and api (which the CLI
# calls) may import all but cli
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "progress": set(),  # the stage a run is in: set by the pipeline, shown by the CLI
    "tracing": {"errors", "tracing", "progress"},  # progress: the layer a deep trace is in
    "sizes": {"errors", "tracing", "sizes"},
    "models": {"errors", "tracing", "sizes", "models", "progress"},  # progress: asking the Hub is a stage
    "views": {"errors", "tracing", "views"},
    "output": {"errors", "output", "views", "progress"},  # views: the protocol only (see test below);
    # progress: the line is wiped before stdout is written
    "docs": {"errors", "output", "docs"},  # pages and their markers; the commands are the CLI's
    "pipeline": {"errors", "tracing", "sizes", "models", "views", "output", "cache", "pipeline", "progress"},
    "cache": {"errors", "tracing", "sizes", "models", "views", "output", "cache", "pipeline"},
    "api": {
        "errors",
        "tracing",
        "sizes",
        "models",
        "views",
        "output",
        "cache",
        "pipeline",
        "progress",
        "api",
    },
}


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own: blocktrace.views)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, name: str, is_package: bool) -> list[str]:
    """The dotted names `tree` imports (`from a import b` as a.b, resolved to a module below)."""
    out: list[str] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([base] if base else [])])
            out += [f"{base}.{alias.name}" for alias in node.names] or [base]
        stack.extend(ast.iter_child_nodes(node))
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for dotted in _imported(ast.parse(path.read_text(encoding="utf-8")), name, path.stem == "__init__"):
            while dotted and dotted not in modules:  # `from a import f`: f is a name in module a
                dotted = dotted.rpartition(".")[0]
            if dotted.startswith("blocktrace") and dotted != name:
                targets.add(dotted)
        graph[name] = targets
    return graph


def stage(module: str) -> str:
    """blocktrace.views.diagram.layout -> views; blocktrace/model.py is the built-in model's."""
    parts = module.split(".")
    if module == "blocktrace.model":
        return "models"
    return parts[1] if len(parts) > 1 else "blocktrace"


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules round it, or None (a depth-first search)."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    return next((found for start in sorted(graph) if (found := visit(start, []))), None)


def broken_rules(graph: dict[str, set[str]]) -> list[str]:
    """Every import the layout forbids, as "importer -> imported: why"."""
    broken = []
    for module, targets in sorted(graph.items()):
        here = stage(module)
        for target in sorted(targets):
            there = stage(target)
            if there == "cli" and here != "cli" and module != "blocktrace.__main__":
                broken.append(f"{module} -> {target}: nothing imports cli")
            elif here in ALLOWED and there not in ALLOWED[here] | {here}:
                broken.append(f"{module} -> {target}: {here} may import only {sorted(ALLOWED[here])}")
            elif here == "output" and there == "views" and target != PROTOCOL:
                broken.append(f"{module} -> {target}: output reaches views only through {PROTOCOL}")
    return broken


GRAPH = import_graph(module_names())


def test_the_graph_sees_the_package() -> None:
    assert {"blocktrace.cli.commands", "blocktrace.views.view", "blocktrace.output.writers"} <= set(GRAPH)
    assert "blocktrace.output.sink" in GRAPH["blocktrace.output.writers"]
    assert PROTOCOL in GRAPH["blocktrace.output.writers"]
    assert "blocktrace.views.view" in GRAPH["blocktrace.views.diagram.report"]
    assert "blocktrace.model" in GRAPH["blocktrace.models.block.spec"]  # a lazy import, inside a function
    assert "blocktrace.api" in GRAPH["blocktrace.cli.commands"]


def test_no_import_cycle() -> None:
    assert cycle(GRAPH) is None, " -> ".join(cycle(GRAPH) or [])


def test_each_stage_imports_only_the_stages_below_it() -> None:
    assert broken_rules(GRAPH) == []


# --- the rules can fail ---------------------------------------------------------------------------


def _with(module: str, target: str) -> dict[str, set[str]]:
    return {**GRAPH, module: GRAPH.get(module, set()) | {target}}


def test_a_cycle_is_found() -> None:
    assert cycle(_with("blocktrace.errors", "blocktrace.cli.app")) is not None
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None


@pytest.mark.parametrize(
    ("module", "target", "why"),
    [
        ("blocktrace.errors", "blocktrace.tracing.trace", "errors may import only []"),
        ("blocktrace.tracing.tracer", "blocktrace.sizes.symbols", "tracing may import only"),
        ("blocktrace.sizes.fit", "blocktrace.models.spec", "sizes may import only"),
        ("blocktrace.models.hf", "blocktrace.views.steps", "models may import only"),
        ("blocktrace.views.steps", "blocktrace.output.sink", "views may import only"),
        ("blocktrace.views.stats", "blocktrace.sizes.symbols", "views may import only"),
        ("blocktrace.output.writers", "blocktrace.views.diagram.report", "only through"),
        ("blocktrace.output.sink", "blocktrace.tracing.trace", "output may import only"),
        ("blocktrace.pipeline", "blocktrace.cli.options", "nothing imports cli"),
        ("blocktrace.cache", "blocktrace.cli.app", "nothing imports cli"),
        ("blocktrace.api.live", "blocktrace.cli.options", "nothing imports cli"),
        ("blocktrace.views.steps", "blocktrace.api", "views may import only"),
        ("blocktrace.docs.pages", "blocktrace.pipeline", "docs may import only"),
    ],
)
def test_a_broken_rule_is_named(module: str, target: str, why: str) -> None:
    broken = broken_rules(_with(module, target))
    assert len(broken) == 1 and broken[0].startswith(f"{module} -> {target}: ") and why in broken[0], broken


def test_imports_are_read_as_python_runs_them(tmp_path: Path) -> None:
    package = tmp_path / "blocktrace"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import a\n")
    (package / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from blocktrace.sub.b import name\n"
        "if TYPE_CHECKING:\n    from blocktrace import c\nelse:\n    import blocktrace.d\n"
        "def f():\n    from .e import g\n"
    )
    for name in ("b", "e"):
        (package / "sub" / f"{name}.py").write_text("")
    for name in ("c", "d"):
        (package / f"{name}.py").write_text("")
    graph = import_graph(module_names(package))
    assert graph["blocktrace.sub"] == {"blocktrace.sub.a"}
    assert graph["blocktrace.sub.a"] == {"blocktrace.sub.b", "blocktrace.d", "blocktrace.sub.e"}


def test_the_cli_is_small_files_that_declare_each_flag_once() -> None:
    """A flag several commands take (--format, --width, --stats, ...) is declared once, in
    cli/options.py, each command adding its own words; no file of cli/ reaches 500 lines."""
    sources = {path.name: path.read_text(encoding="utf-8") for path in (ROOT / "cli").glob("*.py")}
    assert all(text.count("\n") < 500 for text in sources.values()), {
        n: t.count("\n") for n, t in sources.items()
    }
    declared = [m for text in sources.values() for m in re.findall(r'typer\.Option\(\s*"(--[\w-]+)', text)]
    assert sorted(flag for flag in set(declared) if declared.count(flag) > 1) == []
    assert {"--format", "--width", "--stats"} <= set(declared)
