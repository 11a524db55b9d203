"""Trace -> Diagram: where boxes, lines, arrows and words go. Coordinates, not characters.

The stream runs down one column: the input, a box per step, a (+) per residual add, the output.
Each residual add gets a highway: it leaves the stream where its skip operand was made, runs down a
lane on the right, and comes back into the (+). Lanes are shared by highways that do not overlap.
Every shape written comes from the trace. No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from blocktrace.steps import Step, branch, inner_steps, stream_steps
from blocktrace.trace import TensorMeta, Trace

MIN_BOX_WIDTH = 11
LABEL_WIDTH = 20  # notes: step labels are padded to this, longer ones get a line of their own
MIN_NOTE_WIDTH = 16  # notes: shapes wrap in a narrow drawing only if this many columns are left


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int
    style: str = "box"


@dataclass(frozen=True)
class Segment:
    """A horizontal or vertical line from (x0, y0) to (x1, y1), both ends included."""

    x0: int
    y0: int
    x1: int
    y1: int
    style: str = "stream"


@dataclass(frozen=True)
class Arrow:
    x: int
    y: int
    direction: str  # "down", "left"
    style: str = "stream"


@dataclass(frozen=True)
class Label:
    x: int
    y: int
    text: str
    style: str = "text"


@dataclass
class Diagram:
    rects: list[Rect] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)

    @property
    def width(self) -> int:
        ends = [r.x + r.w for r in self.rects] + [max(s.x0, s.x1) + 1 for s in self.segments]
        ends += [a.x + 1 for a in self.arrows] + [label.x + len(label.text) for label in self.labels]
        return max(ends, default=0)

    @property
    def height(self) -> int:
        ends = [r.y + r.h for r in self.rects] + [max(s.y0, s.y1) + 1 for s in self.segments]
        ends += [a.y + 1 for a in self.arrows] + [label.y + 1 for label in self.labels]
        return max(ends, default=0)


def dims_text(shape: tuple[int, ...], symbols: tuple[str, ...] | None, shapes: str = "symbolic") -> str:
    """(B, T, C), (8, 1024, 768) or (B, T, C)=(8, 1024, 768); numbers where no name is known."""
    numbers = "(" + ", ".join(str(n) for n in shape) + ")"
    if shapes == "concrete" or symbols is None:
        return numbers
    names = "(" + ", ".join(symbols) + ")"
    return f"{names}={numbers}" if shapes == "both" and names != numbers else names


def shape_text(t: TensorMeta, shapes: str = "symbolic") -> str:
    return dims_text(t.shape, t.symbols, shapes)


def _shapes_text(ts: tuple[TensorMeta, ...], shapes: str) -> str:
    """Inputs as a list, a repeated shape written once with its count: (B, H, T, D), 2×(B, Hkv, T, D)."""
    texts = [shape_text(t, shapes) for t in ts]
    runs: list[tuple[str, int]] = []
    for text in texts:
        if runs and runs[-1][0] == text:
            runs[-1] = (text, runs[-1][1] + 1)
        else:
            runs.append((text, 1))
    return ", ".join(text if n == 1 else f"{n}×{text}" for text, n in runs)


def _note_inputs(step: Step) -> tuple[TensorMeta, ...]:
    # a module call or helper shows its data input; an op shows every tensor it took (q, k, v)
    return step.inputs if step.kind in ("compute", "shape") else step.inputs[:1]


def _scores(step: Step) -> TensorMeta | None:
    """The (B, H, Tq, Tk) attention-score shape an SDPA implies, from its traced q and k."""
    op = step.ops[-1] if step.kind == "compute" and len(step.ops) == 1 else None
    if op is None or op.name != "scaled_dot_product_attention" or len(op.inputs) < 2:
        return None
    q, k = op.inputs[0], op.inputs[1]
    symbols = None if q.symbols is None or k.symbols is None else (*q.symbols[:-1], k.symbols[-2])
    return TensorMeta(-1, (*q.shape[:-1], k.shape[-2]), q.dtype, symbols)


def notes(trace: Trace, step: Step, shapes: str = "symbolic", room: int | None = None) -> list[str]:
    """The internals of a module call, one line per inner step: label, inputs -> output. A line
    longer than `room` wraps its shapes onto indented lines (see wrap_flow) rather than be cut."""
    if step.kind != "call" or step.call is None:
        return []
    entries: list[list] = []  # [label, times in a row, text]
    for inner in inner_steps(trace, step.call):
        text = f"{_shapes_text(_note_inputs(inner), shapes)} -> {shape_text(inner.output, shapes)}"
        label = code_name(inner)
        if entries and entries[-1][0] == label and entries[-1][2] == text:
            entries[-1][1] += 1
        else:
            entries.append([label, 1, text])
        scores = _scores(inner)
        if scores is not None:
            causal = ", causal" if inner.ops[-1].attrs.get("is_causal") else ""
            entries.append(["", 1, f"scores {shape_text(scores, shapes)}{causal}"])
    lines: list[str] = []
    for name, times, text in entries:
        label = name if times == 1 else f"{name} ×{times}"
        wraps = room is not None and room - LABEL_WIDTH >= MIN_NOTE_WIDTH  # else cut: nothing would fit
        texts = wrap_flow(text, room - LABEL_WIDTH) if wraps else [text]
        if len(label) >= LABEL_WIDTH:
            lines.append(label)
        else:
            lines.append(f"{label:<{LABEL_WIDTH}}{texts.pop(0)}")
        lines += [" " * LABEL_WIDTH + t for t in texts]
    return lines


# where a shapes text may break: between two shapes ("(B, T, C), (1, T, ...") and before "->"
_FLOW_BREAK = re.compile(r"(?<=,) (?=\d*×?\()| (?=-> )")


def wrap_flow(text: str, width: int, indent: int = 2) -> list[str]:
    """`text` ("(B, T, Hkv, D) -> (B, Hkv, T, D)") in lines of at most `width`, broken only between
    shapes and before "->", never inside a shape; later lines indented by `indent`. A piece longer
    than `width` stays whole."""
    pieces = _FLOW_BREAK.split(text)
    lines = [pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + 1 + len(piece) <= width:
            lines[-1] += " " + piece
        else:
            lines.append(" " * indent + piece)
    return lines


def code_name(step: Step) -> str:
    """The step as the code names it: "attn", "c_q, view", a helper call as "norm()"."""
    return step.label + ("()" if step.kind == "helper" else "")


def box_lines(step: Step) -> list[str]:
    """What a box says: its title, and the name the code gives it when that differs."""
    name = code_name(step)
    return [step.title] if name == step.title else [step.title, name]


def expression(trace: Trace, step: Step) -> str:
    """x + attn(norm(x)): a residual add written as the code writes it, from its branch's steps."""
    assert step.residual is not None
    inner = "x"
    for name, _ in branch(trace, step.residual):
        inner = f"{name}({inner})"
    return f"x + {inner}"


