"""The stage a run is in ("importing torch", "probing", "tracing"), for the CLI's progress line.
The pipeline sets it; nothing here prints. Imports nothing."""

from __future__ import annotations

current = ""  # read by another thread: a str is replaced whole


def stage(text: str) -> None:
    global current
    current = text
