"""The steps of a trace are one value: built once per command and handed to every view that reads
them, the same whichever view reads them first."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from blocktrace.tracing.tracer import trace
from blocktrace.views.diagram.formulas import formulas
from blocktrace.views.steps import StepKind, StepTree
from tests.harness import invoke


@pytest.mark.parametrize(
    ("args", "stdout"),
    [
        (["diagram", "--formulas"], "pipe"),
        (["diagram", "--formulas"], "terminal"),
        (["diagram", "--formulas", "--format", "markdown"], "pipe"),
        (["diagram", "--formulas", "--format", "svg"], "pipe"),
        (["diagram", "--formulas", "--format", "html", "--no-collapse"], "pipe"),
        (["table"], "pipe"),
    ],
)
def test_a_command_builds_the_steps_once(
    args: list[str], stdout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[StepTree] = []
    construct = StepTree.__init__

    def counted(self: StepTree, *a: Any, **k: Any) -> None:
        built.append(self)
        construct(self, *a, **k)

    monkeypatch.setattr(StepTree, "__init__", counted)
    result = invoke([*args, "--n-layer", "2"], stdout, env={"COLUMNS": "200", "TERM": "xterm-256color"})
    assert result.exit_code == 0, result.stderr
    assert len(built) == 1


class _Positions(nn.Module):
    """A stream with a value made off it: positions from the sequence's length, not from x."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Embedding(4, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.pos(torch.arange(x.shape[1]))
        return h + self.fc(h)


def test_the_side_computations_do_not_depend_on_what_was_read_first() -> None:
    t = trace(_Positions(), (torch.randn(2, 4, 8),))
    side_first = StepTree(t)
    side = dict(side_first.side)
    stream_first = StepTree(t)
    assert stream_first.stream == side_first.stream
    assert dict(stream_first.side) == side
    assert [s.title for s in side.values() if s.kind == StepKind.call] == ["Embedding"]
    assert "x_mid = add(x, pos)" in formulas(StepTree(t))  # by the graph's name for it
