"""The one family of errors blocktrace raises, each carrying its exit code, and how an exception is
cut to the one line a user reads. Imports nothing.

Exit codes: 2 for bad input (a flag, a config, an output path that cannot be), 1 for a run that failed
(a forward, a full disk). The CLI prints `blocktrace: error: MESSAGE` and exits with the code; nothing
below the CLI prints an error or exits.
"""

from __future__ import annotations


class BlocktraceError(Exception):
    """A failure the user is told of in one sentence, with the exit code it ends in."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(BlocktraceError, ValueError):
    """A request that cannot be traced as given (a flag, a config, a model file); exit 2."""

    exit_code = 2


class TraceError(BlocktraceError, RuntimeError):
    """A forward pass that could not be traced; the message says where, in one sentence. Exit 1."""


class ForwardError(TraceError):
    """The model's forward raised; `partial` is the tracing.trace.Trace of what ran before it, each
    call still open closed where it stopped."""

    def __init__(self, message: str, partial: object):
        super().__init__(message)
        self.partial = partial


def ran_before(error: BaseException) -> object | None:
    """The partial trace of the forward failure `error` is, or was raised from; None if none."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ForwardError):
        cause = cause.__cause__
    return None if cause is None else cause.partial


class OutputError(BlocktraceError):
    """The result could not be written (or drawn) as asked: exit 2 for a bad request (a missing
    folder, a folder as a file, a --width too narrow), 1 for a failed write (a full disk, an I/O
    error)."""


class PipeClosed(Exception):
    """Not a failure: the reader of stdout went away (`| head -1`, `| true`); stop quietly, exit 0."""


def error_line(error: BaseException, named: bool = False) -> str:
    """The first line of an exception's message, or its type's name where the message is empty.
    `named`: led by its type's name too, for errors a user's code raised (a reader must place them)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return f"{type(error).__name__}: {line}" if named else line
