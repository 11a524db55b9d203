import io
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from blocktrace.cli import app
from blocktrace.errors import TraceError
from blocktrace.output import formats
from blocktrace.pipeline import trace_config
from blocktrace.views.diagram.report import DiagramView
from tests.harness import TINY
from tests.models import SMALL

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result


def test_default_diagram_matches_the_reviewed_golden_file(golden) -> None:
    result = run("diagram")
    assert result.exit_code == 0, result.output
    golden("diagram_default.txt", result.stdout)


def test_default_markdown_with_formulas(golden) -> None:
    result = run("diagram", "--format", "markdown", "--formulas")
    assert result.exit_code == 0, result.output
    golden("diagram_default.md", result.stdout)


def test_a_flag_changes_the_drawing() -> None:
    c768 = run("diagram", "--shapes", "concrete").stdout
    c1024 = run("diagram", "--shapes", "concrete", "--n-embd", "1024", "--n-head", "8").stdout
    assert "(8, 1024, 3072)" in c768 and "4096" not in c768
    assert "(8, 1024, 4096)" in c1024 and "3072" not in c1024


@pytest.mark.parametrize(
    ("flags", "expected", "wrong"),
    [
        (["--n-embd", "1024", "--n-head", "8", "--seq", "1024"], "(B, T, 4C)", "(B, 4T, C)"),
        (["--n-embd", "64", "--n-head", "8", "--seq", "8"], "(B, T, H, D)", "(B, T, D, D)"),  # H == D == T
        (["--n-head", "6", "--n-kv-head", "6"], "(B, T, Hkv, D)", "(B, T, H, D) -> (B, T, H, D)\n"),
        (["--n-embd", "128", "--n-head", "4", "--batch", "4", "--seq", "4"], "(B, T, C)", "(T, B, C)"),
    ],
)
def test_symbols_stay_right_when_values_coincide(flags: list[str], expected: str, wrong: str) -> None:
    result = run("diagram", *flags)
    assert result.exit_code == 0, result.output
    assert expected in result.stdout
    assert wrong not in result.stdout


def test_kv_heads_are_named_apart_from_query_heads_even_when_equal() -> None:
    text = run("diagram", "--n-head", "6", "--n-kv-head", "6").stdout
    assert "c_q, view           (B, T, C) -> (B, T, H, D)" in text
    assert "c_k, view           (B, T, C) -> (B, T, Hkv, D)" in text


def test_shapes_both_and_concrete() -> None:
    both = run("diagram", *TINY, "--shapes", "both").stdout
    assert "(B, T, C)=(2, 6, 32)" in both
    concrete = run("diagram", *TINY, "--shapes", "concrete").stdout
    assert "(2, 6, 32)" in concrete and "(B, T, C)" not in concrete
    assert "n_embd" in both and "n_embd" not in concrete  # no legend where no symbol is drawn


def test_json_has_calls_ops_and_residual_adds() -> None:
    data = json.loads(run("diagram", *TINY, "--format", "json").stdout)
    assert data["schema"] == "blocktrace.trace" and data["version"] == 6
    assert [r["wraps"] for r in data["residual_adds"]] == [["attn"], ["mlp"]]
    assert data["residual_adds"][0]["stream"]["shape"] == [2, 6, 32]
    c_fc = next(c for c in data["calls"] if c["path"] == "mlp.c_fc")
    assert c_fc["outputs"][0]["symbols"] == ["B", "T", "4C"]
    assert c_fc["params"] == 32 * 128 and c_fc["trainable"] == 32 * 128
    assert c_fc["weights"] == [
        {"name": "weight", "shape": [128, 32], "trainable": True, "symbols": ["4C", "C"]}
    ]
    assert any(o["name"] == "scaled_dot_product_attention" for o in data["ops"])


def test_ascii_is_seven_bit_and_output_file_is_written(tmp_path) -> None:
    result = run("diagram", *TINY, "--ascii", "--formulas")
    assert result.exit_code == 0 and result.stdout.isascii()
    out = tmp_path / "block.txt"
    assert run("diagram", *TINY, "--output", str(out)).stdout == ""
    assert "┌" in out.read_text(encoding="utf-8")


