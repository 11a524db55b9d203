"""Paired runs: each of blocktrace's rows against its floor, run back to back, A B A B ..., and the
median of the pair-by-pair ratios. A pair shares the machine's moment, so the ratio holds up on a
busy machine where the medians of run.py's table drift apart.

    python benchmarks/paired.py                      # every pair, 9 pairs each after 1 warm-up pair
    python benchmarks/paired.py --pairs 15 --only hf # the --hf pairs only
    python benchmarks/paired.py --markdown           # for docs/performance.md

The rows and floors are run.py's (the same commands, the same child environment: this checkout
first on the path, a private cache, bytecode written as an installed package has it). Only the
standard library here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from run import (
    DEFAULT,
    FLOOR_LABEL,
    HF_FLOOR_LABEL,
    LLAMA_70B,
    PRESETS_70B,
    STACK_70B,
    Command,
    all_commands,
    child_env,
    git_revision,
    load_average,
    run_once,
)

# each row and the floor it is held to: the built-in Blocks against importing torch, the --hf rows
# against importing torch and transformers' Llama
PAIRS = tuple(
    (f"blocktrace diagram {c.name}" if c is not DEFAULT else "blocktrace diagram", FLOOR_LABEL)
    for c in (DEFAULT, LLAMA_70B, STACK_70B, *PRESETS_70B)
)
HF_PAIRS = (("blocktrace diagram --hf llama-70b", HF_FLOOR_LABEL),)


@dataclass
class Pair:
    row: Command
    floor: Command
    times: list[tuple[float, float]] = field(default_factory=list)  # (row, floor) wall seconds
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (row, floor) CPU seconds, user + system
    failure: str = ""

    @property
    def ratios(self) -> list[float]:
        return [r / f for r, f in self.times]

    def cells(self) -> tuple[str, ...]:
        if self.failure:
            return (self.row.label, self.floor.label, *[""] * (len(HEADER) - 3), f"failed: {self.failure}")
        rows, floors = [r for r, _ in self.times], [f for _, f in self.times]
        ratios = self.ratios
        cpu_ratios = [r / f for r, f in self.cpu]
        return (
            self.row.label,
            self.floor.label,
            f"{statistics.median(rows):.3f}",
            f"{statistics.median(floors):.3f}",
            f"{statistics.median(ratios):.2f}x",
            f"{min(ratios):.2f}-{max(ratios):.2f}",
            f"{statistics.median(r for r, _ in self.cpu):.3f}",
            f"{statistics.median(f for _, f in self.cpu):.3f}",
            f"{statistics.median(cpu_ratios):.2f}x",
            "",
        )


def pairs(only: Sequence[str] | None, env: dict[str, str]) -> list[Pair]:
    commands = {c.label: c for c in all_commands(["blocktrace diagram"], 0.0, env)}
    found = []
    for row, floor in (*PAIRS, *HF_PAIRS):
        if row in commands and (not only or any(o in row for o in only)):
            found.append(Pair(commands[row], commands[floor]))
    return found


def measure(found: list[Pair], count: int, warmup: int, timeout_s: float, env: dict[str, str]) -> None:
    """`warmup` untimed pairs, then `count` timed ones, every row's pair once per round; within a
    pair, who runs first alternates."""
    for n in range(warmup + count):
        print(f"round {n + 1}/{warmup + count}", file=sys.stderr, flush=True)
        for pair in found:
            if pair.failure:
                continue
            order = (pair.row, pair.floor) if n % 2 == 0 else (pair.floor, pair.row)
            samples = {c.label: run_once(c.argv, env, timeout_s) for c in order}
            bad = next((s for s in samples.values() if s.exit_code != 0), None)
            if bad is not None:
                pair.failure = bad.reason
            elif n >= warmup:
                row, floor = samples[pair.row.label], samples[pair.floor.label]
                pair.times.append((row.wall_s, floor.wall_s))
                pair.cpu.append((row.cpu_s, floor.cpu_s))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=9, help="timed pairs per row (default: 9)")
    p.add_argument("--warmup", type=int, default=1, help="untimed pairs per row first (default: 1)")
    p.add_argument("--only", action="append", help="only rows whose label contains this (repeatable)")
    p.add_argument("--markdown", action="store_true", help="a markdown table, with the commit and load")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before one run is killed")
    args = p.parse_args(argv)
    start = load_average()
    with tempfile.TemporaryDirectory(prefix="blocktrace-paired-cache-") as cache_dir:
        env = child_env(cache_dir)
        found = pairs(args.only, env)
        measure(found, args.pairs, args.warmup, args.timeout, env)
    rows = [HEADER, *(pair.cells() for pair in found)]
    if args.markdown:
        print(f"commit {git_revision()}, {args.pairs} pairs per row after {args.warmup} warm-up; "
              f"load average (1 min) {start} at start, {load_average()} at end\n")  # fmt: skip
    print(table(rows, args.markdown))
    return 0


HEADER = (
    "command",
    "floor",
    "median s",
    "floor median s",
    "x floor, paired",
    "min-max",
    "CPU median s",
    "floor CPU median s",
    "CPU x floor, paired",
    "note",
)


def table(rows: list[tuple[str, ...]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "| :-- | :-- | --: | --: | --: | --: | --: | --: | --: | :-- |")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


if __name__ == "__main__":
    sys.exit(main())
