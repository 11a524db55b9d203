"""A forward that fails is one line naming the user's `file:line Class.function`, the op that raised
and its operands' shapes, on the meta device and on the CPU; checked against the same code run in
plain torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.harness import invoke, one_error

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
