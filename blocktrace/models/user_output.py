"""The one guard around code blocktrace did not write: while a model source imports, builds and runs
it (a user's module, transformers), what that code prints goes to stderr, so that stdout carries
blocktrace's output alone (`--format json` still parses when a model prints). No torch here."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout


@contextmanager
def user_output_to_stderr() -> Iterator[None]:
    """sys.stdout is stderr inside (or nowhere, where there is no stderr); restored on the way out."""
    target = sys.stderr if sys.stderr is not None else io.StringIO()
    with redirect_stdout(target):
        yield
