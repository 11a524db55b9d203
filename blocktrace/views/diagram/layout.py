"""A trace's steps -> Diagram: where boxes, lines, arrows and words go. Coordinates, not characters.

The stream runs down one column: the input, a box per step, a (+) per residual add, the output.
Each residual add gets a highway: it leaves the stream where its skip operand was made, runs down a
lane on the right, and comes back into the (+). Lanes are shared by highways that do not overlap.
Every shape written comes from the trace. No torch here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from blocktrace.tracing.trace import TensorMeta, Trace
from blocktrace.views.diagram.expression import expression, read_name
from blocktrace.views.shapes import Shapes, shape_text, shapes_text
from blocktrace.views.steps import Step, StepKind, StepTree, call_step, code_name

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


def _note_flow(step: Step) -> tuple[tuple[TensorMeta, ...], tuple[TensorMeta, ...]]:
    """What an inner step's note says it read and made: a helper what it took and returned, a
    module call every tensor it took and returned (its last view's value where views were folded
    into it), an op every tensor it took and, when its last op made several (split, chunk), all of
    them."""
    if step.kind == StepKind.helper and step.taken:
        return step.taken, step.returned or (step.output,)
    if step.kind == StepKind.call and step.call is not None:
        whole = not step.ops and step.call.outputs
        return step.call.inputs or step.inputs, step.call.outputs if whole else (step.output,)
    last = step.ops[-1].outputs if step.ops else ()
    return step.inputs, last if step.output in last else (step.output,)


def _scores(step: Step) -> TensorMeta | None:
    """The (B, H, Tq, Tk) attention-score shape an SDPA implies, from its traced q and k."""
    op = step.ops[-1] if step.kind == StepKind.compute and len(step.ops) == 1 else None
    if op is None or op.name != "scaled_dot_product_attention" or len(op.inputs) < 2:
        return None
    q, k = op.inputs[0], op.inputs[1]
    symbols = None if q.symbols is None or k.symbols is None else (*q.symbols[:-1], k.symbols[-2])
    return TensorMeta(-1, (*q.shape[:-1], k.shape[-2]), q.dtype, symbols)


def notes(tree: StepTree, step: Step, shapes: Shapes = Shapes.symbolic, room: int | None = None) -> list[str]:
    """The internals of a module call, one line per inner step: label, inputs -> output. A line
    longer than `room` wraps its shapes onto indented lines (see wrap_flow) rather than be cut."""
    if step.kind == StepKind.helper and step.calls:  # attention(x): the module calls it made
        inside = [call_step(c) for c in step.calls]
    elif step.kind != StepKind.call or step.call is None or tree.is_one_op(step.call):
        return []
    else:
        inside = tree.inner(step.call)
    entries: list[list] = []  # [label, times in a row, text]
    for inner in inside:
        read, made = _note_flow(inner)
        text = f"{shapes_text(read, shapes)} -> {shapes_text(made, shapes)}"
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
        width = None if room is None else room - LABEL_WIDTH  # under MIN_NOTE_WIDTH, cut: nothing would fit
        texts = wrap_flow(text, width) if width is not None and width >= MIN_NOTE_WIDTH else [text]
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


def box_lines(step: Step) -> list[str]:
    """What a box says: its title, and the name the code gives it when that differs."""
    name = code_name(step)
    return [step.title] if name == step.title else [step.title, name]


def left_out(tree: StepTree, shapes: Shapes = Shapes.symbolic) -> list[str]:
    """One line for each part of the graph the drawing does not show: a call beside the stream that
    holds residuals of its own (an encoder-decoder's encoder), a side output made from no stream
    value."""
    trace, graph = tree.trace, tree.graph
    read = {s.source for lv in graph.levels for s in lv.side_inputs}
    drawn = {part[0].call.index: part[0].output.id for part in tree.beside if part[0].call is not None}
    lines = []
    for index, count in graph.beside:
        if index in drawn:
            continue
        call = trace.calls[index]
        name = call.path.rsplit(".", 1)[-1]
        into = f"; what it returns is drawn where it is read, as {name}" if name in read else ""
        made = f"{shapes_text(call.inputs, shapes)} -> {shapes_text(call.outputs[:1], shapes)}"
        adds = f"{count} residual add{'' if count == 1 else 's'}"
        lines.append(f"not drawn: {call.path} ({call.type}, {made}, {adds}) runs beside the stream{into}")
    lines += _passed_on(tree, shapes)
    for k, (origin, names, value) in enumerate(tree.side_outputs(), 2):
        if origin is None and value.id not in drawn.values():
            by = f" by {', '.join(names)}" if names else ""
            lines.append(f"not drawn: output {k} {shape_text(value, shapes)}, made{by} from no stream value")
    return lines


def _passed_on(tree: StepTree, shapes: Shapes) -> list[str]:
    """A line for each value a layer returns beside its stream that other steps read (T5's position
    bias, made by the first block's attention and read by the later blocks'): drawn where it is
    read, but not where it leaves the layer that made it."""
    trace, graph = tree.trace, tree.graph
    readers: dict[int, list[str]] = {}
    for level in graph.levels:
        for side in level.side_inputs:
            readers.setdefault(side.value.id, []).append(side.source)
    lines, said = [], set()
    for level in sorted(graph.levels[1:], key=lambda lv: lv.call):  # in the order the calls began
        for value in level.side_outputs:
            if value.id in said or value.id not in readers:
                continue
            said.add(value.id)
            makers = [
                c for c in trace.calls if value.id in {t.id for t in c.outputs} - {t.id for t in c.inputs}
            ]
            maker = max(makers, key=lambda c: c.path.count("."), default=None)
            by = f", made by {maker.path} ({maker.type})" if maker is not None else ""
            names = ", ".join(dict.fromkeys(readers[value.id]))
            lines.append(
                f"not drawn: {shape_text(value, shapes)} leaves {trace.calls[level.call].path} beside its "
                f"stream{by}; drawn where it is read, as {names}"
            )
    return lines


def _columns(steps: Sequence[Step]) -> dict[int, int]:
    """Step position -> column, for the steps of a residual's second and later branches: drawn
    beside the first branch, each in a column of its own. A step on several branches (one norm
    feeding both) stays on the stream."""
    column: dict[int, int] = {}
    for r in (s.residual for s in steps if s.residual is not None):
        if len(r.branches) < 2:
            continue
        for i, step in enumerate(steps):
            if step.call is not None and step.kind == StepKind.call:
                on = [k for k, b in enumerate(r.branches) if step.call.index in b.calls]
            else:
                on = [
                    k
                    for k, b in enumerate(r.branches)
                    if step.ops and all(o.index in b.ops for o in step.ops)
                ]
            if len(on) == 1 and on[0] > 0:
                column[i] = on[0]
    return column


def edge_text(t: TensorMeta, shapes: Shapes) -> str:
    """An edge's label: its shape, then, with --stats, what its values were."""
    if t.stats is None:
        return shape_text(t, shapes)
    s = t.stats
    values = f"mean {s.mean:.3g} std {s.std:.3g} rms {s.rms:.3g} min {s.min:.3g} max {s.max:.3g}"
    return f"{shape_text(t, shapes)}  {values} zeros {s.zeros:.1%}"


def input_name(trace: Trace, t: TensorMeta) -> str:
    """Where a stream starts: "input" for the model's first input, another as its forward names it
    (`decoder_input_ids`), else "input 2", ..."""
    k = next((k for k, i in enumerate(trace.inputs) if i.id == t.id), 0)
    return "input" if k == 0 else trace.input_name(k)


def beside_end(tree: StepTree, section: Step, shapes: Shapes) -> str:
    """The line that ends a stream drawn beside the model's (an encoder's): what it made, and where
    that goes: out of the model, and into the steps below that read it."""
    out = section.output
    returned = [k for k, (_, _, v) in enumerate(tree.side_outputs(), 2) if v.id == out.id]
    read = {s.source for lv in tree.graph.levels for s in lv.side_inputs if s.value.id == out.id}
    where = [f"output {k}" for k in returned] + [f"read below as {name}" for name in sorted(read)]
    return f"{section.label} output {shape_text(out, shapes)}{': ' if where else ''}{', '.join(where)}"


def layout(tree: StepTree, shapes: Shapes = Shapes.symbolic, width: int | None = None) -> Diagram:
    trace = tree.trace
    # the streams beside the model's (an encoder's) come first, each ending in a line of its own
    restarts = {}  # position in steps -> the section of the stream beside that ends there
    steps: list[Step] = []
    for part in tree.beside:
        steps += part
        restarts[len(steps)] = part[0]
    steps += tree.stream
    column_of = _columns(steps)
    boxes = [s for s in steps if s.kind not in (StepKind.residual, StepKind.section)]
    box_w = max([MIN_BOX_WIDTH, *(len(line) + 4 for s in boxes for line in box_lines(s))])
    box_w += (box_w + 1) % 2  # odd, so the stream leaves from the middle
    x0 = 2
    # side columns for parallel branches: far enough apart that an edge's shape fits between lines
    widest_shape = max([len(edge_text(s.output, shapes)) for s in steps] + [0])
    pitch = max(box_w + 2, widest_shape + 4)
    columns = 1 + max(column_of.values(), default=0)
    col_x = [x0 + k * pitch for k in range(columns)]
    col_cx = [x + box_w // 2 for x in col_x]
    cx = col_cx[0]
    notes_x = col_x[-1] + box_w + 2
    diagram = Diagram()
    texts: list[Label] = []  # words right of the stream, cut to the width once the lanes are known

    y = 0
    main_in = tree.stream_input or tree.stream[0].inputs[0]
    stream_in = tree.beside[0][0].inputs[0] if tree.beside else main_in
    diagram.labels.append(Label(x0, y, f"input  {shape_text(stream_in, shapes)}", "terminal"))
    forks: dict[int, list[int]] = {}  # tensor id -> rows of the highway forks made from it
    side_forks: dict[int, int] = {}  # tensor id -> the row a side column leaves the stream from it
    merges: list[tuple[int, int]] = []  # (fork row, merge row) per highway
    stream_from, busy_until, last = y + 1, y, stream_in
    # per side column: the row its line continues from, and the tensor it carries (None: not started)
    side_from: dict[int, int] = {}
    side_last: dict[int, TensorMeta] = {}

    drawn_adds = [s.residual for s in steps if s.residual is not None]
    branching: dict[int, list[str]] = {}  # stream value id -> the side outputs drawn branching off it
    for k, (origin, names, value) in enumerate(tree.side_outputs(), 2):
        if origin is not None:
            made = f"{', '.join(names)} -> " if names else ""
            branching.setdefault(origin.id, []).append(f"{made}{shape_text(value, shapes)}, output {k}")
    side_sources = {steps[i].inputs[0].id for i in column_of if steps[i].inputs}

    def edge(out: TensorMeta, handed_on: bool = False) -> int:
        """The stream from the last node down to the next: past its notes, its shape, its forks, ▼.
        A value the next step hands back (eval-mode dropout) forks after that step, not here.
        Returns the row of its shape."""
        nonlocal y
        y = max(y + 1, busy_until + 1)
        label_row = y
        texts.append(Label(cx + 2, y, edge_text(out, shapes), "shape"))
        rows = []
        for r in drawn_adds:
            if r.stream.id == out.id and not handed_on:
                y += 1
                rows.append(y)
        if rows:  # an op that hands its input back (eval-mode dropout) carries it on: fork after it
            forks[out.id] = rows
        for text in branching.pop(out.id, []):  # a side output leaves the stream to the right
            y += 1
            diagram.segments.append(Segment(cx, y, cx + 2, y, "side"))
            diagram.arrows.append(Arrow(cx + 3, y, "right", "side"))
            texts.append(Label(cx + 5, y, text, "side"))
        if out.id in side_sources and not handed_on:
            if out.id not in forks:
                y += 1
            side_forks[out.id] = y
        y += 1
        diagram.segments.append(Segment(cx, stream_from, cx, y))
        diagram.arrows.append(Arrow(cx, y, "down"))
        return label_row

    def side_edge(k: int, step: Step) -> None:
        """A side column's line down to its next box, leaving the stream first if it is its first."""
        nonlocal y
        y = max(y + 1, busy_until + 1)
        if k not in side_from:
            fork = side_forks.get(step.inputs[0].id, stream_from)
            diagram.segments.append(Segment(cx, fork, col_cx[k], fork))
            side_from[k] = fork
        else:
            texts.append(Label(col_cx[k] + 2, y, edge_text(side_last[k], shapes), "shape"))
        y += 1
        diagram.segments.append(Segment(col_cx[k], side_from[k], col_cx[k], y))
        diagram.arrows.append(Arrow(col_cx[k], y, "down"))

    def box(step: Step, k: int) -> int:
        """The step's box in column k at row y, its notes beside the last column; its bottom row.
        What the step reads beside the stream comes in first: an arrow into the box's right side
        on a row of its own (the box grows to have one for each), or, where other columns lie
        between the box and its notes, a line saying what it reads."""
        nonlocal busy_until
        lines = box_lines(step)
        reads = [
            f"{read_name(tree, source, values)} {shapes_text(values, shapes)}"
            for source, values in tree.reads(step)
        ]
        arrows = k == columns - 1
        h = max(len(lines), len(reads) if arrows else 0) + 2
        diagram.rects.append(Rect(col_x[k], y, box_w, h))
        for i, line in enumerate(lines):
            style = "title" if i == 0 else "name"
            diagram.labels.append(Label(col_x[k] + (box_w - len(line)) // 2, y + 1 + i, line, style))
        side = notes(tree, step, shapes, None if width is None else width - 3 - notes_x)
        top = y
        if reads and arrows:
            right = col_x[k] + box_w
            for i, text in enumerate(reads):
                diagram.segments.append(Segment(right, y + 1 + i, right + 1, y + 1 + i, "side"))
                diagram.arrows.append(Arrow(right, y + 1 + i, "left", "side"))
                texts.append(Label(right + 3, y + 1 + i, text, "side"))
            top = y + 1 + len(reads)
        elif reads:
            side = [f"reads {text}" for text in reads] + side
        texts.extend(Label(notes_x, top + i, line, "note") for i, line in enumerate(side))
        busy_until = max(y + h - 1, top + len(side) - 1)
        return y + h - 1

    for i, step in enumerate(steps):
        if i in restarts:  # a stream beside ends, and the model's starts at its own input
            edge(last)
            diagram.labels.append(Label(x0, y + 1, beside_end(tree, restarts[i], shapes), "terminal"))
            y += 3
            start = f"{input_name(trace, main_in)}  {shape_text(main_in, shapes)}"
            diagram.labels.append(Label(x0, y, start, "terminal"))
            stream_from, busy_until, last = y + 1, y, main_in
        if step.kind == StepKind.section:
            y = max(y + 1, busy_until + 1)
            texts.append(Label(cx + 2, y, f"[{step.label}: {step.title}]", "section"))
            for source, values in tree.reads(step):  # what the opened call reads beside the stream
                y += 1
                name = read_name(tree, source, values)
                texts.append(Label(cx + 2, y, f" reads {name} {shapes_text(values, shapes)}", "side"))
            diagram.segments.append(Segment(cx, stream_from, cx, y))
            stream_from = busy_until = y
            continue
        if i in column_of:
            k = column_of[i]
            side_edge(k, step)
            y += 1
            y = side_from[k] = box(step, k)
            side_last[k] = step.output
            continue
        label_row = edge(last, step.kind != StepKind.residual and step.output.id == last.id)
        y += 1
        if step.kind == StepKind.residual:
            assert step.residual is not None
            r = step.residual
            for k in sorted(side_from):  # the side columns come back into the (+) from the right
                texts.append(Label(col_cx[k] + 2, label_row, edge_text(side_last[k], shapes), "shape"))
                diagram.segments.append(Segment(col_cx[k], side_from[k], col_cx[k], y))
                diagram.segments.append(Segment(cx + 3, y, col_cx[k], y))
                diagram.arrows.append(Arrow(cx + 2, y, "left"))
            side_from.clear()
            diagram.labels.append(Label(cx - 1, y, "(+)", "merge"))
            fork_rows = forks.get(r.stream.id, [])
            if fork_rows:
                merges.append((fork_rows.pop(0), y))
            texts.append(Label(cx + 2, y + 1, expression(tree, r), "expr"))
            stream_from, busy_until = y + 1, y + 1
        else:
            y = stream_from = box(step, 0)
        last = step.output
    edge(last)
    root = tree.graph.root if tree.graph.levels else None
    main = root.main_output if root is not None and root.segments else None
    out = main or (trace.outputs[0] if trace.outputs else last)
    end = f"output {shape_text(out, shapes)}" if trace.stopped is None else _stopped_in(trace)
    diagram.labels.append(Label(x0, y + 1, end, "terminal"))
    lost = [f"{text}, off a parallel branch" for left in branching.values() for text in left]
    lost += _unnamed(tree, [*diagram.labels, *texts], shapes)
    for k, text in enumerate(lost):
        diagram.labels.append(Label(x0, y + 2 + k, f"not drawn: {text}", "side"))

    _place_highways(diagram, texts, merges, cx, width)
    return diagram


def _unnamed(tree: StepTree, shown: Sequence[Label], shapes: Shapes) -> list[str]:
    """The module calls beside the stream that no word of the drawing names (a projection of a mask
    that an arrow names by the line's `keep`): never silently absent, each said in one line."""
    text = "\n".join(label.text for label in shown)
    calls = {s.call.index: s.call for s in tree.side.values() if s.kind == StepKind.call and s.call}
    return [
        f"{call.path} ({call.type}, {shapes_text(call.inputs, shapes)} -> "
        f"{shapes_text(call.outputs, shapes)}) ran beside the stream"
        for call in calls.values()
        if not re.search(rf"(?<![\w.]){re.escape(call.path.rsplit('.', 1)[-1])}(?![\w])", text)
    ]


def _stopped_in(trace: Trace) -> str:
    """Where a partial trace ends: the call that raised (the innermost that did not return)."""
    failed = max((c for c in trace.calls if not c.outputs), key=lambda c: c.index, default=None)
    where = "" if failed is None else f" in {failed.path or '<root>'} ({failed.type}), which did not return"
    return f"stopped{where}: the forward failed"


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
    right = max([cx + 4, diagram.width, *(t.x + len(t.text) for t in texts)])
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
