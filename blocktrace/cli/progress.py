"""A progress line on stderr for a run that takes more than about a second: the stage it is in,
rewritten in place, and wiped before anything is written to stdout (blocktrace.progress.output_begins)
or when the run ends. Only where stderr is a terminal: never into a pipe or a file, nor beside
--format json (a script reads it)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from blocktrace import progress as stages

AFTER = 1.0  # seconds of silence before the line appears
EVERY = 0.1  # how often it follows the stage
WIPE = "\r\x1b[K"


def wanted(fmt: str) -> bool:
    try:
        return sys.stderr.isatty() and fmt != "json"
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(shown: bool) -> Iterator[None]:
    """While the body runs, after AFTER seconds: "blocktrace: STAGE …" on stderr."""
    if not shown:
        yield
        return
    done = threading.Event()
    thread = threading.Thread(target=_report, args=(done,), daemon=True)

    def stop() -> None:
        done.set()
        thread.join()

    stages.stage("starting")
    thread.start()
    stages.shown(stop)
    try:
        yield
    finally:
        stages.shown(None)
        stop()


def _report(done: threading.Event) -> None:
    if done.wait(AFTER):
        return
    line = ""
    try:
        while True:
            text = f"blocktrace: {stages.current} …"
            if text != line:
                sys.stderr.write(WIPE + text)
                sys.stderr.flush()
                line = text
            if done.wait(EVERY):
                break
        sys.stderr.write(WIPE)
        sys.stderr.flush()
    except (OSError, ValueError):  # a terminal gone: the run itself will say so, or not care
        pass
