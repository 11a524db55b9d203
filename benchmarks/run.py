"""Time whole processes: blocktrace, the `import torch` floor, and torchinfo / torchview as peers.

Each command runs as its own child process with stdout to /dev/null, several times, interleaved
round-robin with all the others so that drift (thermal, page cache, neighbours) touches every row
alike. For each row: median wall time, min-max, the ratio to the floor's median, and the peak
resident memory of the child (ru_maxrss from os.wait4), also as a difference to the floor's.

    python benchmarks/run.py                 # the full table, 2-3 minutes on 2 cores
    python benchmarks/run.py --quick         # 2 runs, no warm-up
    python benchmarks/run.py --markdown      # for docs/performance.md, with machine and versions
    python benchmarks/run.py --only help     # the floor plus the rows whose label contains "help"

Only the standard library here: the harness never imports torch, so it adds nothing to what it measures.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "benchmarks" / "peers"
PY = sys.executable
BLOCKTRACE = (PY, "-m", "blocktrace")
FLOOR_LABEL = 'python -c "import torch"'
# the floor of anything that builds a transformers model: --hf rows and their peers are measured against it
HF_FLOOR_LABEL = 'python -c "import torch; from transformers import LlamaForCausalLM"'
HF_LLAMA_70B = "docs/examples/llama-70b"  # hidden 8192, 64 heads, 8 KV heads, F 28672, 80 layers, V 128256


@dataclass(frozen=True)
class Config:
    """A Block config as command-line flags, shared by blocktrace and the peer scripts."""

    name: str
    flags: tuple[str, ...] = ()


DEFAULT = Config("default")  # B=8 T=1024 C=768 H=6: GPT-2 size
LLAMA_70B = Config(
    "70B", ("--n-embd", "8192", "--n-head", "64", "--n-kv-head", "8", "--seq", "131072", "--batch", "1")
)
STACK_70B = Config("70B x 80 layers", (*LLAMA_70B.flags, "--n-layer", "80"))
# Every Block family at 70B-class sizes, alone and 80 deep. A fused qkv projects as many key/value
# heads as query heads, so gpt2 and neox run with --n-kv-head 64.
_MHA_70B = ("--n-embd", "8192", "--n-head", "64", "--n-kv-head", "64", "--seq", "131072", "--batch", "1")
PRESETS_70B = tuple(
    Config(f"{name} 70B{depth}", ("--preset", name, *flags, *layers))
    for name, flags in (
        ("gpt2", _MHA_70B),
        ("llama", (*LLAMA_70B.flags, "--mlp-hidden", "28672")),
        ("neox", _MHA_70B),
        ("bert", LLAMA_70B.flags),
    )
    for depth, layers in (("", ()), (" x 80 layers", ("--n-layer", "80")))
)


@dataclass(frozen=True)
class Command:
    """One row of the table: a command line, or the reason it is not run."""

    label: str
    argv: tuple[str, ...]
    skip: str | None = None  # why this row is not run, shown instead of numbers
    prime: bool = False  # run once untimed before the rounds even without warm-up (fills a cache)
    real: Config | None = None  # runs on real tensors of this config: skipped when they would not fit
    note: str = ""  # shown in the note column when the row ran
    floor: str | None = None  # the label of a second floor: the note gives the ratio of medians to it


@dataclass(frozen=True)
class Sample:
    """One run of one command."""

    wall_s: float
    max_rss_kib: int
    exit_code: int  # negative: killed by that signal
    reason: str = ""  # the last line of stderr when the run failed
    # Linux starts a child's ru_maxrss at its parent's peak RSS (the memory map it is forked from), so a
    # child that never grows past the harness's own peak shows that peak: then we know only an upper bound.
    rss_is_bound: bool = False
    cpu_s: float = 0.0  # the child's own CPU time, user + system, from wait4: steadier than wall time


@dataclass
class Result:
    """All runs of one command; `failure` is set at the first failed run, after which it is not run again."""

    command: Command
    samples: list[Sample] = field(default_factory=list)
    failure: str | None = None
    max_runs: int | None = None  # fewer timed runs than the others: its warm-up run was slow

    @property
    def ok(self) -> bool:
        return self.command.skip is None and self.failure is None and bool(self.samples)

    @property
    def times(self) -> list[float]:
        return [s.wall_s for s in self.samples]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def peak_rss_mib(self) -> float:
        return max(s.max_rss_kib for s in self.samples) / 1024

    @property
    def rss_is_bound(self) -> bool:
        return any(s.rss_is_bound for s in self.samples)

    @property
    def note(self) -> str:
        if self.command.skip is not None:
            return f"skipped ({self.command.skip})"
        if self.failure is not None:
            return f"failed: {self.failure}"
        fewer = f"{len(self.samples)} runs (slow)" if self.max_runs is not None else ""
        return "; ".join(n for n in (self.command.note, fewer) if n)


# ---------------------------------------------------------------------------------------- running


def child_env(cache_dir: str) -> dict[str, str]:
    """The environment of every child: this checkout first on the path, and a private cache dir."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["XDG_CACHE_HOME"] = cache_dir  # a cache of traces must not leak in from, or out to, the user's
    # an installed package runs from bytecode; let the warm-up write blocktrace's (a gitignored __pycache__)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def describe_exit(exit_code: int, stderr_line: str, timed_out: bool) -> str:
    if timed_out:
        return "timed out"
    if exit_code < 0:
        name = signal.Signals(-exit_code).name
        hint = " (out of memory?)" if exit_code == -signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return stderr_line or f"exit code {exit_code}"


