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


def test_the_layers_a_run_draws_once_are_compared_without_the_graphs_helper_steps() -> None:
    import blocktrace

    t = blocktrace.trace(n_layer=3, cache=False)
    tree = StepTree(t)
    asked: list[int] = []
    steps_of = tree.call_steps

    def counted(call: int) -> Any:
        asked.append(call)
        return steps_of(call)

    tree.call_steps = counted  # type: ignore[assignment]
    assert [s.label for s in tree.stream if s.kind == StepKind.section] == ["h.0 … h.2"]
    paths = {t.calls[i].path for i in asked}
    assert "h.1" in paths  # the layers themselves: what each holds at its own level is compared
    assert not any(p.startswith(("h.1.", "h.2.")) for p in paths)  # not what their calls hold


@pytest.mark.parametrize("model", [{"n_layer": 2}, {"hf": "docs/examples/gpt2"}])
def test_a_call_compares_as_its_drawn_steps_do(model: dict[str, Any]) -> None:
    import blocktrace

    if "hf" in model:
        pytest.importorskip("transformers")
    t = blocktrace.trace(**model, cache=False)  # transformers: helpers drawn with other inputs
    tree = StepTree(t)
    for call in t.calls:
        compared = tree.signature(tree._compared(call))
        assert compared == tree.signature(tree.inner(call)), call.path
