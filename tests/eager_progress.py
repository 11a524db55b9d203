"""`python tests/eager_progress.py ARGS`: `blocktrace ARGS` with its progress line shown at once, not
after a second of silence: whether a stage shows then does not hang on how fast torch imports on
the machine (tests/test_cli_conventions.py)."""

from __future__ import annotations

from blocktrace.__main__ import main
from blocktrace.cli import progress

if __name__ == "__main__":
    progress.AFTER = 0.0
    main()
