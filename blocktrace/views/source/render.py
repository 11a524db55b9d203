"""The annotated source as a view: text (fitted to a width), markdown, JSON and its picture."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from blocktrace.tracing.trace import Trace
from blocktrace.views.shapes import Shapes
from blocktrace.views.source.view import NOT_RUN, FunctionView, Line, SourceView, flow_text
from blocktrace.views.view import Page, Screen, text_picture

SCHEMA = "blocktrace.source"
SCHEMA_VERSION = 2
NOTE_MIN = 32  # columns an annotation keeps beside the code before it moves to its own line


# --- writing -------------------------------------------------------------------------------------


def display_path(file: str) -> str:
    """A file as a reader knows it: relative to the sys.path entry it is under (blocktrace/model.py),
    else to the working directory, else as given."""
    if not os.path.isabs(file):
        return file
    best = ""
    for entry in sys.path:
        base = os.path.abspath(entry or os.curdir).rstrip(os.sep) + os.sep
        if file.startswith(base) and len(base) > len(best):
            best = base
    if best:
        return file[len(best) :]
    cwd = os.getcwd().rstrip(os.sep) + os.sep
    return file[len(cwd) :] if file.startswith(cwd) else file


def note_text(line: Line, shapes: Shapes) -> str:
    """The annotation of a line, without the "# ": `(B, T, C) -> (B, T, H, D)`, or `call 1: ...;
    call 2: ...` where runs made different shapes; `not run` for a branch that did not."""
    if line.not_run:
        return NOT_RUN
    if len(line.annotations) == 1:
        return flow_text(line.annotations[0], shapes)
    return "; ".join(f"{_runs_text(a.runs)}: {flow_text(a, shapes)}" for a in line.annotations)


def _runs_text(runs: tuple[str, ...]) -> str:
    if len(runs) <= 3:
        return ", ".join(runs)
    return f"{runs[0]} … {runs[-1]} ({len(runs)} runs)"


def _calls_text(fn: FunctionView) -> str:
    times = "once" if fn.calls == 1 else "twice" if fn.calls == 2 else f"{fn.calls} times"
    where = _runs_text(fn.where) if len(fn.where) <= 3 else f"{fn.where[0]} … {fn.where[-1]}"
    return f"called {times}, in {where}"


def title(view: SourceView) -> str:
    from blocktrace.views.captions import SOURCES

    trace = view.trace
    dtype = f" ({trace.float_dtype})" if trace.float_dtype else ""
    n, ran = len(view.functions), max(view.ran, len(view.functions))
    functions = (
        f"{ran} function{'' if ran == 1 else 's'} ran" if n == ran else f"{n} of the {ran} functions that ran"
    )
    source = SOURCES.get(trace.device, trace.device)
    if ran == 0:
        return f"{trace.model}{dtype}: no source to show: {_why_none(view)}"
    return f"{trace.model}{dtype}: {functions}, each line with the shapes it made (shapes from {source})"


def _why_none(view: SourceView) -> str:
    if view.in_torch:
        n = view.in_torch
        return (
            f"the {n} function{'' if n == 1 else 's'} that ran {'is' if n == 1 else 'are all'} torch's own"
            " code, which the listing never shows"
        )
    return "no op or module call recorded the line of code that made it"


def function_title(fn: FunctionView) -> str:
    return f"{fn.name} · {display_path(fn.file)}:{fn.first_line} · {_calls_text(fn)}"


def text_report(view: SourceView, shapes: Shapes = Shapes.symbolic, width: int | None = None) -> str:
    """The listing: per function a title, then its numbered lines with the annotations in one column;
    an annotation that does not fit `width` continues on comment lines below it."""
    gutter = max((len(str(line.number)) for fn in view.functions for line in fn.lines), default=1)
    blocks: list[tuple[FunctionView, list[tuple[str, str]]]] = []
    for fn in view.functions:
        rows = []
        for line in fn.lines:
            note = note_text(line, shapes) if (line.annotations or line.not_run) else ""
            if fn.found:
                code = f"{line.number:>{gutter}} | {line.code}".rstrip()
            else:
                ops = ", ".join(fn.ops.get(line.number, ()))
                code = f"{line.number:>{gutter}} | {ops}"
            rows.append((code, note))
        blocks.append((fn, rows))
    noted = [len(code) for _, rows in blocks for code, note in rows if note]
    column = max(noted, default=0) + 2
    if width is not None:
        column = max(min(column, width - NOTE_MIN), gutter + 3)
    out = [title(view), ""]
    for fn, rows in blocks:
        out.append(function_title(fn))
        if not fn.found:
            out.append(_missing_text(fn, display_path(fn.file)))
        for code, note in rows:
            out += _with_note(code, note, column, width, gutter)
        out.append("")
    out += _legend(view.trace, shapes)
    return "\n".join(out).rstrip("\n") + "\n"


def _missing_text(fn: FunctionView, file: str) -> str:
    return f"(source not found in {file}: {fn.missing}; the ops it ran, by line)"


def _with_note(code: str, note: str, column: int, width: int | None, gutter: int) -> list[str]:
    if not note:
        return [code]
    room = None if width is None else max(width - column - 2, 8)
    parts = _wrap(note, room)
    blank = " " * gutter + " |"
    if len(code) + 2 <= column:
        first = [code.ljust(column) + "# " + parts[0]]
    else:
        first = [code, blank.ljust(column) + "# " + parts[0]]
    return first + [blank.ljust(column) + "# " + p for p in parts[1:]]


def _wrap(text: str, room: int | None) -> list[str]:
    """`text` in pieces of at most `room` columns, broken only after a `,` or `;` or before a `->`
    outside parentheses, so that a shape is never split; a piece longer than `room` stands alone."""
    if room is None or len(text) <= room:
        return [text]
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and ch in ",;":
            pieces.append(text[start : i + 1])
            start = i + 1
        elif depth == 0 and text.startswith(" -> ", i) and i > start:
            pieces.append(text[start:i])
            start = i
    pieces.append(text[start:])
    lines = [pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + len(piece) <= room:
            lines[-1] += piece
        else:
            lines.append(piece.lstrip())
    return lines


def _legend(trace: Trace, shapes: Shapes) -> list[str]:
    from blocktrace.views.captions import legend

    return legend(trace) if shapes != Shapes.concrete else []


def markdown_report(view: SourceView, shapes: Shapes = Shapes.symbolic) -> str:
    """A fenced python block per function, under a line naming it, its file, lines and calls; then
    the legend as a table."""
    parts = [f"**{title(view)}**", ""]
    for fn in view.functions:
        last = fn.lines[-1].number if fn.lines else fn.first_line
        parts.append(
            f"`{fn.name}` in `{display_path(fn.file)}`, lines {fn.first_line}–{last}, {_calls_text(fn)}"
        )
        parts.append("")
        rows = []
        for line in fn.lines:
            note = note_text(line, shapes) if (line.annotations or line.not_run) else ""
            code = (
                line.code.rstrip() if fn.found else f"# line {line.number}: {', '.join(fn.ops[line.number])}"
            )
            rows.append((code, note))
        column = max((len(code) for code, note in rows if note), default=0) + 2
        if not fn.found:
            parts.append(_missing_text(fn, f"`{display_path(fn.file)}`"))
            parts.append("")
        parts.append("```python")
        parts += [code.ljust(column) + "# " + note if note else code for code, note in rows]
        parts += ["```", ""]
    if shapes != Shapes.concrete and view.trace.symbols:
        parts += ["| symbol | value | meaning |", "| --- | --- | --- |"]
        parts += [f"| {n} | {v} | {view.trace.meanings.get(n, '')} |" for n, v in view.trace.symbols.items()]
    return "\n".join(parts).rstrip("\n") + "\n"


def to_dict(view: SourceView, shapes: Shapes = Shapes.symbolic) -> dict[str, Any]:
    trace = view.trace
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "model": trace.model,
        "device": trace.device,
        "symbols": dict(trace.symbols),
        "torch_functions": view.in_torch,
        "functions": [
            {
                "file": fn.file,
                "function": fn.name,
                "first_line": fn.first_line,
                "last_line": fn.lines[-1].number if fn.found and fn.lines else None,
                "calls": fn.calls,
                "in": list(fn.where),
                "source": fn.found,
            }
            for fn in view.functions
        ],
        "lines": [
            {
                "file": fn.file,
                "function": fn.name,
                "line": line.number,
                "shapes": [
                    {
                        "text": flow_text(a, shapes),
                        "from": [t.to_dict() for t in a.start],
                        "made": [
                            {"tensors": [t.to_dict() for t in s.tensors], "times": s.times} for s in a.stages
                        ],
                        "runs": list(a.runs),
                    }
                    for a in line.annotations
                ],
                "not_run": line.not_run,
            }
            for fn in view.functions
            for line in fn.lines
            if line.annotations or line.not_run
        ],
    }


_ASCII_TEXT = str.maketrans({"×": "x", "…": "...", "·": "-", "–": "-"})


@dataclass(frozen=True)
class SourceListing:
    """The source view as the source command shows it: plain, on a terminal too."""

    view: SourceView
    shapes: Shapes = Shapes.symbolic
    width: int | None = None  # --width; without it a terminal's width is fitted

    command = "source"
    formats = ("text", "markdown", "json")

    @property
    def title(self) -> str:
        return f"blocktrace source: {self.view.trace.model}"

    def render(self, fmt: str, page: Page) -> str:
        """In 7-bit stand-ins where the page cannot carry a character."""
        if fmt == "text":
            text = text_report(self.view, self.shapes, self.width if self.width is not None else page.columns)
        elif fmt == "markdown":
            text = markdown_report(self.view, self.shapes)
        elif fmt == "json":
            text = json.dumps(to_dict(self.view, self.shapes), indent=2) + "\n"
        else:
            raise ValueError(f"the source listing has no format {fmt!r}")
        return text if page.carries("×…·–") else text.translate(_ASCII_TEXT)

    def screen(self, page: Page) -> Screen | None:
        return None

    def picture(self) -> Screen:
        return text_picture(text_report(self.view, self.shapes, self.width))
