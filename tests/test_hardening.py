"""Issue 9: every failure one line, nothing half-written, output independent of the terminal.

Each test here failed before its fix. The CLI runs in-process through tests/harness.py, which lets
a traceback escape (and fail the test) instead of catching it, and can give the command a full, a
closed, a broken or an ASCII-only stdout.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from blocktrace.output import sink as output
from blocktrace.pipeline import cached_trace
from tests.harness import ANSI, TINY, invoke, one_error, tiny_llama

pytestmark = pytest.mark.usefixtures("module_cache")  # TINY drawn a hundred ways, traced once

# --- --output: bad paths are exit 2, failed writes exit 1, and nothing is half-written ----------


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("missing/folder/out.txt", 2, ["folder does not exist"]),
        ("", 2, ["--output is empty"]),
        (".", 2, ["is a folder"]),
        ("sub/", 2, ["names a folder"]),
        ("afile/out.txt", 2, ["not a folder"]),
        ("/dev/full", 1, ["no space left"]),
    ],
)
def test_an_output_that_cannot_be_written_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, code: int, words: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    for command in ("diagram", "table"):
        one_error(invoke([command, *TINY, "-o", path]), code, *words)


def test_an_unwritable_folder_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: object, **kwargs: object):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(output.tempfile, "mkstemp", denied)  # root may write anywhere: pretend
    one_error(
        invoke(["diagram", *TINY, "--no-cache", "-o", str(tmp_path / "out.txt")]), 2, "permission denied"
    )


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "block.txt"
    target.write_text("the old diagram\n")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd: int, mode: str):
            self.file = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, data: bytes) -> int:
            self.file.write(data[:4096])  # half of it, as a full disk does
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output.os, "fdopen", FullDisk)
    for command in ("diagram", "table"):
        one_error(invoke([command, *TINY, "--no-cache", "-o", str(target)]), 1, "no space left")
        assert target.read_text() == "the old diagram\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["block.txt"]


def test_ctrl_c_during_a_write_leaves_nothing_and_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(output.os, "replace", interrupted)
    result = invoke(["diagram", *TINY, "--no-cache", "-o", str(tmp_path / "out.txt")])
    assert result.exit_code == 130 and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_output_is_written_whole_with_the_mode_a_new_file_gets(tmp_path: Path) -> None:
    target = tmp_path / "block.json"
    for command in ("diagram", "table"):
        assert invoke([command, *TINY, "--format", "json", "-o", str(target)]).exit_code == 0
        assert json.loads(target.read_text())["model"] == "Block"
        assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_dash_is_stdout_and_table_takes_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for command in ("diagram", "table", "source"):
        result = invoke([command, *TINY, "-o", "-"])
        assert result.exit_code == 0 and "(B, T, C)" in result.stdout
    assert list(tmp_path.iterdir()) == []
    assert invoke(["table", *TINY, "--format", "csv", "-o", "t.csv"]).stdout == ""
    assert (tmp_path / "t.csv").read_text().startswith("depth,name,kind")


# --- stdout: full, closed, broken; exit codes ---------------------------------------------------


@pytest.mark.parametrize(
    "args", [["diagram", *TINY], ["table", *TINY], ["source", *TINY], ["--help"], ["--version"]]
)
def test_a_full_stdout_is_one_line_and_exit_1(args: list[str]) -> None:
    one_error(invoke(args, stdout="full"), 1, "cannot write to stdout", "No space left")


@pytest.mark.parametrize(
    "args", [["diagram", *TINY], ["table", *TINY], ["source", *TINY], ["--help"], ["--version"]]
)
def test_a_closed_stdout_is_one_line_and_exit_1(args: list[str]) -> None:
    one_error(invoke(args, stdout="closed"), 1, "stdout is closed")


@pytest.mark.parametrize(
    "args", [["diagram", *TINY], ["table", *TINY], ["source", *TINY], ["--help"], ["cache"]]
)
def test_a_reader_that_went_away_is_success(args: list[str]) -> None:
    result = invoke(args, stdout="broken")
    assert (result.exit_code, result.stderr) == (0, "")


def _shell(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        f"set -o pipefail; {command}", shell=True, capture_output=True, text=True, check=False,
        executable="/bin/bash",
    )  # fmt: skip


def test_real_pipes_and_redirections() -> None:
    python = f"{sys.executable} -m blocktrace"
    tiny = " ".join(TINY)
    assert _shell(f"{python} diagram {tiny} --n-layer 30 --no-collapse | true").returncode == 0
    for command in (f"diagram {tiny}", "--help", "--version"):
        full = _shell(f"{python} {command} > /dev/full")
        assert full.returncode == 1 and full.stderr.count("\n") == 1, full.stderr
        closed = _shell(f"{python} {command} >&-")
        assert closed.returncode == 1 and closed.stderr.count("\n") == 1, closed.stderr
        assert "Traceback" not in full.stderr + closed.stderr


def test_ctrl_c_is_130(monkeypatch: pytest.MonkeyPatch) -> None:
    import blocktrace.pipeline

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(blocktrace.pipeline, "trace_spec", interrupted)
    assert invoke(["diagram", *TINY, "--no-cache"]).exit_code == 130


def test_a_mistyped_command_is_suggested_once() -> None:
    line = one_error(invoke(["digram"]), 2, "No such command 'digram'")
    assert line.count("Did you mean") == 1


@pytest.mark.parametrize("stray", ["", " ", "x"])
def test_a_stray_argument_is_named(stray: str) -> None:
    one_error(invoke(["diagram", stray]), 2, f"unexpected argument {stray!r}")


def test_dash_h_is_help() -> None:
    for args in (["-h"], ["diagram", "-h"], ["table", "-h"], ["cache", "-h"]):
        result = invoke(args)
        assert result.exit_code == 0 and "Usage: blocktrace" in result.stdout


def test_width_help_keeps_its_default_and_help_is_ascii() -> None:
    text = " ".join(invoke(["diagram", "--help"], env={"COLUMNS": "80"}).stdout.split())
    assert "Default: the terminal's width, else no limit." in text
    for args in (["--help"], ["diagram", "--help"], ["table", "--help"], ["cache", "--help"]):
        result = invoke(args, encoding="ascii")
        assert result.exit_code == 0 and result.stderr == ""


def test_help_paragraphs_are_filled_not_broken_mid_sentence() -> None:
    text = invoke(["diagram", "--help"], env={"COLUMNS": "60"}).stdout
    paragraph = text.split("\n\n")[2].splitlines()  # "The input x (B, T, C) enters at the top; ..."
    assert paragraph[0].strip().startswith("The input x (B, T, C)")
    assert all(len(line) <= 60 for line in paragraph)
    assert all(len(line) >= 45 for line in paragraph[:-1]), paragraph


# --- encodings and terminals ---------------------------------------------------------------------


def test_an_ascii_stdout_gets_markdown_with_entities() -> None:
    result = invoke(["table", *TINY, "--format", "markdown"], encoding="ascii")
    assert result.exit_code == 0, result.stderr
    assert "| &nbsp;&nbsp;attn |" in result.stdout
    utf8 = invoke(["table", *TINY, "--format", "markdown"]).stdout
    assert "| \u00a0\u00a0attn |" in utf8


@pytest.mark.parametrize(
    "args", [["diagram", "--format", "markdown"], ["table"], ["diagram"], ["table", "--format", "markdown"]]
)
def test_force_color_does_not_change_what_a_pipe_gets(args: list[str]) -> None:
    plain = invoke([*args, *TINY], env={"FORCE_COLOR": None, "COLUMNS": None})
    forced = invoke([*args, *TINY], env={"FORCE_COLOR": "1", "COLUMNS": "40", "TERM": "xterm-256color"})
    assert forced.stdout == plain.stdout and ANSI not in forced.stdout


# --- warnings and the cost of --help ---------------------------------------------------------------


def test_importing_the_cli_warns_nothing_even_outside_pytest() -> None:
    command = [sys.executable, "-W", "error", "-c", "import blocktrace.cli"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_help_imports_neither_rich_markdown_nor_torch() -> None:
    code = (
        "import sys\n"
        "from blocktrace.cli import app\n"
        "try:\n"
        "    app(['diagram', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('rich.markdown', 'markdown_it', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


# --- fitting the terminal: the table, the diagram's notes, --width ---------------------------------


def _fitted_table(width: int) -> str:
    from io import StringIO

    from rich.console import Console

    from blocktrace.models.block.config import BlockConfig
    from blocktrace.views.steps import StepTree
    from blocktrace.views.table.build import build_table
    from blocktrace.views.table.render import print_text

    buffer = StringIO()
    table = build_table(StepTree(cached_trace(BlockConfig())))
    print_text(table, Console(file=buffer, force_terminal=True, color_system=None, width=width))
    return buffer.getvalue()


@pytest.mark.parametrize("width", [200, 120, 100, 80, 60, 40])
def test_a_terminal_table_fits_and_never_cuts_a_number(width: int) -> None:
    import re

    from blocktrace.models.block.config import BlockConfig
    from blocktrace.views.steps import StepTree
    from blocktrace.views.table.build import build_table
    from blocktrace.views.table.render import to_text

    text = _fitted_table(width)
    rows = text.splitlines()[: -4 - 1]  # the footer wraps on its own
    full = to_text(build_table(StepTree(cached_trace(BlockConfig()))))
    numbers = set(re.findall(r"\d{1,3}(?:,\d{3})+", full.split("parameters:")[0]))
    shown = set(re.findall(r"\d{1,3}(?:,\d{3})+", text.split("parameters:")[0]))
    assert {n for n in numbers if len(n) > 7} <= shown  # params and FLOPs stay whole
    assert not any(re.search(r"\d…|,…", line) for line in rows)
    if width >= 80:
        assert max(len(line) for line in rows) <= width
        assert "input -> output" in rows[0] and "params" in rows[0] and "FLOPs" in rows[0]


def test_the_table_leaves_out_columns_in_the_stated_order() -> None:
    from blocktrace.models.block.config import BlockConfig
    from blocktrace.views.steps import StepTree
    from blocktrace.views.table.build import build_table
    from blocktrace.views.table.render import DROP_ORDER, HEADERS, fit

    table = build_table(StepTree(cached_trace(BlockConfig())))
    assert fit(table).columns == HEADERS
    natural = fit(table).width
    seen = []
    for width in range(natural, 60, -1):
        columns = fit(table, width=width).columns
        assert set(HEADERS) - set(DROP_ORDER) <= set(columns)
        gone = [h for h in DROP_ORDER if h not in columns]
        if gone != seen:
            assert gone == list(DROP_ORDER[: len(gone)]), gone
            seen = gone
    assert seen == list(DROP_ORDER)


def test_a_pipe_gets_the_whole_table_whatever_columns_says() -> None:
    wide = invoke(["table", *TINY], env={"COLUMNS": "200"}).stdout
    narrow = invoke(["table", *TINY], env={"COLUMNS": "40", "FORCE_COLOR": "1"}).stdout
    assert wide == narrow and "weight" in narrow and ANSI not in narrow


def test_the_diagram_at_80_columns_wraps_notes_instead_of_cutting_shapes() -> None:
    text = invoke(["diagram", "--width", "80"]).stdout
    drawing = text.split("\n\n")[1].splitlines()
    assert max(len(line) for line in drawing) <= 80
    assert "…" not in "\n".join(drawing)
    assert "(B, T, Hkv, D)" in text and "-> (B, Hkv, T, D)" in text
    terminal = invoke(["diagram"], stdout="terminal", env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert terminal.stdout == text


@pytest.mark.parametrize("width", range(20, 40))
def test_a_width_is_kept_or_refused_never_drawn_through_the_boxes(width: int) -> None:
    result = invoke(["diagram", *TINY, "--width", str(width)])
    if result.exit_code == 2:
        one_error(result, 2, f"--width {width} is too narrow", "needs at least")
        return
    assert result.exit_code == 0, result.stderr
    drawing = result.stdout.split("\n\n")[1].splitlines()
    assert max(len(line) for line in drawing) <= width
    assert "┼" not in result.stdout
    boxes = [line for line in drawing if "┌" in line]
    assert boxes and all(line.startswith("  ┌" + "─" * 21 + "┐") for line in boxes)


def test_a_narrow_terminal_is_drawn_as_narrow_as_it_can_be() -> None:
    result = invoke(["diagram", *TINY], stdout="terminal", env={"COLUMNS": "20", "NO_COLOR": "1"})
    assert result.exit_code == 0 and "┼" not in result.stdout


# --- the text says what the program does ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_the_dtype_is_on_the_page(fmt: str) -> None:
    for dtype in ("float32", "bfloat16"):
        text = invoke(["diagram", *TINY, "--dtype", dtype, "--format", fmt]).stdout
        assert f"Block ({dtype}): " in text.splitlines()[0]


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_formulas_name_no_symbol_the_page_does_not_define(fmt: str) -> None:
    # user code may have no head dim D: the attention's definition says what its d is
    text = invoke(["diagram", *TINY, "--shapes", "concrete", "--formulas", "--format", fmt]).stdout
    assert "sqrt(d) + mask) v, d = q's last dim" in text and "sqrt(D)" not in text
    assert "D   = 8" not in text and "| D | 8 |" not in text  # no symbols on the page, no legend
    symbolic = invoke(["diagram", *TINY, "--formulas", "--format", fmt]).stdout
    assert "D   = 8" in symbolic or "| D | 8 |" in symbolic


def test_format_help_says_formulas_need_the_flag() -> None:
    text = " ".join(invoke(["diagram", "--help"]).stdout.split())
    assert "(and the formulas, with --formulas)" in text


# --- -o targets: descriptors, devices and FIFOs written straight through, checked before tracing ---


def _no_temporary_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("spelling", ["/dev/fd/{fd}", "/proc/self/fd/{fd}", "link"])
def test_a_descriptor_opened_for_appending_is_appended_to(tmp_path: Path, spelling: str) -> None:
    # `-o /dev/stdout >> log.txt`: the descriptor is written, not the file behind it replaced
    log = tmp_path / "log.txt"
    log.write_text("earlier\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        name = spelling.format(fd=fd)
        if spelling == "link":  # a symlink to the descriptor, as /dev/stdout is to /proc/self/fd/1
            (tmp_path / "link").symlink_to(f"/proc/self/fd/{fd}")
            name = str(tmp_path / "link")
        for _ in range(2):
            assert invoke(["diagram", *TINY, "-o", name]).exit_code == 0
    finally:
        os.close(fd)
    text = log.read_text()
    assert text.startswith("earlier\n") and text.count("Block (float32)") == 2, text
    _no_temporary_files(tmp_path)


def test_a_pipe_given_as_a_descriptor_is_written(tmp_path: Path) -> None:
    # `-o >(cat)` is /dev/fd/63, a pipe: it has no folder to put a temporary file in
    read, write = os.pipe()
    try:
        assert invoke(["diagram", *TINY, "-o", f"/dev/fd/{write}"]).exit_code == 0
        os.close(write)
        with os.fdopen(read, "rb") as f:
            assert b"Block (float32)" in f.read()
    finally:
        with contextlib.suppress(OSError):
            os.close(write)


def test_the_shell_s_own_appending_keeps_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text("earlier\n")
    command = [sys.executable, "-m", "blocktrace", "diagram", *TINY, "-o", "/dev/stdout"]
    shell = " ".join(command)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for line in (f"{shell} >> log.txt", f"{shell} | cat >> log.txt"):
        done = subprocess.run(["sh", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0 and not done.stderr, done.stderr
    assert log.read_text().startswith("earlier\n") and log.read_text().count("Block (float32)") == 2
    _no_temporary_files(tmp_path)


def test_a_descriptor_not_open_is_exit_2() -> None:
    one_error(invoke(["diagram", *TINY, "-o", "/dev/fd/987"]), 2, "descriptor 987 is not open")


def test_a_fifo_is_written_through_without_a_temporary_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = invoke(["diagram", *TINY, "-o", str(fifo)])
    reader.join(timeout=60)
    assert result.exit_code == 0, result.stderr
    assert b"Block (float32)" in got[0]
    _no_temporary_files(tmp_path)


@pytest.mark.parametrize("target", ["own", "/proc/version"])
def test_a_read_only_file_is_refused_as_a_shell_refuses_it(tmp_path: Path, target: str) -> None:
    path = tmp_path / "block.txt"
    if target == "own":
        path.write_text("kept\n")
        path.chmod(0o444)
    name = str(path) if target == "own" else target
    one_error(invoke(["diagram", *TINY, "-o", name]), 2, "read-only")
    if target == "own":
        assert path.read_text() == "kept\n"
    _no_temporary_files(tmp_path)


USER_CODE = """
import os, torch
from torch import nn
open({marker!r}, "w").close()
os.chdir({elsewhere!r})