def layout(
    trace: Trace, shapes: str = "symbolic", width: int | None = None, collapse: bool = True
) -> Diagram:
    steps = stream_steps(trace, collapse)
    boxes = [s for s in steps if s.kind not in ("residual", "section")]
    box_w = max([MIN_BOX_WIDTH, *(len(line) + 4 for s in boxes for line in box_lines(s))])
    box_w += (box_w + 1) % 2  # odd, so the stream leaves from the middle
    x0 = 2
    cx = x0 + box_w // 2
    notes_x = x0 + box_w + 2
    diagram = Diagram()
    texts: list[Label] = []  # words right of the stream, cut to the width once the lanes are known

    y = 0
    stream_in = trace.inputs[0] if trace.inputs else steps[0].inputs[0]
    diagram.labels.append(Label(x0, y, f"input  {shape_text(stream_in, shapes)}", "terminal"))
    forks: dict[int, list[int]] = {}  # tensor id -> rows of the forks made from it
    merges: list[tuple[int, int]] = []  # (fork row, merge row) per highway
    stream_from, busy_until, last = y + 1, y, stream_in

    drawn_adds = [s.residual for s in steps if s.residual is not None]

    def edge(out: TensorMeta) -> None:
        """The stream from the last node down to the next: past its notes, its shape, its forks, ▼."""
        nonlocal y
        y = max(y + 1, busy_until + 1)
        texts.append(Label(cx + 2, y, shape_text(out, shapes), "shape"))
        for r in drawn_adds:
            if r.stream.id == out.id:
                y += 1
                forks.setdefault(out.id, []).append(y)
        y += 1
        diagram.segments.append(Segment(cx, stream_from, cx, y))
        diagram.arrows.append(Arrow(cx, y, "down"))

    for step in steps:
        if step.kind == "section":
            y = max(y + 1, busy_until + 1)
            diagram.segments.append(Segment(cx, stream_from, cx, y))
            texts.append(Label(cx + 2, y, f"[{step.label}: {step.title}]", "section"))
            stream_from = busy_until = y
            continue
        edge(last)
        y += 1
        if step.kind == "residual":
            assert step.residual is not None
            r = step.residual
            diagram.labels.append(Label(cx - 1, y, "(+)", "merge"))
            fork_rows = forks.get(r.stream.id, [])
            if fork_rows:
                merges.append((fork_rows.pop(0), y))
            texts.append(Label(cx + 2, y + 1, expression(trace, step), "expr"))
            stream_from, busy_until = y + 1, y + 1
        else:
            lines = box_lines(step)
            h = len(lines) + 2
            diagram.rects.append(Rect(x0, y, box_w, h))
            for i, line in enumerate(lines):
                style = "title" if i == 0 else "name"
                diagram.labels.append(Label(x0 + (box_w - len(line)) // 2, y + 1 + i, line, style))
            side = notes(trace, step, shapes, None if width is None else width - 3 - notes_x)
            texts += [Label(notes_x, y + i, line, "note") for i, line in enumerate(side)]
            stream_from = y + h - 1
            busy_until = max(y + h - 1, y + len(side) - 1)
            y = y + h - 1
        last = step.output
    edge(last)
    out = trace.outputs[0] if trace.outputs else last
    diagram.labels.append(Label(x0, y + 1, f"output {shape_text(out, shapes)}", "terminal"))

    _place_highways(diagram, texts, merges, cx, width)
    return diagram


def _place_highways(
    diagram: Diagram, texts: list[Label], spans: list[tuple[int, int]], cx: int, width: int | None
) -> None:
    """Give each highway a lane right of every word, cutting words to `width` if one is given."""
    lanes: list[list[tuple[int, int]]] = []
    lane_of: list[int] = []
    for top, bottom in spans:
        for i, used in enumerate(lanes):
            if all(bottom <= t or top >= b for t, b in used):
                used.append((top, bottom))
                lane_of.append(i)
                break
        else:
            lanes.append([(top, bottom)])
            lane_of.append(len(lanes) - 1)
    right = max([cx + 4, *(t.x + len(t.text) for t in texts)])
    if width is not None:
        limit = width - 3 - 2 * max(len(lanes) - 1, 0) if lanes else width
        # never left of what is not cut (the boxes, the input and output lines): the lanes would run
        # through them; the drawing is then wider than asked, which the caller can tell
        floor = max(
            [cx + 4, *(r.x + r.w for r in diagram.rects), *(t.x + len(t.text) for t in diagram.labels)]
        )
        right = min(right, max(limit, floor))
        texts = [cut for t in texts if (cut := _cut(t, right)) is not None]
    diagram.labels.extend(texts)
    first_lane = right + 2
    for (top, bottom), lane in zip(spans, lane_of, strict=True):
        x = first_lane + 2 * lane
        diagram.segments.append(Segment(cx, top, x, top, "highway"))
        diagram.segments.append(Segment(x, top, x, bottom, "highway"))
        diagram.segments.append(Segment(cx + 3, bottom, x, bottom, "highway"))
        diagram.arrows.append(Arrow(cx + 2, bottom, "left", "highway"))


def _cut(label: Label, right: int) -> Label | None:
    """The label cut to end before column `right`, marked with "…"; None if not even that fits."""
    room = right - label.x
    if len(label.text) <= room:
        return label
    if room < 1:
        return None
    return Label(label.x, label.y, label.text[: room - 1] + "…", label.style)
