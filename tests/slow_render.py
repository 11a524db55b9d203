"""`python tests/slow_render.py ARGS`: `blocktrace ARGS` with a progress line that may show at once
and a writer that takes a third of a second before it renders, long enough for the line to show the
"rendering" stage (tests/test_cli_conventions.py)."""

from __future__ import annotations

import time
from typing import Any

from blocktrace.__main__ import main
from blocktrace.cli import progress
from blocktrace.output import formats

writer = formats.writer


def slow_writer(fmt: str) -> Any:
    def slow(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.35)
        writer(fmt)(*args, **kwargs)

    return slow


if __name__ == "__main__":
    progress.AFTER = 0.0
    formats.writer = slow_writer  # type: ignore[assignment]
    main()
