"""Every write of blocktrace's output goes through here: to stdout, or to a file with `-o FILE`.

`-o FILE` is resolved and checked before tracing (`check_output`), then written atomically (a
temporary file beside it, then a rename, so a failed write leaves an existing file as it was and
nothing half-written); a descriptor, a device or a FIFO is written straight through; a read-only
file is refused, as a shell's `>` refuses it. `-o -` or no `-o` is stdout. A failure is an
`OutputError` with a sentence and an exit code; a reader that went away (`| head`) is `PipeClosed`,
which is no failure. Whether stdout is a terminal, and how wide, is asked here too.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from blocktrace import progress
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
    """Turn a failed write to stdout into PipeClosed (the reader went away) or an OutputError. What
    is written here may go to the terminal the progress line is on: that line goes first."""
    progress.output_begins()
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


def check_output(output: str | None) -> str | None:
    """`-o FILE` resolved against the folder blocktrace started in and checked before anything is
    traced or any user code runs (which may change the working folder, or take minutes): the path to
    write, absolute; None or "-" for stdout as given. Raises the OutputError the write would."""
    if is_stdout(output):
        return output
    assert output is not None
    name = _checked_name(output)
    absolute = name if os.path.isabs(name) else os.path.join(os.getcwd(), name)
    _Target.of(name, absolute)
    return absolute


def write_file(output: str | Path, text: str) -> None:
    """Write `text` to `output` as UTF-8. A regular file (or a new one) atomically: into a temporary
    file in the same folder, then renamed over it; on any failure (or Ctrl-C, TERM, HUP) the temporary
    file is removed and an existing file is left untouched. A descriptor of this process (/dev/stdout,
    /dev/fd/3, /proc/self/fd/1, a process substitution), a character device or a FIFO is written
    straight through, so that `-o /dev/stdout >> log.txt` appends as the shell asked."""
    name = _checked_name(str(output))
    target = _Target.of(name, name)
    data = text.encode("utf-8")
    try:
        if target.fd is not None:
            _write_fd(target.fd, data)
        elif target.stream:
            fd = os.open(target.path, os.O_WRONLY | os.O_NOCTTY)
            try:
                _write_fd(fd, data)
            finally:
                os.close(fd)
        else:
            atomic_write(target.path, data, target.mode)
    except BrokenPipeError as error:
        raise PipeClosed() from error
    except OSError as error:
        raise _file_error(name, error) from error


def _checked_name(name: str) -> str:
    if not name:
        raise OutputError("--output is empty; name a file, or - for stdout", 2)
    if name.endswith(os.sep):
        raise OutputError(f"cannot write {name!r}: it names a folder; name a file", 2)
    return name


# a descriptor of this process by its name: /dev/fd/N, /proc/self/fd/N, /proc/<our pid>/fd/N
_FD_PATH = re.compile(r"/(?:dev/fd|proc/(?:self|thread-self|(\d+)(?:/task/\d+)?)/fd)/(\d+)")
_STD_PATHS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_MAX_LINKS = 40  # as the kernel's ELOOP


@dataclass(frozen=True)
class _Target:
    """Where `-o FILE` writes: a descriptor of ours (fd), a device or FIFO (stream: opened, written,
    never truncated or replaced), or a regular file at path (new, or replaced with its mode)."""

    path: str
    fd: int | None = None
    stream: bool = False
    mode: int = 0o666

    @classmethod
    def of(cls, name: str, path: str) -> _Target:
        """The target `path` names, checked as far as it can be without writing; `name` for errors."""
        fd = _descriptor(path)
        if fd is not None:
            try:
                opened = os.fstat(fd)
            except OSError:
                raise OutputError(f"cannot write {name!r}: descriptor {fd} is not open", 2) from None
            if stat.S_ISDIR(opened.st_mode):
                raise _file_error(name, IsADirectoryError(errno.EISDIR, "Is a directory"))
            return cls(path, fd=fd)
        real = os.path.realpath(path)  # write through a symlink, not over it
        try:
            st: os.stat_result | None = os.stat(real)
        except FileNotFoundError:
            st = None
        except OSError as error:
            raise _file_error(name, error) from error
        if st is None:
            folder = os.path.dirname(real) or "."
            if not os.path.isdir(folder):
                code = errno.ENOTDIR if os.path.exists(folder) else errno.ENOENT
                raise _file_error(name, OSError(code, os.strerror(code)))
            if not os.access(folder, os.W_OK | os.X_OK):
                raise _file_error(name, PermissionError(errno.EACCES, "Permission denied"))
            return cls(real, mode=0o666 & ~_umask())
        if stat.S_ISDIR(st.st_mode):
            raise _file_error(name, IsADirectoryError(errno.EISDIR, "Is a directory"))
        if not stat.S_ISREG(st.st_mode):
            return cls(real, stream=True)
        if not st.st_mode & 0o222 or not os.access(real, os.W_OK):
            raise OutputError(
                f"cannot write {name!r}: it is read-only; make it writable (chmod u+w) or remove it "
                "first (a shell's > refuses it too)",
                2,
            )
        return cls(real, mode=stat.S_IMODE(st.st_mode))


def _descriptor(path: str) -> int | None:
    """The descriptor of this process that `path` names, directly or through symbolic links
    (/dev/stdout -> /proc/self/fd/1); None for any other path. Each link is followed by hand, since
    realpath() would follow /proc/self/fd/1 on to the file behind it, whose replacement loses what
    the descriptor was opened for (>>, a pipe)."""
    for _ in range(_MAX_LINKS):
        if path in _STD_PATHS:
            return _STD_PATHS[path]
        match = _FD_PATH.fullmatch(path)
        if match is not None and (match[1] is None or int(match[1]) == os.getpid()):
            return int(match[2])
        try:
            link = os.readlink(path)
        except OSError:  # not a link, or not there
            return None
        path = os.path.normpath(os.path.join(os.path.dirname(path), link))
    return None


def _write_fd(fd: int, data: bytes) -> None:
    """All of `data` to the open descriptor `fd`, after what Python buffered for stdout and stderr."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(AttributeError, ValueError, OSError):
            stream.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
