"""`--module`, `--kwargs`, `--input`, `--dim` and `--hf` given wrong: one line on stderr, no traceback,
and the exit code the CLI promises (2: what was asked for cannot be; 1: the user's code failed)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from tests.harness import invoke, one_error

CODE = """
import torch
from torch import nn

X = 3


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(16, 24)
        self.second = nn.Linear(16, 8)

    def forward(self, x):
        return self.second(self.first(x))


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def forward(self, x):
        return self.inner(x)


class Refuses(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        raise ValueError("no such width")


def tiny(B=2, C=8):
    return nn.Linear(C, C), (torch.randn(B, C),)


def unsized(B, C=8):
    return nn.Linear(C, C), (torch.randn(B, C),)


def raising(B=2):
    raise ValueError("the factory says no")


def bare(B=2):
    return nn.Linear(2, 2)


def listed_kwargs(B=2):
    return nn.Linear(2, 2), (torch.randn(B, 2),), [1]


class TinyClass(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 3)

    def forward(self, x):
        return self.proj(x)
"""


@pytest.fixture(scope="module")
def user_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user_code")
    (folder / "errs.py").write_text(CODE, encoding="utf-8")
    (folder / "boom.py").write_text('raise RuntimeError("import boom")\n', encoding="utf-8")
    (folder / "empty").mkdir()
    (folder / "unknown").mkdir()
    (folder / "unknown" / "config.json").write_text('{"model_type": "no_such_model"}', encoding="utf-8")
    return folder


# (arguments with {code} for the folder above, exit code, what the line must say)
REFUSED = [
    (["--module", "{code}/nope.py:X"], 2, "no such file"),
    (["--module", "no.such.module:X"], 2, "no module named no.such.module"),
    (["--module", "{code}/errs.py:Nope"], 2, "no Nope in", "it has: torch, nn, X, Inner, Outer"),
    (["--module", "{code}/errs.py:X"], 2, "int is neither an nn.Module class nor a function"),
    (["--module", "{code}/errs.py"], 2, "expected FILE.py:NAME"),
    (["--module", "{code}/errs.py:unsized"], 2, "parameter B needs a positive int default"),
    (["--module", "{code}/errs.py:Outer", "--input", "4,16", "--kwargs", "{"], 2, "--kwargs: not JSON"),
    (["--module", "{code}/errs.py:Outer", "--input", "4,16", "--kwargs", "[1]"], 2, "a JSON object"),
    (["--module", "{code}/errs.py:Outer", "--input", "4,sixteen"], 2, "--input 4,sixteen: expected sizes"),
    (["--module", "{code}/errs.py:Outer", "--input", "4,-16"], 2, "--input 4,-16: expected sizes"),
    (["--module", "{code}/errs.py:Outer", "--input", "4,16:complex"], 2, "unknown dtype 'complex'"),
    (["--module", "{code}/errs.py:tiny", "--dim", "Q=3"], 2, "--dim Q: not a parameter", "(it has: B, C)"),
    (["--module", "{code}/errs.py:tiny", "--dim", "B=0"], 2, "--dim B=0: expected NAME=SIZE"),
    (["--module", "{code}/errs.py:tiny", "--dim", "B=two"], 2, "--dim B=two: expected NAME=SIZE"),
    (["--module", "{code}/errs.py:tiny", "--dim", "B"], 2, "--dim B: expected NAME=SIZE"),
    (["--kwargs", "{}"], 2, "--kwargs is for --module"),
    (["--input", "2,3"], 2, "--input is for --module"),
    (["--dim", "B=2"], 2, "--dim is for --module"),
    (["--module", "{code}/errs.py:tiny", "--hf", "{code}/unknown"], 2, "--module and --hf name two models"),
    (["--module", "{code}/errs.py:tiny", "--n-embd", "8"], 2, "--n-embd does not apply with --module"),
    (["--hf", "{code}/unknown", "--n-embd", "8"], 2, "--n-embd does not apply with --hf"),
    (["--module", "{code}/errs.py:tiny", "--seq", "8"], 2, "--seq does not apply with --module"),
    (["--module", "{code}/errs.py:Outer", "--input", "4,16", "--dim", "B=2"], 2, "is a module class"),
    (["--module", "{code}/errs.py:tiny", "--kwargs", "{}"], 2, "is a factory (use --dim)"),
    (["--module", "{code}/errs.py:tiny", "--input", "2,8"], 2, "is a factory (use --dim)"),
    (["--module", "{code}/errs.py:Outer"], 2, "a module class needs its inputs: --input"),
    (
        ["--module", "{code}/errs.py:Refuses", "--input", "2"],
        1,
        "Refuses() failed: ValueError: no such width",
    ),
    (["--module", "{code}/errs.py:raising"], 1, "raising(B=2) failed: ValueError: the factory says no"),
    (["--module", "{code}/errs.py:bare"], 2, "returned Linear; expected (module, args)"),
    (["--module", "{code}/errs.py:listed_kwargs"], 2, "the kwargs it returned are not a dict"),
    (["--module", "{code}/boom.py:X"], 1, "importing", "boom.py failed: RuntimeError: import boom"),
    (["--hf", "{code}/empty"], 2, "--hf", "config.json"),
    (["--hf", "{code}/unknown"], 2, "no_such_model"),
]


COMMANDS = ("diagram", "table", "source")


@pytest.mark.parametrize(
    ("command", "args", "code", "parts"),
    [(COMMANDS[i % 3], args, code, tuple(parts)) for i, (args, code, *parts) in enumerate(REFUSED)],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_wrong_model_flag_is_one_line(
    command: str, args: list[str], code: int, parts: tuple[str, ...], user_code: Path
) -> None:
    result = invoke([command, *(a.replace("{code}", str(user_code)) for a in args)])
    one_error(result, code, *parts)
    assert result.stdout == ""


def test_a_failing_forward_names_the_module_path_and_torch_s_words(user_code: Path) -> None:
    args = ["table", "--module", f"{user_code}/errs.py:Outer", "--input", "10,16"]
    line = one_error(invoke([*args, "--device", "cpu"]), 1)
    # the op fails inside torch's Linear: the line named is the user's that called it
    number = CODE.splitlines().index("        return self.second(self.first(x))") + 1
    at = f"at {user_code}/errs.py:{number} Inner.forward: linear (10, 24), (8, 16), (8,): "
    assert line == (
        f"blocktrace: error: forward failed in inner.second (Linear) {at}"
        "mat1 and mat2 shapes cannot be multiplied (10x24 and 16x8)"
    )
    # the meta device words it its own way, with the same sizes, and the line says where it ran
    one_error(
        invoke(args),
        1,
        f"forward failed in inner.second (Linear) {at}",
        "[10, 24] X [16, 8]",
        "(on the meta device)",
    )


def test_an_input_with_a_stray_x_is_refused(user_code: Path) -> None:
    result = invoke(["table", "--module", f"{user_code}/errs.py:TinyClass", "--input", "2,x"])
    one_error(result, 2, "--input 2,x")


def test_without_transformers_hf_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, user_code: Path
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    result = invoke(["diagram", "--hf", f"{user_code}/unknown"])
    one_error(result, 2, "pip install 'blocktrace-cli[hf]'")


def test_an_unreachable_hub_is_one_line_not_its_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    transformers = pytest.importorskip("transformers")
    from blocktrace.models import hf

    def offline(source: str, **kwargs: object) -> None:
        # what huggingface_hub says before each retry of a Hub it cannot reach
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {source}")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    monkeypatch.setattr(hf, "check_hub", lambda source: None)  # reached first, then lost
    result = invoke(["diagram", "--hf", "someone/some-model"])
    one_error(result, 2, "--hf someone/some-model: We couldn't connect")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("huggingface_hub")] == []