def run_once(argv: Sequence[str], env: dict[str, str], timeout_s: float) -> Sample:
    """Run `argv` as a child process; its wall time and, from wait4, its own peak RSS."""
    harness_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryFile() as stderr_file:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file, env=env, cwd=REPO
        )
        timed_out = threading.Event()
        timer = threading.Timer(timeout_s, lambda: (timed_out.set(), proc.kill()))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = exit_code = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        reason = ""
        if exit_code != 0:
            stderr_file.seek(0)
            reason = describe_exit(exit_code, last_line(stderr_file.read()), timed_out.is_set())
    return Sample(
        wall_s=wall,
        max_rss_kib=usage.ru_maxrss,
        exit_code=exit_code,
        reason=reason,
        rss_is_bound=usage.ru_maxrss <= harness_peak_kib,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )


def record(result: Result, sample: Sample, timed: bool) -> None:
    """Keep a timed run's sample; a failed run, timed or not, marks the row failed."""
    if sample.exit_code != 0:
        result.failure = sample.reason
    elif timed:
        result.samples.append(sample)


@dataclass(frozen=True)
class Schedule:
    """How often to run each row."""

    runs: int  # timed runs per row
    warmup: int  # untimed runs per row before them
    slow_s: float  # a row whose warm-up run takes longer than this ...
    slow_runs: int  # ... gets only this many timed runs, to keep the whole benchmark short
    timeout_s: float  # one run longer than this is killed, and its row fails


def run_rounds(results: list[Result], schedule: Schedule, env: dict[str, str]) -> None:
    """Warm up, then timed rounds; each round runs every live row once, starting one row later.

    A row with `prime` gets one untimed run even when there is no warm-up. A row that fails is not
    run again.
    """
    active = [r for r in results if r.command.skip is None]
    start = time.perf_counter()
    warm = schedule.warmup
    warmups = max(warm, 1) if any(r.command.prime for r in active) else warm
    for n in range(warmups):
        progress(f"warm-up {n + 1}/{warmups}", start)
        for result in active:
            if result.failure is None and (n < warm or result.command.prime):
                sample = run_once(result.command.argv, env, schedule.timeout_s)
                record(result, sample, timed=False)
                if n < warm and sample.wall_s > schedule.slow_s and schedule.slow_runs < schedule.runs:
                    result.max_runs = schedule.slow_runs
    for n in range(schedule.runs):
        progress(f"round {n + 1}/{schedule.runs}", start)
        shift = n % len(active)
        for result in active[shift:] + active[:shift]:
            if result.failure is None and len(result.samples) < (result.max_runs or schedule.runs):
                record(result, run_once(result.command.argv, env, schedule.timeout_s), timed=True)
    progress("done", start, final=True)


