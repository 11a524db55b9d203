"""The CLI as a property: over a grammar of commands, flags, values and environments, every run ends
with no traceback, an exit code in {0, 1, 2}, at most two lines on stderr (a warning and an error),
no ANSI codes unless stdout is a terminal, an existing --output file untouched unless the run
succeeded, and a picture written (-o x.svg) that parses as XML.

The normal suite runs a bounded, seeded profile (tests/fuzz.py); `.ci/run` sets
BLOCKTRACE_FUZZ_EXAMPLES for a longer, randomised one. Runs that trace use small sizes, so that the
bounded profile stays well under half a minute.
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import device, profile
from tests.harness import ANSI, STDOUTS, invoke

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
BASE = ["--n-embd", "32", "--n-head", "4", "--seq", "6", "--batch", "2", "--n-layer", "1"]  # then the fuzzed
OUTPUTS = [
    "none", "-", "new", "existing", "missing-folder", "folder", "empty", "under-a-file", "full",
    "new.svg", "new.html", "new.md", "new.csv", "new.png", "NEW.SVG", "existing.svg",
]  # fmt: skip
# the suffix of -o picks the format: these files exist before the run, and must be left as they were
# by any run that fails (a --format that disagrees with the suffix, say)
EXISTING = ("existing.txt", "existing.svg")

# --module and --hf name files written once into a folder (MODELS stands for it): a tiny factory,
# a tiny class, a factory the meta device cannot run, a file that raises as it is imported, config
# folders good and bad. Every --hf value is a path there: a bare word would be looked up on the Hub.
MODELS = "@MODELS@"
MODEL_CODE = """
import torch
from torch import nn

X = 3


class Tiny(nn.Module):
    def __init__(self, C=8):
        super().__init__()
        self.proj = nn.Linear(C, C)

    def forward(self, x):
        return self.proj(x) + x


def tiny(B=2, T=3, C=8):
    return Tiny(C), (torch.randn(B, T, C),)


def gate(B=2, C=8):
    x = torch.randn(B, C)
    return nn.Sequential(nn.Linear(C, C)), (x[x.abs().sum(-1) > -1],)


def unsized(B, C=8):
    return Tiny(C), (torch.randn(B, C),)
