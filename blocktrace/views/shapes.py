"""How a shape is written: (B, T, C), (8, 1024, 768), or both. No torch here."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blocktrace.tracing.trace import TensorMeta


class Shapes(StrEnum):
    symbolic = "symbolic"  # (B, T, C)
    concrete = "concrete"  # (8, 1024, 768)
    both = "both"  # (B, T, C)=(8, 1024, 768)


def dims_text(
    shape: tuple[int, ...], symbols: tuple[str, ...] | None, shapes: Shapes = Shapes.symbolic
) -> str:
    """(B, T, C), (8, 1024, 768) or (B, T, C)=(8, 1024, 768); numbers where no name is known."""
    numbers = "(" + ", ".join(str(n) for n in shape) + ")"
    if shapes == Shapes.concrete or symbols is None:
        return numbers
    names = "(" + ", ".join(symbols) + ")"
    return f"{names}={numbers}" if shapes == Shapes.both and names != numbers else names


def shape_text(t: TensorMeta, shapes: Shapes = Shapes.symbolic) -> str:
    return dims_text(t.shape, t.symbols, shapes)


def shapes_text(ts: tuple[TensorMeta, ...], shapes: Shapes = Shapes.symbolic) -> str:
    """Shapes as a list, a repeated one written once with its count: (B, H, T, D), 2×(B, Hkv, T, D)."""
    runs: list[tuple[str, int]] = []
    for text in (shape_text(t, shapes) for t in ts):
        if runs and runs[-1][0] == text:
            runs[-1] = (text, runs[-1][1] + 1)
        else:
            runs.append((text, 1))
    return ", ".join(text if n == 1 else f"{n}×{text}" for text, n in runs)
