"""The grad view written out. The text gives each layer's two norms, each with a bar: linear, the
largest of its column full width, so that a gradient that vanishes toward the input is seen to.
No torch here: it reads a GradRecord (tracing/grad_record.py)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass

from blocktrace.tracing.grad_record import LOSS, GradRecord
from blocktrace.views.view import Page, Screen, text_picture

BAR = 24  # the columns of a full bar
EIGHTHS = " ▏▎▍▌▋▊▉█"  # a bar's last cell in eighths of one
ASCII = str.maketrans({"‖": "|", "×": "x", "·": "*"})  # the text's other characters, in 7 bits


def bar(value: float, largest: float, unicode: bool = True) -> str:
    """`value` as a bar of BAR columns at `largest`: in eighths of a cell, or '#' cells in ASCII."""
    share = value / largest if largest > 0 else 0.0
    if not unicode:
        return "#" * round(share * BAR)
    eighths = round(share * BAR * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[part] if part else "")


def number(value: float) -> str:
    return f"{value:.3g}"


def ratio(first: float, last: float) -> str:
    """How many times the first layer's norm is the last's."""
    return "n/a" if last == 0 else f"{first / last:.3g}×"


def headline(record: GradRecord) -> str:
    config = record.config
    layers = len(record.layers)
    kind = record.layers[0].kind
    stack = f"{kind} × {layers}" if layers > 1 else kind
    return (
        f"{stack} ({record.dtype}, {record.device}, seed {record.seed}, init {record.init}): "
        f"the gradient at init, --residual {config.get('residual')}"
    )


def sizes_line(record: GradRecord) -> str:
    config = record.config
    names = ("batch", "seq", "n_embd", "n_head", "n_kv_head", "n_layer", "preset")
    return ", ".join(f"{name} {config[name]}" for name in names if name in config)


def to_text(record: GradRecord, unicode: bool = True) -> str:
    stream = [row.stream_norm for row in record.layers] + [record.output_norm]
    params = [row.param_norm for row in record.layers]
    top_stream, top_params = max(stream), max(params, default=0.0)
    kind = max(len(row.kind) for row in record.layers)
    lines = [
        headline(record),
        sizes_line(record),
        f"loss: {LOSS} = {number(record.loss)}",
        "",
        f"layer  {'kind':<{kind}}  {'‖dL/dx‖ at its input':<{BAR + 9}}  ‖dL/dW‖ of its parameters",
    ]
    for row in record.layers:
        lines.append(
            f"{row.index:>5}  {row.kind:<{kind}}  {number(row.stream_norm):>7}  "
            f"{bar(row.stream_norm, top_stream, unicode):<{BAR}}  {number(row.param_norm):>7}  "
            f"{bar(row.param_norm, top_params, unicode)}".rstrip()
        )
    lines.append(
        f"{'out':>5}  {'':<{kind}}  {number(record.output_norm):>7}  "
        f"{bar(record.output_norm, top_stream, unicode)}".rstrip()
    )
    first, last = record.layers[0], record.layers[-1]
    lines += [
        "",
        f"first layer / last layer: ‖dL/dx‖ {ratio(first.stream_norm, last.stream_norm)}, "
        f"‖dL/dW‖ {ratio(first.param_norm, last.param_norm)}",
    ]
    text = "\n".join(lines) + "\n"
    return text if unicode else text.translate(ASCII)


def to_markdown(record: GradRecord) -> str:
    lines = [
        f"**{headline(record)}**",
        "",
        sizes_line(record),
        "",
        "| layer | kind | params | ‖dL/dx‖ at its input | ‖dL/dW‖ of its parameters |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r.index} | {r.kind} | {r.params:,} | {number(r.stream_norm)} | {number(r.param_norm)} |"
        for r in record.layers
    ]
    lines.append(f"| output | | | {number(record.output_norm)} | |")
    return "\n".join(lines) + "\n"


def to_json(record: GradRecord) -> str:
    return json.dumps({"loss_definition": LOSS, **asdict(record)}, indent=2) + "\n"


def to_csv(record: GradRecord) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["layer", "kind", "params", "stream_grad_norm", "param_grad_norm"])
    writer.writerows(
        [r.index, r.kind, r.params, repr(r.stream_norm), repr(r.param_norm)] for r in record.layers
    )
    writer.writerow(["output", "", "", repr(record.output_norm), ""])
    return out.getvalue()


@dataclass(frozen=True)
class GradView:
    record: GradRecord

    command = "grad"
    formats = ("text", "markdown", "json", "csv")

    @property
    def title(self) -> str:
        return f"blocktrace grad: {headline(self.record)}"

    def render(self, fmt: str, page: Page) -> str:
        if fmt == "text":
            text = to_text(self.record)
            return text if page.carries(text) else to_text(self.record, unicode=False)
        return {"markdown": to_markdown, "json": to_json, "csv": to_csv}[fmt](self.record)

    def screen(self, page: Page) -> Screen | None:
        return None

    def picture(self) -> Screen:
        return text_picture(to_text(self.record))