def block(B=2, T=3, C=8):
    return nn.Linear(C, C), (torch.randn(B, T, C),)
"""


def test_o_is_checked_and_resolved_before_any_user_code_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker, elsewhere = tmp_path / "ran", tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = tmp_path / "user.py"
    code.write_text(USER_CODE.format(marker=str(marker), elsewhere=str(elsewhere)))
    monkeypatch.chdir(tmp_path)
    module = ["--module", f"{code}:block", "--no-cache"]
    one_error(invoke(["table", *module, "-o", "missing/t.txt"]), 2, "folder does not exist")
    assert not marker.exists()  # refused before the user's code ran
    assert invoke(["table", *module, "-o", "t.txt"]).exit_code == 0
    assert marker.exists() and (tmp_path / "t.txt").exists() and not (elsewhere / "t.txt").exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_term_and_hup_in_the_write_leave_the_target_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int, code: int
) -> None:
    target = tmp_path / "block.txt"
    target.write_text("the old diagram\n")
    real_replace = os.replace

    def signalled(src: str, dst: str) -> None:
        os.kill(os.getpid(), signum)  # arrives between the temporary file's write and its rename
        real_replace(src, dst)

    monkeypatch.setattr(output.os, "replace", signalled)
    previous = signal.getsignal(signum)
    result = invoke(["diagram", *TINY, "-o", str(target)])
    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr
    assert target.read_text() == "the old diagram\n"
    _no_temporary_files(tmp_path)
    assert signal.getsignal(signum) is previous  # the handler blocktrace set is taken back


# --- the gate: config sizes and flags refused before torch sees them, user code's exits caught -----

LLAMA = tiny_llama(num_hidden_layers=1)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("hidden_size", 0, "hidden_size must be at least 1"),
        ("head_dim", 0, "head_dim must be at least 1"),
        ("rope_theta", "fast", "rope_theta must be a number above 0"),
        ("hidden_size", -48, "hidden_size must be at least 1"),
        ("hidden_size", 2**40, "over torch's limit"),
        ("intermediate_size", 0, "intermediate_size must be at least 1"),
        ("vocab_size", 0, "vocab_size must be at least 1"),
        ("num_attention_heads", 0, "num_attention_heads must be at least 1"),
        ("num_key_value_heads", "two", "num_key_value_heads must be a whole number"),
    ],
)
def test_a_bad_config_field_is_named_in_one_line(
    tmp_path: Path, field: str, value: object, words: str
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, field: value}))
    for device in ("probe", "cpu"):
        one_error(invoke(["diagram", "--hf", str(tmp_path), "--device", device, "--no-cache"]), 2, words)


@pytest.mark.parametrize(
    ("body", "words"), [("null", "not null"), ("[1]", "not a list"), ("[" * 100_000, "not JSON")]
)
def test_a_config_json_that_is_no_object_is_one_line(tmp_path: Path, body: str, words: str) -> None:
    (tmp_path / "config.json").write_text(body)
    one_error(invoke(["diagram", "--hf", str(tmp_path), "--no-cache"]), 2, words)


def test_a_dim_over_torch_s_limit_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the user's code moves to `elsewhere` as it is imported: taken back after
    (tmp_path / "m.py").write_text(USER_CODE.format(marker=str(tmp_path / "ran"), elsewhere=str(tmp_path)))
    one_error(
        invoke(["diagram", "--module", f"{tmp_path / 'm.py'}:block", "--dim", f"T={2**70}"]), 2, "--dim"
    )


FAILING = """
import sys, torch
from torch import nn
{at_import}

