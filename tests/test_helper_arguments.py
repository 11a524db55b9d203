"""A helper's values written in the order its call passed them, not the order its ops read them:
modulate(x, shift, scale) computes x * (1 + scale) + shift, reading scale first. Each frame keeps
the tensors its parameters held (Frame.arguments); the captions, the formulas and the steps' input
shapes follow it."""

from __future__ import annotations

import torch
from torch import nn

from blocktrace.tracing.trace import Frame, Trace
from blocktrace.tracing.tracer import trace
from blocktrace.views.diagram.expression import expression
from blocktrace.views.steps import StepTree
from tests.harness import formulas_of


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def modulate_scale_first(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Modulated(nn.Module):
    """DiT's adaLN: shift, scale = ada(c).chunk(2); x + fc(modulate(norm(x), ...)), the helper's
    parameters in either order."""

    def __init__(self, scale_first: bool) -> None:
        super().__init__()
        self.ada, self.norm, self.fc = nn.Linear(4, 8), nn.LayerNorm(4), nn.Linear(4, 4)
        self.scale_first = scale_first

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=1)
        if self.scale_first:
            return x + self.fc(modulate_scale_first(self.norm(x), scale, shift))
        return x + self.fc(modulate(self.norm(x), shift, scale))


def _traced(scale_first: bool) -> Trace:
    return trace(Modulated(scale_first), (torch.randn(2, 3, 4), torch.randn(2, 4)))


def test_the_caption_writes_the_helper_s_values_as_its_call_passed_them() -> None:
    # chunk(...)[0] is shift, [1] is scale (the forward's first line)
    shift_first, scale_first = StepTree(_traced(False)), StepTree(_traced(True))
    assert expression(shift_first, shift_first.trace.residual_adds[0]) == (
        "x + fc(modulate(norm(x), chunk(ada(c))[0], chunk(ada(c))[1]))"
    )
    assert expression(scale_first, scale_first.trace.residual_adds[0]) == (
        "x + fc(modulate_scale_first(norm(x), chunk(ada(c))[1], chunk(ada(c))[0]))"
    )


def test_the_formulas_write_the_helper_s_values_as_its_call_passed_them() -> None:
    assert "x_out = x + Linear(modulate(LayerNorm(x), shift, scale))" in formulas_of(_traced(False))
    scale_first = formulas_of(_traced(True))
    assert "x_out = x + Linear(modulate_scale_first(LayerNorm(x), scale, shift))" in scale_first


def test_a_frame_keeps_its_parameters_tensors_and_the_json_carries_them() -> None:
    t = _traced(True)
    (frame,) = [f for f in t.frames if f.function == "modulate_scale_first"]
    normed = next(c for c in t.calls if c.path == "norm").outputs[0].id
    shift, scale = next(o for o in t.ops if o.name == "chunk").outputs
    assert frame.arguments == (normed, scale.id, shift.id)
    forward = next(f for f in t.frames if f.function == "forward")
    assert forward.arguments is not None and forward.arguments[0] == -1  # self, no tensor
    assert Trace.from_json(t.to_json()).frames == t.frames
    bare = {k: v for k, v in frame.to_dict().items() if k != "arguments"}
    assert Frame.from_dict(bare).arguments is None  # a trace from before: the ops' order stands