def test_width_bounds_every_line() -> None:
    text = run("diagram", *TINY, "--width", "70").stdout
    diagram = text.split("\n\n")[1]
    assert max(len(line) for line in diagram.splitlines()) <= 70


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-embd", "770"], "n_embd (770) must be divisible by n_head (6)"),
        (["--n-head", "6", "--n-kv-head", "4"], "n_head (6) must be divisible by n_kv_head (4)"),
        (["--n-embd", "30", "--n-head", "2"], "must be even for rotary embeddings"),
        (["--n-embd", "0"], "--n-embd must be a whole number >= 1, not 0"),
        (["--seq", "-4"], "--seq must be a whole number >= 1, not -4"),
        (["--batch", "two"], "--batch must be a whole number >= 1, not 'two'"),
        (["--bogus"], "--bogus"),
        (["--format", "png"], "--format must be one of text, markdown, json, svg, html, not 'png'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(flags: list[str], message: str) -> None:
    result = run("diagram", *flags)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("blocktrace: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_version_and_help() -> None:
    assert run("--version").stdout.strip().startswith("blocktrace ")
    help_text = run("diagram", "--help").stdout
    for flag in ("--n-embd", "--n-kv-head", "--device", "--shapes", "--formulas", "--ascii", "--width"):
        assert flag in help_text


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_colour_only_in_a_terminal_and_never_with_no_color(monkeypatch) -> None:
    t = trace_config(SMALL)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    coloured = Terminal()
    formats.write(DiagramView(t, width=200), None, None, coloured)
    assert "\x1b[" in coloured.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    formats.write(DiagramView(t, width=200), None, None, plain)
    assert "\x1b[" not in plain.getvalue() and "(+)" in plain.getvalue()
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("FORCE_COLOR", "1")  # a pipe stays a pipe, whatever FORCE_COLOR says
    piped = io.StringIO()
    formats.write(DiagramView(t), None, None, piped)
    assert "\x1b[" not in piped.getvalue()


def test_unicode_falls_back_to_ascii_when_the_encoding_cannot_carry_it() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    formats.write(DiagramView(trace_config(SMALL)), None, None, stream)
    stream.seek(0)
    assert "+---" in stream.read()


def blocktrace(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "blocktrace", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def test_installed_command_pipes_plain_text_and_survives_head() -> None:
    result = blocktrace("diagram", *TINY)
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout and "(+)" in result.stdout
    pipe = subprocess.run(
        f"{sys.executable} -m blocktrace diagram --n-layer 40 {' '.join(TINY)} | head -3",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert pipe.returncode == 0
    assert len(pipe.stdout.splitlines()) == 3
    assert pipe.stderr == ""


def test_the_quick_exit_loses_nothing_and_keeps_the_exit_code(tmp_path) -> None:
    # a run that imported torch ends without Python's teardown: everything must be written by then
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    big = blocktrace("diagram", *TINY, "--n-layer", "40", "--no-collapse", "--no-cache", env=env)
    assert big.returncode == 0 and big.stderr == ""
    assert big.stdout == run("diagram", *TINY, "--n-layer", "40", "--no-collapse", "--no-cache").stdout
    assert big.stdout.count("(+)") == 80 and big.stdout.endswith("head dim, C / H\n")
    out = tmp_path / "block.json"
    written = blocktrace("diagram", *TINY, "--format", "json", "-o", str(out), env=env)
    assert written.returncode == 0 and json.loads(out.read_text())["version"] == 6
    failed = blocktrace("diagram", *TINY, "--device", "cuda", env={**env, "CUDA_VISIBLE_DEVICES": ""})
    assert failed.returncode == 2 and failed.stderr.startswith("blocktrace: error: --device cuda")


def test_a_run_without_torch_ends_as_quickly_and_loses_nothing(tmp_path) -> None:
    # help, a refused flag and a trace read from the cache never import torch; they too end without
    # Python's teardown, so each must have written everything, as typer alone writes it, by then
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "80"}
    alone = [sys.executable, "-c", "import sys; from blocktrace.cli.app import app; sys.argv[0] = 'x'; app()"]
    for args in (["diagram", "--help"], ["--help"], ["diagram", "--seq", "-1"]):
        quick = blocktrace(*args, env=env)
        torn_down = subprocess.run([*alone, *args], capture_output=True, text=True, env=env, check=False)
        assert (quick.returncode, quick.stdout, quick.stderr) == (
            torn_down.returncode,
            torn_down.stdout,
            torn_down.stderr,
        )
        assert quick.stdout.endswith("\n") if quick.returncode == 0 else quick.stderr.count("\n") == 1
    traced = blocktrace("diagram", *TINY, env=env)
    cached = blocktrace("diagram", *TINY, env=env)  # from the cache: no torch
    assert (cached.returncode, cached.stdout, cached.stderr) == (0, traced.stdout, "")


def test_a_stack_is_drawn_once_unless_asked_otherwise() -> None:
    collapsed = run("diagram", *TINY, "--n-layer", "3").stdout
    assert "[h.0 … h.2: Block × 3]" in collapsed and collapsed.count("(+)") == 2
    expanded = run("diagram", *TINY, "--n-layer", "3", "--no-collapse").stdout
    assert "[h.2: Block]" in expanded and expanded.count("(+)") == 6
    data = json.loads(run("diagram", *TINY, "--n-layer", "3", "--format", "json").stdout)
    assert len(data["residual_adds"]) == 6 and sum(c["type"] == "Block" for c in data["calls"]) == 3


def test_cuda_without_a_gpu_is_a_one_line_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda runs")
    result = run("diagram", *TINY, "--device", "cuda")
    assert result.exit_code == 2
    expected = "blocktrace: error: --device cuda: this torch build or machine has no CUDA device"
    assert result.stderr.strip() == expected


def test_a_real_run_too_big_for_this_machine_is_refused_in_one_line() -> None:
    big = ["--n-embd", "8192", "--n-head", "64", "--seq", "131072", "--batch", "1", "--n-layer", "1000"]
    result = run("diagram", *big, "--device", "cpu")
    assert result.exit_code == 2
    assert "GiB" in result.stderr and "--device probe" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_memory_guard_counts_what_the_forward_allocates(monkeypatch) -> None:
    import blocktrace.models.memory_guard
    import blocktrace.tracing.tracer

    # 2 GiB free; tiny weights (64 wide) and an input of 256 MiB, but every (B, T, C) the forward
    # makes on top of it: about 28 times the input
    monkeypatch.setattr(blocktrace.models.memory_guard, "available_bytes", lambda device: 2 * 2**30)
    real_trace = blocktrace.tracing.tracer.trace

    def no_big_runs(module: object, args: tuple = (), *rest: object, **kwargs: object) -> object:
        assert args[0].shape[1] < 2**20, "the guard let a run through that does not fit"
        return real_trace(module, args, *rest, **kwargs)

    monkeypatch.setattr(blocktrace.tracing.tracer, "trace", no_big_runs)
    long = ["--n-embd", "64", "--n-head", "4", "--seq", str(2**20), "--batch", "1", "--no-cache"]
    result = run("diagram", *long, "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert "input and every tensor the forward creates take up to" in result.stderr
    assert "over the 2.0 GiB available" in result.stderr
    needed = float(result.stderr.split("take up to ")[1].split(" GiB")[0])
    assert needed > 20 * (2**20 * 64 * 4) / 2**30  # far more than the weights and the input alone
    fits = run("diagram", "--n-embd", "64", "--n-head", "4", "--seq", "64", "--batch", "1", "--device", "cpu")
    assert fits.exit_code == 0, fits.output


def test_a_failed_forward_is_one_line_and_exit_1(monkeypatch) -> None:
    import blocktrace.pipeline

    message = "forward failed in attn.c_q (Linear): mat1 and mat2 shapes cannot be multiplied"

    def broken(*args: object, **kwargs: object) -> None:
        raise TraceError(message)

    monkeypatch.setattr(blocktrace.pipeline, "trace_spec", broken)
    result = run("diagram", *TINY, "--no-cache")
    assert result.exit_code == 1
    assert result.stderr == f"blocktrace: error: {message}\n"
