"""What the cache reads: only a regular file of bounded size, only from a folder no one else may
write to, and never a crash or a hang on what it finds there."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from blocktrace import cache
from blocktrace.models.block.spec import BlockSpec
from blocktrace.pipeline import cached_trace
from tests.models import SMALL

SPEC = BlockSpec(SMALL)


def _entry() -> Path:
    return cache._path(SPEC, "probe", ())


def _stored() -> Path:
    fresh = cached_trace(SMALL)
    assert cache.load(SPEC, "probe", ()) == fresh
    return _entry()


def test_an_entry_nested_too_deep_is_a_miss_and_rewritten() -> None:
    path = _stored()
    body = b"[" * 200_000 + b"]" * 200_000
    path.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    assert cache.load(SPEC, "probe", ()) is None
    cached_trace(SMALL)
    assert cache.load(SPEC, "probe", ()) is not None


def test_a_fifo_in_place_of_an_entry_is_a_miss_without_waiting() -> None:
    path = _stored()
    path.unlink()
    os.mkfifo(path)
    answer: list[object] = []
    reader = threading.Thread(target=lambda: answer.append(cache.load(SPEC, "probe", ())), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert answer == [None]
    cached_trace(SMALL)  # and rewritten as a regular file
    assert cache.load(SPEC, "probe", ()) is not None


def test_a_link_to_an_endless_device_or_a_huge_file_is_not_read(tmp_path: Path) -> None:
    path = _stored()
    path.unlink()
    path.symlink_to("/dev/zero")
    assert cache.load(SPEC, "probe", ()) is None
    path.unlink()
    with open(path, "wb") as f:
        f.truncate(3 * 2**30)  # sparse: 3 GiB of zeros that a read() would go through
    assert cache.load(SPEC, "probe", ()) is None


def test_the_folder_is_private_and_not_trusted_when_others_may_write(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    old = os.umask(0)
    try:
        cached_trace(SMALL)
    finally:
        os.umask(old)
    folder = cache.cache_dir()
    assert folder.stat().st_mode & 0o777 == 0o700
    assert cache.load(SPEC, "probe", ()) is not None
    folder.chmod(0o777)  # anyone may now plant an entry with a digest that matches
    assert cache.load(SPEC, "probe", ()) is None


def test_a_hit_names_the_folder_as_this_call_wrote_it(tmp_path: Path, monkeypatch) -> None:
    import json

    from tests.harness import invoke
    from tests.test_hardening import LLAMA

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(LLAMA))
    (tmp_path / "link").symlink_to(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    named = {}
    for source in ("./model", str(tmp_path / "link")):  # the second is answered from the cache
        result = invoke(["diagram", "--hf", source, "--format", "json"])
        assert result.exit_code == 0, result.stderr
        named[source] = json.loads(result.stdout)["config"]["hf"]
    assert named == {s: s for s in named}
