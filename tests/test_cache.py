import os
import subprocess
import sys
from dataclasses import replace

from blocktrace import cache
from blocktrace.pipeline import cached_trace, trace_config
from blocktrace.spec import BlockSpec
from tests.models import SMALL

SPEC = BlockSpec(SMALL)

TINY = ["--n-embd", "32", "--n-head", "4", "--seq", "6", "--batch", "2"]


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


def test_every_part_of_the_request_is_in_the_key(monkeypatch) -> None:
    base = cache.key(SPEC, "probe", ())
    assert cache.key(BlockSpec(replace(SMALL, seq=7)), "probe", ()) != base
    assert cache.key(SPEC, "meta", ()) != base
    assert cache.key(SPEC, "probe", ("attn.*",)) != base
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
