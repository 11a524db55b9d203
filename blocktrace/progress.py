"""The stage a run is in ("importing torch", "probing", "tracing", "rendering"), for the CLI's
progress line. The pipeline sets it; the output says when it begins to write to stdout, which shares
the terminal with the line; nothing here prints. Imports nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

current = ""  # read by another thread: a str is replaced whole
_wipe: Callable[[], None] | None = None  # while the CLI's progress line may show: ends it for good


def stage(text: str) -> None:
    global current
    current = text


def shown(wipe: Callable[[], None] | None) -> None:
    """Set by the CLI's progress line while it may show (None once it cannot): how to end it."""
    global _wipe
    _wipe = wipe


def output_begins() -> None:
    """Before the first write to stdout: the progress line, if one shows, is wiped and shows no more."""
    if _wipe is not None:
        _wipe()
