"""-o as a property: every kind of target a shell user can name, with any command and format, ends
as the target says: a file (new, existing, through a symbolic link) written whole and atomically
with its mode kept; a read-only file of one's own, a folder, a missing folder, a path under a file,
a descriptor not open refused in one line, exit 2, before anything is traced; /dev/full one line,
exit 1; a character device, a FIFO and a descriptor of this process (/dev/fd/N, /proc/self/fd/N: a
log opened for appending as `>>` opens it, a pipe as `| cat` gives) written straight through, so
that what the descriptor held is kept. Whatever the outcome, no temporary file is left, and every
other file in the folder is as it was.

In-process (tests/harness.py), on one cached trace: an example takes milliseconds; `.ci/run`'s long
profile draws more (tests/fuzz.py). `-o /dev/stdout` under a real shell's `>>` and `| cat` is
tests/test_hardening.py's (a subprocess: this process's own stdout is pytest's).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import device, profile
from tests.harness import TINY, invoke

COMMANDS = {
    "diagram": ["text", "markdown", "json", "svg"],
    "table": ["text", "csv", "json", "html"],
    "source": ["text", "markdown"],
}
OLD = "the old file\n"
# root may write into a folder without write permission, as a shell's `>` may
ROOT = os.geteuid() == 0


@dataclass
class Target:
    """What `-o` is given, the exit code it must end in, and where the output must then be found."""

    path: str
    code: int
    words: str = ""  # in the one error line
    written: Path | None = None  # the file that must hold the output, whole
    appended: Path | None = None  # a file that must still start with OLD, the output after it
    mode: int | None = None  # the written file's permissions
    read: list[bytes] = field(default_factory=list)  # what a reader of a FIFO or a pipe got
    cleanup: list[object] = field(default_factory=list)


def _reader(path_or_fd: str | int, got: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(path_or_fd, "rb") as f:
            got.append(f.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make(kind: str, folder: Path) -> Target:
    """The target `kind` in `folder`, set up as a user's disk would have it."""
    old = folder / "old"
    old.write_text(OLD)
    old.chmod(0o640)
    (folder / "a-file").write_text(OLD)
    new = folder / "out"
    if kind == "new":
        return Target(str(new), 0, written=new, mode=0o666 & ~_umask())
    if kind == "relative":
        return Target("out", 0, written=new, mode=0o666 & ~_umask())
    if kind == "existing":
        return Target(str(old), 0, written=old, mode=0o640)
    if kind == "read-only":
        old.chmod(0o444)
        return Target(str(old), 2, "read-only")
    if kind == "symlink":
        (folder / "link").symlink_to(old)
        return Target(str(folder / "link"), 0, written=old, mode=0o640)
    if kind == "dangling-symlink":
        (folder / "link").symlink_to(new)
        return Target(str(folder / "link"), 0, written=new, mode=0o666 & ~_umask())
    if kind == "folder":
        return Target(str(folder), 2, "is a folder")
    if kind == "trailing-slash":
        return Target(f"{folder}/sub/", 2, "names a folder")
    if kind == "missing-folder":
        return Target(str(folder / "missing" / "out"), 2, "folder does not exist")
    if kind == "under-a-file":
        return Target(str(folder / "a-file" / "out"), 2, "not a folder")
    if kind == "read-only-folder":
        locked = folder / "locked"
        locked.mkdir(mode=0o555)
        if ROOT:
            return Target(str(locked / "out"), 0, written=locked / "out", mode=0o666 & ~_umask())
        return Target(str(locked / "out"), 2, "permission denied")
    if kind == "empty":
        return Target("", 2, "--output is empty")
    if kind == "dev-null":
        return Target(device("null", folder), 0)
    if kind == "dev-full":
        return Target(device("full", folder), 1, "no space left")
    if kind == "fifo":
        fifo = folder / "pipe"
        os.mkfifo(fifo)
        target = Target(str(fifo), 0)
        target.cleanup.append(_reader(str(fifo), target.read))
        return target
    if kind in ("dev-fd-append", "proc-fd-append"):
        log = folder / "log"
        log.write_text(OLD)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)  # as a shell's `>> log.txt` opens it
        spelling = "/dev/fd" if kind == "dev-fd-append" else "/proc/self/fd"
        return Target(f"{spelling}/{fd}", 0, appended=log, cleanup=[fd])
    if kind == "fd-pipe":  # `| cat`, or `-o >(cat)`
        read, write = os.pipe()
        target = Target(f"/dev/fd/{write}", 0, cleanup=[write])
        target.cleanup.append(_reader(read, target.read))
        return target
    if kind == "fd-not-open":
        return Target("/dev/fd/987", 2, "descriptor 987 is not open")
    raise AssertionError(kind)


