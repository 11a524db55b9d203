"""The CLI as a property: over a grammar of commands, flags, values and environments, every run ends
with no traceback, an exit code in {0, 1, 2}, at most two lines on stderr (a warning and an error),
no ANSI codes unless stdout is a terminal, an existing --output file untouched unless the run
succeeded, and a picture written (-o x.svg) that parses as XML.

The normal suite runs a bounded, seeded profile (FUZZ_EXAMPLES below); `.ci/run` sets
BLOCKTRACE_FUZZ_EXAMPLES for a longer, randomised one. Runs that trace use small sizes, so that the
bounded profile stays well under half a minute.
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import ANSI, STDOUTS, invoke

LONG = int(os.environ.get("BLOCKTRACE_FUZZ_EXAMPLES", "0"))
FUZZ_EXAMPLES = LONG or 120

# Values every flag may get: nothing, zero, negative, junk, unicode, the empty string.
JUNK = ["", " ", "0", "-1", "-0", "two", "1e3", "0x10", "٣", "ü", "--", "-", "4 ", "nan", "None"]
# Huge values, for every size: config.py refuses sizes whose tensors torch's int64 cannot index and
# stacks over its layer limit, in one line, before anything is built.
HUGE = ["4611686018427387904", "1" + "0" * 30, str(2**63), str(2**64 + 1)]
HUGE_OK = {
    "--n-embd", "--n-head", "--n-kv-head", "--seq", "--batch", "--mlp-ratio", "--mlp-hidden", "--n-layer",
    "--width", "--depth",
}  # fmt: skip

SMALL = {  # valid or nearly valid values for the sizes, small enough to trace in milliseconds
    "--n-embd": ["8", "16", "30", "32", "64"],
    "--n-head": ["1", "2", "4", "6"],
    "--n-kv-head": ["1", "2", "4"],
    "--seq": ["1", "2", "6", "16"],
    "--batch": ["1", "2", "3"],
    "--mlp-ratio": ["1", "2", "4"],
    "--mlp-hidden": ["1", "30", "64", "100"],
    "--n-layer": ["1", "2", "3"],
    "--width": ["20", "24", "27", "40", "80", "96", "200"],
    "--depth": ["0", "1", "2"],
}
CHOICES = {
    "--dtype": ["float32", "bfloat16", "float16"],
    "--device": ["probe", "meta", "cpu", "cuda"],
    "--shapes": ["symbolic", "concrete", "both"],
    "--preset": ["nanochat", "gpt2", "llama", "neox", "bert", "gpt-2"],
    "--norm": ["rmsnorm", "layernorm"],
    "--activation": ["relu2", "gelu", "silu", "swiglu"],
    "--residual": ["pre", "post", "parallel", "single", "sideways"],
    "--qkv": ["separate", "fused"],
}
FAMILY_SWITCHES = [f"--{no}{name}" for name in ("bias", "qk-norm", "rotary", "causal") for no in ("", "no-")]
FORMATS = {
    "diagram": ["text", "markdown", "json", "svg", "html"],
    "table": ["text", "markdown", "json", "csv", "svg", "html"],
    "source": ["text", "markdown", "json", "svg", "html"],
}
SWITCHES = {
    "diagram": [
        "--formulas",
        "--ascii",
        "--collapse",
        "--no-collapse",
        "--cache",
        "--no-cache",
        *FAMILY_SWITCHES,
    ],
    "table": ["--cache", "--no-cache", *FAMILY_SWITCHES],
    "source": ["--cache", "--no-cache", *FAMILY_SWITCHES],
}
FUNCTIONS = ["norm", "*.forward", "MLP.*", "nothing", "", "[", "ä*", "*"]
FREEZE = ["attn.*", "mlp.c_fc", "h.*.attn", "nothing", "", "[", "ä*", "*"]
BASE = ["--n-embd", "32", "--n-head", "4", "--seq", "6", "--batch", "2"]  # before the fuzzed flags
OUTPUTS = [
    "none", "-", "new", "existing", "missing-folder", "folder", "empty", "under-a-file", "full",
    "new.svg", "new.html", "new.md", "new.csv", "new.png", "NEW.SVG", "existing.svg",
]  # fmt: skip
# the suffix of -o picks the format: these files exist before the run, and must be left as they were
# by any run that fails (a --format that disagrees with the suffix, say)
EXISTING = ("existing.txt", "existing.svg")


def value(flag: str) -> st.SearchStrategy[str]:
    pool = SMALL.get(flag, []) + CHOICES.get(flag, []) + JUNK + (HUGE if flag in HUGE_OK else [])
    return st.sampled_from(pool)


def flag_and_value(command: str) -> st.SearchStrategy[list[str]]:
    flags = [*SMALL, *CHOICES, "--format"]
    if command == "table":
        flags = [f for f in flags if f != "--width"]
    else:
        flags = [f for f in flags if f != "--depth"]

    def with_value(flag: str) -> st.SearchStrategy[list[str]]:
        if flag == "--format":
            return st.sampled_from(FORMATS[command] + ["png", ""]).map(lambda v: [flag, v])
        return value(flag).map(lambda v: [flag, v])

    switch = st.sampled_from(SWITCHES[command]).map(lambda s: [s])
    freeze = st.sampled_from(FREEZE).map(lambda p: ["--freeze", p])
    junk = st.sampled_from(["--bogus", "-x", "", "ü", "extra", "--n-embd"]).map(lambda j: [j])
    options = [st.sampled_from(flags).flatmap(with_value), switch, junk]
    if command == "table":
        options.append(freeze)
    if command == "source":
        options.append(st.sampled_from(FUNCTIONS).map(lambda p: ["--function", p]))
    return st.one_of(*options)


@st.composite
def commands(draw: st.DrawFn) -> tuple[list[str], str]:
    kind = draw(
        st.sampled_from(["diagram", "diagram", "table", "table", "source", "source", "cache", "meta"])
    )
    if kind == "meta":
        args = draw(
            st.sampled_from(
                [
                    [],
                    ["--help"],
                    ["-h"],
                    ["--version"],
                    ["digram"],
                    [""],
                    ["diagram", "--help"],
                    ["table", "-h"],
                    ["source", "--help"],
                ]
            )
        )
        return args, "none"
    if kind == "cache":
        return ["cache", *draw(st.sampled_from([[], ["info"], ["clear"], ["purge"], [""], ["-h"]]))], "none"
    flags = draw(st.lists(flag_and_value(kind), max_size=6))
    output = draw(st.sampled_from(OUTPUTS))
    # often a --format beside the -o, so that a format and a suffix agree or disagree
    fmt = draw(st.sampled_from([[], [], ["--format", "svg"], ["--format", "html"], ["--format", "text"]]))
    return [kind, *BASE, *(part for f in flags for part in f), *fmt], output


ENVIRONMENTS = st.fixed_dictionaries(
    {
        "COLUMNS": st.sampled_from([None, "20", "40", "80", "200", "0", "junk"]),
        "NO_COLOR": st.sampled_from([None, "1", ""]),
        "FORCE_COLOR": st.sampled_from([None, "1", "0", ""]),
        "TERM": st.sampled_from([None, "dumb", "xterm-256color"]),
        "XDG_CACHE_HOME": st.sampled_from(["tmp", "relative/cache", ""]),
    }
)


def _output_path(kind: str, folder: Path) -> str | None:
    (folder / "a-file").write_text("a file\n")
    if "." in kind:
        return str(folder / kind)
    return {
        "none": None,
        "-": "-",
        "new": str(folder / "new.txt"),
        "existing": str(folder / "existing.txt"),
        "missing-folder": str(folder / "missing" / "out.txt"),
        "folder": str(folder),
        "empty": "",
        "under-a-file": str(folder / "a-file" / "out.txt"),
        "full": "/dev/full",
    }[kind]


@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=not LONG,  # the normal suite: the same examples every run
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(
    command=commands(),
    env=ENVIRONMENTS,
    stdout=st.sampled_from(STDOUTS),
    encoding=st.sampled_from(["utf-8", "ascii"]),
)
def test_the_cli_never_breaks_its_promises(
    command: tuple[list[str], str], env: dict[str, str | None], stdout: str, encoding: str
) -> None:
    args, output_kind = command
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        home = folder / "home"
        home.mkdir()
        env = {**env, "HOME": str(home)}  # a relative XDG_CACHE_HOME falls back to it
        if env["XDG_CACHE_HOME"] == "tmp":
            env["XDG_CACHE_HOME"] = str(folder / "cache")
        for name in EXISTING:
            (folder / name).write_text("the old file\n")
        path = _output_path(output_kind, folder)
        if path is not None:
            args = [*args, "-o", path]
        cwd = os.getcwd()
        os.chdir(folder)  # a relative XDG_CACHE_HOME must not be used, here or anywhere
        try:
            result = invoke(args, stdout=stdout, encoding=encoding, env=env)
        finally:
            os.chdir(cwd)

        context = f"blocktrace {args!r} stdout={stdout} encoding={encoding} env={env}\n{result.stderr}"
        assert result.exit_code in (0, 1, 2), context
        assert "Traceback" not in result.stderr, context
        assert len(result.stderr.splitlines()) <= 2, context
        assert all(
            re.match(r"blocktrace: (error|warning): \S", line) for line in result.stderr.splitlines()
        ), context
        assert ANSI not in result.stderr, context
        if stdout != "terminal":
            assert ANSI not in result.stdout, context
        if result.exit_code != 0:
            assert all((folder / name).read_text() == "the old file\n" for name in EXISTING), context
        assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp")), context
        assert not (folder / "relative").exists(), context
        if result.exit_code == 0 and output_kind in ("new", "new.svg", "new.html", "new.md", "new.csv"):
            assert (folder / Path(str(path)).name).stat().st_size > 0, context
        if result.exit_code == 0 and output_kind.lower() == "new.svg":
            ET.parse(folder / output_kind)  # a picture is well-formed XML
        if output_kind == "new.png" and "--format" not in args:
            assert result.exit_code == 2 and not (folder / "new.png").exists(), context  # no format has it
