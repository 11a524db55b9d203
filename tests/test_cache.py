import errno
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from blocktrace import cache
from blocktrace.models.block.spec import BlockSpec
from blocktrace.pipeline import cached_trace, trace_config
from tests.harness import TINY, invoke
from tests.models import SMALL

SPEC = BlockSpec(SMALL)


def run_cli(args: list[str], cache_home: str) -> tuple[str, bool]:
    """stdout of `blocktrace args` in a fresh process, and whether that process imported torch."""
    code = (
        "import sys, io, contextlib\n"
        "from blocktrace.cli import app\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        app({args!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(out.getvalue(), end='')\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": cache_home}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    *text, imported = result.stdout.splitlines()
    return "\n".join(text), imported == "True"


def test_a_repeated_call_is_answered_without_torch(tmp_path) -> None:
    first, first_imported = run_cli(["diagram", *TINY], str(tmp_path))
    second, second_imported = run_cli(["diagram", *TINY], str(tmp_path))
    assert first_imported and not second_imported
    assert first == second and "(+)" in second
    bypassed, bypass_imported = run_cli(["diagram", *TINY, "--no-cache"], str(tmp_path))
    assert bypass_imported and bypassed == first


def test_the_cached_trace_equals_a_fresh_one() -> None:
    assert cache.load(SPEC, "probe", ()) is None
    fresh = cached_trace(SMALL)
    assert cache.load(SPEC, "probe", ()) == fresh == trace_config(SMALL)


class Described:
    """Another kind of spec that describes itself as SPEC does."""

    def describe(self) -> dict[str, Any]:
        return SPEC.describe()


def test_every_part_of_the_request_is_in_the_key(monkeypatch, tmp_path) -> None:
    base = cache.key(SPEC, "probe", ())
    assert cache.key(BlockSpec(replace(SMALL, seq=7)), "probe", ()) != base
    assert cache.key(Described(), "probe", ()) != base
    assert cache.key(SPEC, "meta", ()) != base
    assert cache.key(SPEC, "probe", ("attn.*",)) != base
    with monkeypatch.context() as elsewhere:  # the same source installed in another folder
        elsewhere.setattr(cache, "__file__", str(tmp_path / "blocktrace" / "cache.py"))
        assert cache.key(SPEC, "probe", ()) != base
    monkeypatch.setattr(cache, "_torch_version", lambda: "0.0.0")
    assert cache.key(SPEC, "probe", ()) != base
    monkeypatch.setattr(cache, "_source_digest", lambda: "edited")
    assert cache.key(SPEC, "probe", ()) != base


def test_real_runs_are_not_cached_and_bad_entries_are_rewritten() -> None:
    cached_trace(SMALL, "cpu")
    assert not cache.cache_dir().exists() or not list(cache.cache_dir().iterdir())
    path = cache.cache_dir() / f"{cache.key(SPEC, 'probe', ())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json", encoding="utf-8")
    assert cache.load(SPEC, "probe", ()) is None
    cached_trace(SMALL)
    assert cache.load(SPEC, "probe", ()) == trace_config(SMALL)


def test_no_cache_neither_reads_nor_writes() -> None:
    cached_trace(SMALL, use_cache=False)
    assert not cache.cache_dir().exists()


# --- issue 9: damaged entries, the cache's place, its limit, and `blocktrace cache` ----------------


def _entry(config=SMALL) -> Path:
    return cache.cache_dir() / f"{cache.key(BlockSpec(config), 'probe', ())}.json"


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest() + "\n" + body


def _under_its_digest(body: str) -> str:
    """An edited trace under the digest of `body`: it still parses, so only the digest refuses it."""
    edited = json.dumps({**json.loads(body), "model": "Edited"})
    return _digest(body).split("\n", 1)[0] + "\n" + edited


@pytest.mark.parametrize(
    "damage",
    [
        lambda body: "[]",
        lambda body: _digest("[]"),
        lambda body: _digest("{}"),
        lambda body: body,  # the JSON without its digest line
        lambda body: json.dumps({**json.loads(body), "ops": json.loads(body)["ops"][:3]}),
        lambda body: _digest(body)[: len(body) // 2],  # cut short
        lambda body: _digest(body).replace('"ops"', '"opz"'),
        lambda body: "\udcff",
        _under_its_digest,
    ],
)
def test_a_damaged_cache_entry_is_ignored_and_rewritten(damage) -> None:
    fresh = cached_trace(SMALL)
    body = _entry().read_text(encoding="utf-8").split("\n", 1)[1]
    _entry().write_text(damage(body), encoding="utf-8", errors="surrogateescape")
    result = invoke(
        ["diagram", "--n-embd", "32", "--n-head", "4", "--n-kv-head", "2", "--seq", "6", "--batch", "2"]
    )
    assert result.exit_code == 0, result.stderr
    assert cache.load(SPEC, "probe", ()) == fresh


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache.cache_dir() == tmp_path / ".cache" / "blocktrace"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache.cache_dir() == tmp_path / ".cache" / "blocktrace"


def test_a_failed_cache_write_leaves_no_temporary_file_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(src: str, dst: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system", dst)

    monkeypatch.setattr(cache.os, "replace", fail)
    monkeypatch.setattr(cache, "_warned", False)
    result = invoke(["diagram", *TINY])
    assert result.exit_code == 0
    assert result.stderr.startswith("blocktrace: warning: cache not written: ")
    assert "Read-only file system" in result.stderr and result.stderr.count("\n") == 1
    assert list(cache.cache_dir().iterdir()) == []
    assert invoke(["diagram", *TINY, "--n-layer", "2"]).stderr == ""  # once per run, not per entry


def test_the_cache_is_kept_under_its_limit_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    cached_trace(SMALL)
    one = _entry().stat().st_size
    monkeypatch.setattr(cache, "MAX_BYTES", int(2.5 * one))
    configs = [replace(SMALL, batch=b) for b in (2, 3, 4, 5)]
    for i, config in enumerate(configs):
        cached_trace(config)
        os.utime(_entry(config), (1000 + i, 1000 + i))
    cache.trim(cache.MAX_BYTES)
    kept = [c.batch for c in configs if _entry(c).exists()]
    assert kept == [4, 5] and cache.info().size <= cache.MAX_BYTES


def test_the_cache_command_shows_and_clears() -> None:
    cached_trace(SMALL)
    info = invoke(["cache"])
    assert info.exit_code == 0
    assert f"folder:  {cache.cache_dir()}" in info.stdout and "entries: 1" in info.stdout
    assert invoke(["cache", "info"]).stdout == info.stdout
    cleared = invoke(["cache", "clear"])
    assert cleared.exit_code == 0 and cleared.stdout.startswith("removed 1 entry (")
    assert "entries: 0" in invoke(["cache"]).stdout
    purge = invoke(["cache", "purge"])
    assert purge.exit_code == 2 and purge.stderr.count("\n") == 1 and "purge" in purge.stderr