class Half(nn.Module):
    def __init__(self):
        pass  # no super().__init__()

class Exits(nn.Module):
    def forward(self, x):
        {in_forward}

def exits(B=2, T=3, C=8):
    return Exits(), (torch.randn(B, T, C),)

def five(B=2, T=3, C=8):
    return nn.Linear(C, C), 5

def nothing(B=2, T=3, C=8):
    return nn.Linear(C, C), None

def half(B=2, T=3, C=8):
    return Half(), (torch.randn(B, T, C),)
"""


@pytest.mark.parametrize(
    ("at_import", "in_forward", "name", "code", "words"),
    [
        ("sys.exit(0)", "return x", "exits", 1, "SystemExit: 0"),
        ("sys.exit('text')", "return x", "exits", 1, "SystemExit: text"),
        ("raise GeneratorExit('gone')", "return x", "exits", 1, "GeneratorExit: gone"),
        ("", "sys.exit(3)", "exits", 1, "SystemExit: 3"),
        ("", "raise SystemExit(5)", "exits", 1, "SystemExit: 5"),
        ("", "raise BaseException('odd')", "exits", 1, "BaseException: odd"),
        ("", "return x", "five", 2, "the args it returned are int"),
        ("", "return x", "nothing", 2, "the args it returned are NoneType"),
        ("", "return x", "half", 2, "does not call super().__init__()"),
    ],
)
def test_user_code_that_exits_or_returns_nonsense_is_one_line(
    tmp_path: Path, at_import: str, in_forward: str, name: str, code: int, words: str
) -> None:
    path = tmp_path / f"user_{abs(hash((at_import, in_forward)))}.py"
    path.write_text(FAILING.format(at_import=at_import, in_forward=in_forward))
    for device in ("probe", "cpu"):
        one_error(
            invoke(["table", "--module", f"{path}:{name}", "--device", device, "--no-cache"]), code, words
        )


def test_kwargs_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    deep = '{"a": ' * 50_000 + "1" + "}" * 50_000
    one_error(
        invoke(["diagram", "--module", "torch.nn:Linear", "--input", "2,8", "--kwargs", deep]), 2, "--kwargs"
    )


def test_torch_that_cannot_be_imported_is_one_line(tmp_path: Path) -> None:
    # a shell's `ulimit -v 200000` breaks torch's import with an ImportError
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        "raise ImportError('libtorch_cpu.so: failed to map segment')"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "blocktrace", "diagram", *TINY], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("blocktrace: error: cannot import torch: libtorch_cpu.so"), done.stderr


def test_a_batch_whose_storage_overflows_int64_is_exit_2(tmp_path: Path) -> None:
    # 2**40 x 6 heads x 1024**2 scores is within int64 as elements, not as bytes: the meta kernel's words
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    for model in (["--hf", str(tmp_path)], []):
        result = invoke(["diagram", *model, "--batch", str(2**40), "--device", "meta", "--no-cache"])
        one_error(result, 2, "int64 limit")
