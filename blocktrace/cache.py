"""A cache of traces in the user's cache directory, so that a repeated call skips importing torch.

The key holds everything a trace depends on: blocktrace's own source (so an edited checkout never
reads a stale entry), the torch version, the full config, the device and the frozen patterns.
Only the deterministic devices are cached: "probe" and "meta". An entry that cannot be read is
ignored and rewritten. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from blocktrace.spec import ModelSpec
from blocktrace.trace import Trace

CACHED_DEVICES = ("probe", "meta")


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/blocktrace, or ~/.cache/blocktrace."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "blocktrace"


@cache
def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _torch_version() -> str:
    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


def key(spec: ModelSpec, device: str, frozen: tuple[str, ...]) -> str:
    parts = {
        "blocktrace": _source_digest(),
        "torch": _torch_version(),
        "spec": type(spec).__name__,
        "config": spec.describe(),
        "device": device,
        "frozen": list(frozen),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def load(spec: ModelSpec, device: str, frozen: tuple[str, ...]) -> Trace | None:
    if device not in CACHED_DEVICES:
        return None
    path = cache_dir() / f"{key(spec, device, frozen)}.json"
    try:
        return Trace.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(trace: Trace, spec: ModelSpec, device: str, frozen: tuple[str, ...]) -> None:
    """Write the entry atomically; a cache that cannot be written is no reason to fail."""
    if device not in CACHED_DEVICES:
        return
    directory = cache_dir()
    path = directory / f"{key(spec, device, frozen)}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(trace.to_json(indent=None), encoding="utf-8")
        partial.replace(path)
    except OSError:
        return
