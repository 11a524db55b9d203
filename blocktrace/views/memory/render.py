"""The memory view written out: a text report (totals, then each call and op that saved activations),
a markdown table, JSON and CSV for scripts, and a picture of the text."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass

from blocktrace.views.memory.build import Memory, Part
from blocktrace.views.stats import human_bytes
from blocktrace.views.view import Page, Screen, text_picture


def _parts(title: str, parts: tuple[Part, ...], total: int) -> list[str]:
    width = max(len(p.name) for p in parts)
    lines = [title]
    lines += [f"  {p.name:<{width}}  {human_bytes(p.bytes):>10}  {p.note}" for p in parts]
    lines.append(f"  {'total':<{width}}  {human_bytes(total):>10}")
    return lines


def saved_rows(memory: Memory) -> list[tuple[str, str, int]]:
    """(where, what, bytes) for each call and each op that saved anything, nested by indentation."""
    return [
        (
            "  " * s.depth + (s.path or "(root)") if not s.is_op else "  " * s.depth + s.kind,
            "op" if s.is_op else s.kind,
            s.saved_bytes,
        )
        for s in memory.record.saved
    ]


def to_text(memory: Memory) -> str:
    record = memory.record
    lines = [
        f"{record.model} ({record.dtype}): what training and inference hold, measured on the meta device",
        "",
    ]
    lines += _parts("training", memory.training, memory.training_bytes)
    lines += ["", *_parts("inference", memory.inference, memory.inference_bytes), ""]
    rows = saved_rows(memory)
    width = max([len(where) for where, _, _ in rows] + [len("saved for backward")])
    kind = max([len(what) for _, what, _ in rows] + [4])
    lines.append(f"{'saved for backward':<{width}}  {'kind':<{kind}}  {'bytes':>10}")
    lines += [f"{where:<{width}}  {what:<{kind}}  {human_bytes(n):>10}" for where, what, n in rows]
    lines.append(f"{'total':<{width}}  {'':<{kind}}  {human_bytes(record.saved_bytes):>10}")
    return "\n".join(lines) + "\n"


def to_markdown(memory: Memory) -> str:
    lines = [f"**{memory.record.model}** ({memory.record.dtype})", "", "| part | bytes | |", "|---|---:|---|"]
    for title, parts, total in (
        ("training", memory.training, memory.training_bytes),
        ("inference", memory.inference, memory.inference_bytes),
    ):
        lines += [f"| {title}: {p.name} | {human_bytes(p.bytes)} | {p.note} |" for p in parts]
        lines.append(f"| **{title} total** | **{human_bytes(total)}** | |")
    lines += ["", "| saved for backward | kind | bytes |", "|---|---|---:|"]
    nbsp = "\u00a0\u00a0"  # markdown keeps no-break spaces, so the nesting shows
    lines += [
        f"| {where.replace('  ', nbsp)} | {what} | {human_bytes(n)} |"
        for where, what, n in saved_rows(memory)
    ]
    return "\n".join(lines) + "\n"


def to_json(memory: Memory) -> str:
    data = {
        "record": asdict(memory.record),
        "optimizer": str(memory.optimizer),
        "mixed": memory.mixed,
        "training": [asdict(p) for p in memory.training],
        "training_bytes": memory.training_bytes,
        "inference": [asdict(p) for p in memory.inference],
        "inference_bytes": memory.inference_bytes,
    }
    return json.dumps(data, indent=2) + "\n"


def to_csv(memory: Memory) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "name", "path", "kind", "depth", "bytes"])
    for section, parts in (("training", memory.training), ("inference", memory.inference)):
        writer.writerows([section, p.name, "", "", "", p.bytes] for p in parts)
    for s in memory.record.saved:
        writer.writerow(
            [
                "saved",
                s.kind if s.is_op else s.path or "(root)",
                s.path,
                "op" if s.is_op else s.kind,
                s.depth,
                s.saved_bytes,
            ]
        )
    return out.getvalue()


@dataclass(frozen=True)
class MemoryView:
    memory: Memory

    command = "memory"
    formats = ("text", "markdown", "json", "csv")

    @property
    def title(self) -> str:
        return f"blocktrace memory: {self.memory.record.model}"

    def render(self, fmt: str, page: Page) -> str:
        return {"text": to_text, "markdown": to_markdown, "json": to_json, "csv": to_csv}[fmt](self.memory)

    def screen(self, page: Page) -> Screen | None:
        return None

    def picture(self) -> Screen:
        return text_picture(to_text(self.memory))
