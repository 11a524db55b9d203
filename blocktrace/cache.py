"""A cache of traces in the user's cache directory, so that a repeated call skips importing torch.

The key holds everything a trace depends on: blocktrace's own source (so an edited checkout never
reads a stale entry), the torch version, the model spec with its full config, the device and the
frozen patterns.
Only the deterministic devices are cached: "probe" and "meta".

An entry is a line with the SHA-256 of the trace's JSON, then that JSON: an entry that cannot be
read, or whose text does not match its digest (cut short, edited, valid JSON of another shape,
nested too deep to parse), is ignored and rewritten, never a crash. Only a regular file of at most
MAX_BYTES is read (a FIFO or a link to /dev/zero is a miss), and only from a folder no one else can
write to: the folder is made 0700. Entries are written atomically; the whole cache is kept under
MAX_BYTES by removing the entries used longest ago. A cache that cannot be written is no reason to
fail, but it is said once on stderr. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from blocktrace.models.request import Keyed
from blocktrace.models.spec import Device
from blocktrace.tracing.trace import Trace

CACHED_DEVICES = (Device.probe, Device.meta)


MAX_BYTES = 64 * 2**20  # the whole cache; one 500-layer entry is about 10 MB
SUFFIX = ".json"


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/blocktrace, or ~/.cache/blocktrace when it is unset, empty or relative (the XDG
    spec says a relative path is invalid and to be ignored)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = str(Path.home() / ".cache")
    return Path(base) / "blocktrace"


@cache
def _source_digest() -> str:
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _torch_version() -> str:
    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


def key(spec: Keyed, device: Device, frozen: tuple[str, ...]) -> str:
    parts = {
        "blocktrace": _source_digest(),
        "where": str(Path(__file__).parent),  # a trace names the files of the code it ran
        "torch": _torch_version(),
        "spec": type(spec).__name__,
        "config": spec.describe(),
        "device": device,
        "frozen": list(frozen),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _path(spec: Keyed, device: Device, frozen: tuple[str, ...]) -> Path:
    return cache_dir() / f"{key(spec, device, frozen)}{SUFFIX}"


def load(spec: Keyed, device: Device, frozen: tuple[str, ...]) -> Trace | None:
    """The cached trace of this request, or None: not cached, unreadable, or not what was stored."""
    if device not in CACHED_DEVICES:
        return None
    try:
        path = _path(spec, device, frozen)
        data = _read_entry(path) if _trusted(path.parent) else None
    except (OSError, RuntimeError):  # RuntimeError: no home directory to find the cache in
        return None
    if data is None:
        return None
    digest, _, body = data.partition(b"\n")
    if digest != hashlib.sha256(body).hexdigest().encode():
        return None
    try:
        trace = Trace.from_json(body.decode("utf-8"))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
        return None  # RecursionError: JSON nested deeper than Python's recursion limit
    with suppress(OSError):
        os.utime(path)  # used now: the last to be removed when the cache is over its size
    return trace


def _read_entry(path: Path) -> bytes | None:
    """The entry's bytes if it is a regular file of at most MAX_BYTES; None for anything else: a
    symbolic link (to /dev/zero, say), a FIFO (opened without waiting for a writer), a huge file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    return data if len(data) <= MAX_BYTES else None


def _trusted(folder: Path) -> bool:
    """Whether the cache folder is ours alone: anyone who can write to it could plant a trace whose
    digest matches (a digest is no signature), so a folder others may write to is not read."""
    st = folder.stat()
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def store(trace: Trace, spec: Keyed, device: Device, frozen: tuple[str, ...]) -> None:
    """Write the entry atomically, then trim the cache to MAX_BYTES. A cache that cannot be written
    is no reason to fail: say so on stderr, once, and go on."""
    if device not in CACHED_DEVICES:
        return
    body = trace.to_json(indent=None).encode("utf-8")
    data = hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    if len(data) > MAX_BYTES:
        return
    from blocktrace.output.sink import atomic_write

    try:
        path = _path(spec, device, frozen)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # private whatever the umask
        if not _trusted(path.parent):
            _warn(f"cache not used: others may write to {path.parent} (chmod 700 it)")
            return
        # private, as a temporary file is made; not synced: an entry a crash loses is only a miss
        atomic_write(path, data, 0o600, sync=False)
        trim(MAX_BYTES, keep=path)
    except (OSError, RuntimeError) as error:
        _warn(f"cache not written: {_reason(error)} (--no-cache skips it)")


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    return str(error)


_warned = False


def _warn(message: str) -> None:
    from blocktrace.output.sink import notice

    global _warned
    if not _warned:
        _warned = True
        notice("warning", message)


def _entries() -> list[os.DirEntry]:
    try:
        with os.scandir(cache_dir()) as it:
            return [e for e in it if e.is_file(follow_symlinks=False) and e.name.endswith(SUFFIX)]
    except (OSError, RuntimeError):
        return []


def trim(limit: int, keep: Path | None = None) -> None:
    """Remove the entries used longest ago until the cache holds at most `limit` bytes."""
    stats = []
    for entry in _entries():
        with suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            stats.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in stats)
    for _, size, path in sorted(stats):
        if total <= limit:
            break
        if keep is not None and Path(path) == keep:
            continue
        with suppress(OSError):
            os.unlink(path)
            total -= size


@dataclass(frozen=True)
class Info:
    folder: Path
    entries: int
    size: int  # bytes


def info() -> Info:
    sizes = []
    for entry in _entries():
        with suppress(OSError):
            sizes.append(entry.stat(follow_symlinks=False).st_size)
    return Info(cache_dir(), len(sizes), sum(sizes))


def clear() -> tuple[int, int]:
    """Remove every entry (and any temporary file a killed run left); the count and bytes removed."""
    removed = size = 0
    try:
        with os.scandir(cache_dir()) as it:
            names = [e for e in it if e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return 0, 0
    for entry in names:
        if not (entry.name.endswith(SUFFIX) or entry.name.endswith(".tmp")):
            continue
        try:
            bytes_ = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        except OSError as error:
            reason = f"cannot remove a cache entry: {error.strerror}"
            raise OSError(error.errno, reason, entry.path) from error
        if entry.name.endswith(SUFFIX):
            removed, size = removed + 1, size + bytes_
    return removed, size