def progress(message: str, since: float | None = None, final: bool = False) -> None:
    """A status line on stderr: rewritten in place on a terminal, one line each otherwise."""
    if since is not None:
        message = f"[{time.perf_counter() - since:4.0f} s] {message}"
    if sys.stderr.isatty():
        print(f"\r\033[K{message}", end="\n" if final else "", file=sys.stderr, flush=True)
    else:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- the rows


def blocktrace_help(env: dict[str, str], *args: str) -> str:
    """The help text of a blocktrace command, or "" if it cannot be run."""
    proc = subprocess.run(
        [*BLOCKTRACE, *args, "--help"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        cwd=REPO,
        check=False,
    )
    return proc.stdout if proc.returncode == 0 else ""


def real_memory_need(config: Config, env: dict[str, str]) -> int | None:
    """Bytes a real forward of `config` would hold at its peak, from a meta trace; None if unknown."""
    proc = subprocess.run(
        [PY, str(PEERS / "memory_need.py"), *config.flags],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    try:
        return int(proc.stdout.strip())
    except ValueError:
        return None


def peer_commands(peer: str, configs: Sequence[Config]) -> list[Command]:
    """One peer on each config, on meta and on real CPU tensors."""
    script = str(PEERS / f"{peer}_peer.py")
    return [
        Command(
            f"{peer} {config.name} --device {device}",
            (PY, script, "--device", device, *config.flags),
            real=config if device == "cpu" else None,
        )
        for config in configs
        for device in ("meta", "cpu")
    ]


def hf_commands(no_cache: bool) -> list[Command]:
    """The --hf rows: their floor (importing transformers' Llama), blocktrace on the 70B-class config,
    and torchinfo and torchview on the same model built on the meta device."""
    bypass = ("--no-cache",) if no_cache else ()
    peer = (PY, str(PEERS / "hf_peer.py"))
    floor = HF_FLOOR_LABEL
    diagram, table = (
        Command(
            f"blocktrace {cmd} --hf llama-70b", (*BLOCKTRACE, cmd, "--hf", HF_LLAMA_70B, *bypass), floor=floor
        )
        for cmd in ("diagram", "table")
    )
    return [
        Command(floor, (PY, "-c", "import torch; from transformers import LlamaForCausalLM")),
        diagram,
        table,
        Command("torchinfo --hf llama-70b --device meta", (*peer, "torchinfo", HF_LLAMA_70B), floor=floor),
        Command("torchview --hf llama-70b --device meta", (*peer, "torchview", HF_LLAMA_70B), floor=floor),
        Command(
            "torchview --hf llama-70b --device meta --depth 1",
            (*peer, "torchview", HF_LLAMA_70B, "--depth", "1"),
            floor=floor,
        ),
    ]


def blocktrace_commands(no_cache: bool) -> list[Command]:
    """The blocktrace rows; with --no-cache available they bypass the cache, and one row uses it."""
    bypass = ("--no-cache",) if no_cache else ()

    def diagram(config: Config, *extra: str) -> Command:
        suffix = f" {config.name}" if config is not DEFAULT else ""
        label = " ".join(["blocktrace diagram", *extra]) + suffix
        return Command(label, (*BLOCKTRACE, "diagram", *config.flags, *extra, *bypass))

    commands = [
        Command("blocktrace --help", (*BLOCKTRACE, "--help")),
        Command("blocktrace diagram --help", (*BLOCKTRACE, "diagram", "--help")),
        diagram(DEFAULT),
        diagram(LLAMA_70B),
        diagram(STACK_70B),
        *(diagram(config) for config in PRESETS_70B),
        diagram(DEFAULT, "--device", "meta"),
    ]
    if no_cache:
        commands.append(Command("blocktrace diagram (cached)", (*BLOCKTRACE, "diagram"), prime=True))
    return commands


def skip_if_too_big(commands: list[Command], max_real_gb: float, env: dict[str, str]) -> list[Command]:
    """Rows on real tensors whose estimated peak is over `max_real_gb` become skipped rows."""
    needs: dict[Config, int | None] = {}
    for command in commands:
        if command.real is not None and command.real not in needs:
            progress(f"estimating the memory of real tensors at {command.real.name}")
            needs[command.real] = real_memory_need(command.real, env)
    return [with_memory_need(c, needs, max_real_gb) for c in commands]


def with_memory_need(command: Command, needs: dict[Config, int | None], max_real_gb: float) -> Command:
    """A real-tensor row skipped when it would need over `max_real_gb`, else noted with its need."""
    if command.real is None:
        return command
    need = needs[command.real]
    if need is None:
        return replace(command, skip="could not estimate the memory real tensors need")
    if need / 1e9 > max_real_gb:
        return replace(command, skip=f"needs ~{need / 1e9:.0f} GB, over --max-real-gb {max_real_gb:g}")
    return replace(command, note=f"tensors ~{need / 2**20:.0f} MiB")


def all_commands(only: list[str] | None, max_real_gb: float, env: dict[str, str]) -> list[Command]:
    """Every row to run: the floor first, then blocktrace, then the peers; `only` filters by label."""
    no_cache = "--no-cache" in blocktrace_help(env, "diagram")
    peers = [c for peer in ("torchinfo", "torchview") for c in peer_commands(peer, (DEFAULT, LLAMA_70B))]
    floor = Command(FLOOR_LABEL, (PY, "-c", "import torch"))
    hf = hf_commands(no_cache)
    rows = [floor, *(c for c in [*blocktrace_commands(no_cache), *hf, *peers] if selected(c, only))]
    if any(c.floor for c in rows) and hf[0] not in rows:
        rows.insert(1, hf[0])  # a row measured against the transformers floor brings that floor along
    return skip_if_too_big(rows, max_real_gb, env)


def selected(command: Command, only: list[str] | None) -> bool:
    return not only or any(pattern in command.label for pattern in only)


# ---------------------------------------------------------------------------------------- the table

COLUMNS = ("command", "median s", "min-max s", "x floor", "peak RSS MiB", "RSS - floor MiB", "note")


def row_cells(result: Result, floor: Result, floors: dict[str, Result] | None = None) -> tuple[str, ...]:
    """The cells of one row; numbers only for rows that ran, ratios only when the floor ran. A row
    with a second floor (`floors`, by label) says its ratio to that one in its note."""
    if not result.ok:
        return (result.command.label, "", "", "", "", "", result.note)
    note = result.note
    second = (floors or {}).get(result.command.floor or "")
    if second is not None and second.ok:
        versus = f"{result.median_s / second.median_s:.2f}x {second.command.label}"
        note = "; ".join(n for n in (versus, note) if n)
    times = result.times
    bound = "<=" if result.rss_is_bound else ""  # see Sample.rss_is_bound
    ratio = rss_delta = ""
    if floor.ok:
        ratio = f"{result.median_s / floor.median_s:.2f}x"
        rss_delta = f"{bound}{result.peak_rss_mib - floor.peak_rss_mib:+.0f}"
    return (
        result.command.label,
        f"{result.median_s:.3f}",
        f"{min(times):.3f}-{max(times):.3f}",
        ratio,
        f"{bound}{result.peak_rss_mib:.0f}",
        rss_delta,
        note,
    )


def text_table(rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell: label and note left-aligned, numbers right-aligned."""
    keep = len(COLUMNS) if any(row[-1] for row in rows) else len(COLUMNS) - 1  # no empty note column
    table = [COLUMNS[:keep], *(row[:keep] for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(keep)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i in (0, len(COLUMNS) - 1) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(table[0]), rule, *(line(row) for row in table[1:])])


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = "| :-- | " + " | ".join("--:" for _ in COLUMNS[1:-1]) + " | :-- |"
    return "\n".join([line(COLUMNS), align, *(line(row) for row in rows)])


# ---------------------------------------------------------------------------------------- the setting


def version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def blocktrace_version(env: dict[str, str]) -> str:
    proc = subprocess.run([*BLOCKTRACE, "--version"], capture_output=True, text=True, env=env, check=False)
    return proc.stdout.split()[-1] if proc.returncode == 0 and proc.stdout.split() else "unknown"


def git_revision() -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return f"{commit} + uncommitted changes" if git("status", "--porcelain") else commit


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> str:
    try:
        return f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        return "RAM unknown"


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def setting(env: dict[str, str], runs: int, warmup: int, load_at_start: str) -> list[str]:
    """The lines that say where and with what the table was measured."""
    return [
        f"Machine: {platform.platform()}, {cpu_model()}, {os.cpu_count()} CPUs, {memory_gib()}",
        f"Python {platform.python_version()}, torch {version_of('torch')}, "
        f"blocktrace {blocktrace_version(env)} (commit {git_revision()}), "
        f"torchinfo {version_of('torchinfo')}, torchview {version_of('torchview')}, "
        f"transformers {version_of('transformers')}",
        f"{runs} timed runs per command (fewer where noted) after {warmup} warm-up, interleaved "
        "round-robin; wall time of the whole process; peak RSS is the child's ru_maxrss, the largest "
        f"over its runs. Load average (1 min): {load_at_start} at start, {load_average()} at end.",
    ]


def commands_legend(results: list[Result]) -> list[str]:
    """What each label ran, with the interpreter written as `python` and paths relative to the repo."""

    def shown(arg: str) -> str:
        if arg == PY:
            return "python"
        return arg.replace(str(REPO) + os.sep, "") if arg.startswith(str(REPO)) else arg

    return [
        f"{r.command.label}: {shlex.join(shown(a) for a in r.command.argv)}"
        for r in results
        if r.command.skip is None
    ]


def report(results: list[Result], env: dict[str, str], args: argparse.Namespace, load_at_start: str) -> str:
    """The whole output: the setting, the table (text or markdown), and the command of each row."""
    floor = results[0]
    by_label = {r.command.label: r for r in results}
    rows = [row_cells(r, floor, by_label) for r in results]
    about = setting(env, args.runs, args.warmup, load_at_start)
    legend = commands_legend(results)
    if args.markdown:
        return "\n".join(
            [
                *(f"{line}  " for line in about),
                "",
                markdown_table(rows),
                "",
                "<details><summary>Commands</summary>",
                "",
                *(f"- `{line}`" for line in legend),
                "",
                "</details>",
            ]
        )
    return "\n".join([*about, "", text_table(rows), "", "Commands:", *(f"  {line}" for line in legend)])


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="timed runs per command (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per command first (default: 1)")
    p.add_argument("--quick", action="store_true", help="2 runs and no warm-up: a rough table, fast")
    p.add_argument("--markdown", action="store_true", help="a markdown table with machine and versions")
    p.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only rows whose label contains TEXT (repeatable); the floor always runs",
    )
    p.add_argument(
        "--max-real-gb",
        type=float,
        default=8.0,
        help="skip peer runs on real CPU tensors estimated to need more (default: 8)",
    )
    p.add_argument(
        "--slow",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a row whose warm-up run takes longer gets only --slow-runs timed runs (default: 10)",
    )
    p.add_argument("--slow-runs", type=int, default=3, help="timed runs of a slow row (default: 3)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before one run is killed")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.warmup = 2, 0
    if args.runs < 1 or args.slow_runs < 1 or args.warmup < 0:
        p.error("--runs and --slow-runs must be at least 1, --warmup at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = load_average()
    with tempfile.TemporaryDirectory(prefix="blocktrace-bench-cache-") as cache_dir:
        env = child_env(cache_dir)
        results = [Result(c) for c in all_commands(args.only, args.max_real_gb, env)]
        schedule = Schedule(args.runs, args.warmup, args.slow, args.slow_runs, args.timeout)
        run_rounds(results, schedule, env)
        print(report(results, env, args, load_at_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