KINDS = [
    "new", "relative", "existing", "read-only", "symlink", "dangling-symlink", "folder", "trailing-slash",
    "missing-folder", "under-a-file", "read-only-folder", "empty", "dev-null", "dev-full", "fifo",
    "dev-fd-append", "proc-fd-append", "fd-pipe", "fd-not-open",
]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every entry under `folder`: its kind and, for a file, its bytes."""
    found: dict[str, tuple[str, bytes | None]] = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        kind = "file" if stat.S_ISREG(mode) else stat.filemode(mode)[0]  # l, d, p, c: not read
        found[str(path.relative_to(folder))] = (kind, path.read_bytes() if kind == "file" else None)
    return found


@contextlib.contextmanager
def released(target: Target) -> Iterator[None]:
    """The target's descriptors closed and its reader let go, whatever the run did."""
    try:
        yield
    finally:
        for thing in target.cleanup:
            if isinstance(thing, int):
                with contextlib.suppress(OSError):
                    os.close(thing)
        if os.path.exists(target.path) and stat.S_ISFIFO(os.stat(target.path).st_mode):
            with contextlib.suppress(OSError):  # a reader still waiting: a writer opens, so it ends
                os.close(os.open(target.path, os.O_WRONLY | os.O_NONBLOCK))
        for thing in target.cleanup:
            if isinstance(thing, threading.Thread):
                thing.join(timeout=30)


EXPECTED: dict[tuple[str, str], bytes] = {}  # what each command prints to a pipe, from the cached trace


@pytest.mark.parametrize("kind", KINDS)
@given(
    command=st.sampled_from(sorted(COMMANDS)).flatmap(
        lambda c: st.sampled_from(COMMANDS[c]).map(lambda f: (c, f))
    ),
)
@profile(normal=2, share=0.005)
def test_every_kind_of_target_is_written_or_refused_as_it_says(
    kind: str, command: tuple[str, str], module_cache_folder: Path
) -> None:
    name, fmt = command
    env: dict[str, str | None] = {"XDG_CACHE_HOME": str(module_cache_folder)}  # one trace for every example
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        target = make(kind, folder)
        before = _snapshot(folder)
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            # a bad request is refused before anything is traced (a trace may take minutes)
            untraced = mock.patch("blocktrace.pipeline.cached_trace", side_effect=AssertionError("traced"))
            with released(target), untraced if target.code == 2 else contextlib.nullcontext():
                result = invoke([name, *TINY, "--format", fmt, "-o", target.path], env=env)
        finally:
            os.chdir(cwd)
        if command not in EXPECTED:
            EXPECTED[command] = invoke([name, *TINY, "--format", fmt], env=env).stdout.encode()
        expected = EXPECTED[command]
        context = f"-o {target.path!r} ({kind}) {name} --format {fmt}: {result.exit_code} {result.stderr}"
        after = _snapshot(folder)

        assert result.exit_code == target.code, context
        assert not [p for p in after if p.endswith(".tmp")], context  # no temporary file, ever
        lines = result.stderr.splitlines()
        if target.code:
            assert len(lines) == 1 and lines[0].startswith("blocktrace: error: "), context
            assert target.words in lines[0], context
            assert after == before, context  # nothing made, nothing changed
            return
        assert result.stderr == "" and result.stdout == "", context
        if target.written is not None:
            assert target.written.read_bytes() == expected, context
            assert stat.S_IMODE(target.written.stat().st_mode) == target.mode, context
        if target.appended is not None:
            assert target.appended.read_bytes() == OLD.encode() + expected, context
        if target.read:
            assert target.read == [expected], context
        if kind in ("symlink", "dangling-symlink"):
            assert (folder / "link").is_symlink(), context  # written through, not replaced
        if kind == "fifo":
            assert stat.S_ISFIFO((folder / "pipe").stat().st_mode), context
        changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        allowed = {str(p.relative_to(folder)) for p in (target.written, target.appended) if p is not None}
        assert changed <= allowed, (context, changed)
