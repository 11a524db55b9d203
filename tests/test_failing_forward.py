"""A forward that fails is one line naming the user's `file:line Class.function`, the op that raised
and its operands' shapes, on the meta device and on the CPU; checked against the same code run in
plain torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import blocktrace
from blocktrace.errors import BlocktraceError
from tests.harness import TINY, invoke, one_error

SMALL = {"n_embd": 32, "n_head": 4, "seq": 6, "batch": 2, "n_layer": 1}

BUGGY = """\
import torch
from torch import nn


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(16, 16)

    def forward(self, x):
        b, t, c = x.shape
        q = self.q(x).view(b, t, 4, 4).transpose(1, 2)
        k = q.transpose(1, 2)  # the bug: the last two dims were meant
        return q @ k


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attn()

    def forward(self, x):
        return self.attn(x)
"""


def _plain_torch() -> tuple[str, str]:
    """The operands of the failing matmul and torch's own words for it, run without blocktrace."""
    namespace: dict = {}
    exec(compile(BUGGY, "buggy.py", "exec"), namespace)
    attn = namespace["Net"]().attn
    x = torch.randn(2, 16, 16)
    q = attn.q(x).view(2, 16, 4, 4).transpose(1, 2)
    k = q.transpose(1, 2)
    with pytest.raises(RuntimeError) as raised:
        q @ k
    return f"matmul {tuple(q.shape)} @ {tuple(k.shape)}", str(raised.value)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_the_line_names_the_file_line_function_op_and_operands(
    device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "buggy.py").write_text(BUGGY, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    operands, words = _plain_torch()
    number = BUGGY.splitlines().index("        return q @ k") + 1
    result = invoke(["diagram", "--module", "buggy.py:Net", "--input", "2,16,16", "--device", device])
    line = one_error(
        result, 1, f"forward failed in attn (Attn) at buggy.py:{number} Attn.forward: {operands}: "
    )
    if device == "cpu":
        assert line.endswith(f": {words}")
    else:
        assert "(on the meta device)" in line


# --- --partial: what ran up to the failure ------------------------------------------------------

# the same bug after a residual step that runs: Net.forward's first line is what --partial draws
BLOCK = BUGGY.replace(
    "        self.attn = Attn()\n", "        self.norm = nn.LayerNorm(16)\n        self.attn = Attn()\n"
).replace("        return self.attn(x)\n", "        x = x + self.norm(x)\n        return self.attn(x)\n")
ARGS = ["--module", "buggy.py:Net", "--input", "2,16,16"]


def _plain_shapes() -> dict[str, tuple[int, ...]]:
    """Each module call's output shape, by plain forward hooks on the same code in plain torch,
    for the calls that returned before it raised."""
    namespace: dict = {}
    exec(compile(BLOCK, "buggy.py", "exec"), namespace)
    net = namespace["Net"]()
    shapes: dict[str, tuple[int, ...]] = {}

    def record(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            shapes[path] = tuple(out.shape)

        return hook

    for path, m in net.named_modules():
        m.register_forward_hook(record(path))
    with pytest.raises(RuntimeError):
        net(torch.randn(2, 16, 16))
    return shapes


@pytest.fixture
def block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "buggy.py").write_text(BLOCK, encoding="utf-8")
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_partial_draws_what_ran_and_says_where_it_stopped(device: str, block: None) -> None:
    plain = _plain_shapes()
    assert set(plain) == {"norm", "attn.q"}  # the calls that returned
    without = invoke(["diagram", *ARGS, "--device", device])
    line = one_error(without, 1, "forward failed in attn (Attn) at buggy.py:")
    assert without.stdout == ""
    result = invoke(["diagram", *ARGS, "--device", device, "--partial"])
    assert one_error(result, 1) == line  # a failed run still, said as without --partial
    header, stopped, *drawing = result.stdout.splitlines()
    assert header.startswith("Net (float32): 4 module calls, 6 ops, 1 residual add ")  # x + norm(x)
    assert "(+)◄─" in result.stdout
    assert stopped == "stopped: " + line.removeprefix("blocktrace: error: ")
    assert "│   norm    │" in result.stdout and f"│ {plain['norm']}" in result.stdout
    assert drawing[-1].strip() == "stopped in attn (Attn), which did not return: the forward failed"
    assert "output" not in result.stdout

    table = invoke(["table", *ARGS, "--device", device, "--partial", "--format", "json"])
    assert table.exit_code == 1
    data = json.loads(table.stdout)
    rows = {row["path"]: row for row in data["rows"] if row["kind"] in ("LayerNorm", "Attn", "Linear")}
    assert {p: rows[p]["outputs"] for p in plain} == {p: [str(shape)] for p, shape in plain.items()}
    assert rows["attn"]["outputs"] == [] and data["stopped"] == stopped.removeprefix("stopped: ")


STACK = """\
from torch import nn


class Layer(nn.Module):
    def __init__(self, bad):
        super().__init__()
        self.ln = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 17 if bad else 16)  # the bug, in the fourth layer

    def forward(self, x):
        return x + self.fc(self.ln(x))


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.h = nn.ModuleList(Layer(i == 3) for i in range(5))

    def forward(self, x):
        for layer in self.h:
            x = layer(x)
        return x
"""


def test_partial_draws_the_layers_that_ran_on_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stack.py").write_text(STACK, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = invoke(["diagram", "--module", "stack.py:Stack", "--input", "2,4,16", "--partial"])
    one_error(
        result, 1, "forward failed in h.3 (Layer) at stack.py:11 Layer.forward: add (2, 4, 16) + (2, 4, 17)"
    )
    assert ", 3 residual adds " in result.stdout.splitlines()[0]  # h.0 … h.2 returned, each one add
    assert "[h.0 … h.2: Layer × 3]" in result.stdout and "not drawn" not in result.stdout
    assert result.stdout.rstrip().endswith("stopped in h.3 (Layer), which did not return: the forward failed")


def test_partial_in_the_api_returns_the_view_with_its_failure(block: None) -> None:
    shown = blocktrace.diagram(module="buggy.py:Net", input=["2,16,16"], device="meta", partial=True)
    assert isinstance(shown.failure, BlocktraceError) and shown.failure.exit_code == 1
    assert str(shown).splitlines()[1] == f"stopped: {shown.failure}"
    table = blocktrace.table(module="buggy.py:Net", input=["2,16,16"], device="meta", partial=True)
    assert str(table).splitlines()[-1] == f"stopped: {table.failure}"
    with pytest.raises(BlocktraceError, match="forward failed in attn"):
        blocktrace.diagram(module="buggy.py:Net", input=["2,16,16"], device="meta")


def test_partial_changes_nothing_where_nothing_failed_in_a_forward() -> None:
    assert invoke(["diagram", *TINY, "--partial"]).stdout == invoke(["diagram", *TINY]).stdout
    assert blocktrace.diagram(**SMALL, partial=True).failure is None
    refused = invoke(["diagram", *TINY, "--n-embd", "30", "--partial"])  # not a forward: no trace to show
    one_error(refused, 2, "divisible")
    assert refused.stdout == ""
