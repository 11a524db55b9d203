"""Every write of blocktrace's output goes through here: to stdout, or to a file with `-o FILE`.

`-o FILE` is written atomically (a temporary file beside it, then a rename, so a failed write leaves
an existing file as it was and nothing half-written); `-o -` or no `-o` is stdout. A failure is an
`OutputError` with a sentence and an exit code; a reader that went away (`| head`) is `PipeClosed`,
which is no failure. Whether stdout is a terminal, and how wide, is asked here too.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from blocktrace.errors import OutputError, PipeClosed

STDOUT = "-"  # as --output: write to stdout
_CLOSED = "stdout is closed; redirect it to a file, or write one with -o FILE"


def notice(kind: str, message: str) -> None:
    """One line on stderr, "blocktrace: KIND: MESSAGE", where there is a stderr to write to."""
    if sys.stderr is None:
        return
    with suppress(OSError, ValueError):
        sys.stderr.write(f"blocktrace: {kind}: {message}\n")
        sys.stderr.flush()


def terminal(stream: TextIO | None):
    """A rich Console for `stream` if it is a terminal; None otherwise (FORCE_COLOR does not make a
    pipe or a file a terminal), so that piped output never pays for importing rich."""
    if stream is None or not isatty(stream):
        return None
    from rich.console import Console

    console = Console(file=stream, highlight=False, soft_wrap=True)
    return console if console.is_terminal else None


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # a closed or a strange stream
        return False


# --- writing ------------------------------------------------------------------------------------


def is_stdout(output: str | Path | None) -> bool:
    return output is None or str(output) == STDOUT


def stdout() -> TextIO:
    """sys.stdout, or an OutputError if the shell closed it (`blocktrace diagram >&-`)."""
    if sys.stdout is None:
        raise OutputError(_CLOSED, 1)
    return sys.stdout


def write_output(text: str, output: str | Path | None, stream: TextIO | None = None) -> None:
    """`text` to the file `output` (atomically), or to `stream` / stdout when output is None or "-"."""
    if is_stdout(output):
        stream = stream or stdout()
        with stdout_errors(stream):
            stream.write(text)
            stream.flush()
    else:
        assert output is not None
        write_file(output, text)


@contextmanager
def stdout_errors(stream: TextIO | None = None) -> Iterator[None]:
    """Turn a failed write to stdout into PipeClosed (the reader went away) or an OutputError."""
    try:
        yield
    except BrokenPipeError as error:
        raise PipeClosed() from error
    except UnicodeEncodeError as error:
        encoding = getattr(stream or sys.stdout, "encoding", None) or error.encoding
        bad = error.object[error.start : error.end]
        raise OutputError(
            f"stdout's encoding ({encoding}) cannot carry {bad!r}; "
            "set PYTHONIOENCODING=utf-8, or write a file with -o FILE",
            1,
        ) from error
    except OSError as error:
        if error.errno == errno.EBADF:
            raise OutputError(_CLOSED, 1) from error
        raise OutputError(f"cannot write to stdout: {error.strerror or error}", 1) from error


# errno -> (what went wrong, whether it is the request's fault: exit 2, or the run's: exit 1)
_REASONS = {
    errno.ENOENT: ("its folder does not exist; create it first, or choose another path", 2),
    errno.ENOTDIR: ("a part of the path is not a folder", 2),
    errno.EISDIR: ("it is a folder; name a file", 2),
    errno.EACCES: ("permission denied; choose a place you can write to", 2),
    errno.EPERM: ("permission denied; choose a place you can write to", 2),
    errno.EROFS: ("the file system is read-only", 2),
    errno.ENAMETOOLONG: ("the name is too long", 2),
    errno.ELOOP: ("too many symbolic links", 2),
    errno.EINVAL: ("the name is not valid here", 2),
    errno.ENOSPC: ("no space left on the device; nothing was written", 1),
    errno.EDQUOT: ("disk quota exceeded; nothing was written", 1),
}


def _file_error(path: str, error: OSError) -> OutputError:
    reason, code = _REASONS.get(error.errno or 0, (f"{(error.strerror or str(error)).lower()}", 1))
    return OutputError(f"cannot write {path!r}: {reason}", code)


def write_file(output: str | Path, text: str) -> None:
    """Write `text` to `output` as UTF-8, atomically: into a temporary file in the same folder, then
    renamed over it. On any failure (or Ctrl-C) the temporary file is removed and an existing file is
    left untouched. A device or a FIFO (/dev/null, a process substitution) is written through."""
    name = str(output)
    if not name:
        raise OutputError("--output is empty; name a file, or - for stdout", 2)
    if name.endswith(os.sep):
        raise OutputError(f"cannot write {name!r}: it names a folder; name a file", 2)
    data = text.encode("utf-8")
    target = os.path.realpath(name)  # write through a symlink, not over it
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as error:
        raise _file_error(name, error) from error
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise _file_error(name, IsADirectoryError(errno.EISDIR, "Is a directory"))
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            with open(target, "wb") as f:
                f.write(data)
        except OSError as error:
            raise _file_error(name, error) from error
        return
    try:
        atomic_write(target, data, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
    except OSError as error:
        raise _file_error(name, error) from error


def atomic_write(target: str | Path, data: bytes, mode: int, sync: bool = True) -> None:
    """`data` into a temporary file beside `target` with permissions `mode`, then renamed over it: on
    any failure (or Ctrl-C) the temporary file is removed and `target` is as it was. `sync`: on disk
    before the rename. Raises OSError."""
    folder, base = os.path.split(target)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