"""
HF_CONFIG = (
    '{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 16, "n_head": 2, '
    '"n_layer": 1, "vocab_size": 31, "n_positions": 8}'
)
MODEL_VALUES = {
    "--module": [
        f"{MODELS}/tiny.py:tiny", f"{MODELS}/tiny.py:tiny", f"{MODELS}/tiny.py:Tiny",
        f"{MODELS}/tiny.py:gate",
        f"{MODELS}/tiny.py:unsized", f"{MODELS}/tiny.py:X", f"{MODELS}/tiny.py:Nope", f"{MODELS}/tiny.py",
        f"{MODELS}/broken.py:X", f"{MODELS}/missing.py:X", "no.such.module:X", "blocktrace.errors:X", ":",
    ],
    "--kwargs": ['{"C": 8}', '{"C": 8}', "{}", '{"C": -1}', '{"D": 1}', "{", "[1]", "null"],
    "--input": ["2,3,8", "2,3,8", "2x3x8", "2,3,8:long", "2,3,8:half", "2,3,8:complex", "2,,8", "2,x", "0"],
    "--dim": ["B=3", "T=4", "C=16", "C=1", "Q=2", "C=0", "C", "=4", "C=4.5"],
    "--hf": [
        f"{MODELS}/hf-tiny", f"{MODELS}/hf-tiny", f"{MODELS}/hf-empty", f"{MODELS}/hf-junk",
        f"{MODELS}/hf-unknown", f"{MODELS}/tiny.py", f"{MODELS}/missing",
    ],
}  # fmt: skip


def write_models(folder: Path) -> None:
    (folder / "tiny.py").write_text(MODEL_CODE, encoding="utf-8")
    (folder / "broken.py").write_text('raise RuntimeError("broken on import")\n', encoding="utf-8")
    for name, config in (("hf-tiny", HF_CONFIG), ("hf-empty", None), ("hf-junk", "{not json"),
                         ("hf-unknown", '{"model_type": "no_such_model"}')):  # fmt: skip
        (folder / name).mkdir()
        if config is not None:
            (folder / name / "config.json").write_text(config, encoding="utf-8")


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


def shared_flag(command: str) -> st.SearchStrategy[list[str]]:
    flags = ["--dtype", "--device", "--shapes"]
    return st.sampled_from(flags).flatmap(lambda f: st.sampled_from(CHOICES[f]).map(lambda v: [f, v]))


def model_value(flag: str) -> st.SearchStrategy[str]:
    junk = ["", "0", "ü", "--", "two"]
    if flag == "--hf":
        junk = [f"{MODELS}/{j}" for j in junk]  # no Hub ids: a bare word would need the network
    return st.sampled_from(MODEL_VALUES[flag] + junk)


@st.composite
def model_flags(draw: st.DrawFn, model: str) -> list[str]:
    """--module TARGET or --hf CONFIG, often with the flags that go with it, at times with the other's."""
    if model == "hf":
        args = ["--hf", draw(model_value("--hf"))]
        extra = draw(st.lists(st.sampled_from(["--seq", "--batch", "--dim", "--module"]), max_size=2))
    else:
        args = ["--module", draw(model_value("--module"))]
        extra = draw(
            st.lists(st.sampled_from(["--kwargs", "--input", "--input", "--dim", "--hf"]), max_size=3)
        )
    for flag in extra:
        values = model_value(flag) if flag in MODEL_VALUES else value(flag)
        args += [flag, draw(values)]
    return args


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
    model = draw(st.sampled_from(["block", "module", "hf", "block", "module", "block", "block"]))
    base = BASE if model == "block" else draw(model_flags(model))
    if model == "block":
        flags = draw(st.lists(flag_and_value(kind), max_size=6))
    else:  # mostly the flags that apply to any model: a Block's flags are refused beside it
        other = draw(st.sampled_from([[], [], [flag_and_value(kind)]]))
        flags = draw(st.lists(shared_flag(kind), max_size=2)) + [draw(f) for f in other]
    output = draw(st.sampled_from(OUTPUTS))
    # often a --format beside the -o, so that a format and a suffix agree or disagree
    fmt = draw(st.sampled_from([[], [], ["--format", "svg"], ["--format", "html"], ["--format", "text"]]))
    return [kind, *base, *(part for f in flags for part in f), *fmt], output


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
        "full": device("full", folder),
    }[kind]


PLAIN = {
    "env": {"COLUMNS": None, "NO_COLOR": None, "FORCE_COLOR": None, "TERM": None, "XDG_CACHE_HOME": "tmp"},
    "stdout": "pipe",
    "encoding": "utf-8",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_models(folder)
    return folder


@profile(normal=120)
# runs of each model that succeed, or fail in the user's code, whatever the grammar draws
@example(command=(["diagram", "--module", f"{MODELS}/tiny.py:tiny", "--dim", "T=4"], "new.svg"), **PLAIN)
@example(
    command=(
        ["table", "--module", f"{MODELS}/tiny.py:Tiny", "--kwargs", '{"C": 8}', "--input", "2,3,8"],
        "none",
    ),
    **PLAIN,
)
@example(command=(["source", "--module", f"{MODELS}/tiny.py:gate"], "none"), **PLAIN)  # a note
@example(command=(["table", "--module", f"{MODELS}/broken.py:X"], "existing"), **PLAIN)
@example(command=(["diagram", "--hf", f"{MODELS}/hf-tiny", "--seq", "4"], "new"), **PLAIN)
@example(command=(["table", "--hf", f"{MODELS}/hf-unknown"], "existing.svg"), **PLAIN)
@given(
    command=commands(),
    env=ENVIRONMENTS,
    stdout=st.sampled_from(STDOUTS),
    encoding=st.sampled_from(["utf-8", "ascii"]),
)
def test_the_cli_never_breaks_its_promises(
    command: tuple[list[str], str], env: dict[str, str | None], stdout: str, encoding: str, models: Path
) -> None:
    args = [a.replace(MODELS, str(models)) for a in command[0]]
    output_kind = command[1]
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
            re.match(r"blocktrace: (error|warning|note): \S", line) for line in result.stderr.splitlines()
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
