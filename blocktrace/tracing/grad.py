"""Measure the gradient along a stack's residual stream at init, with autograd on a real run.

One forward of the stack on its seeded input x, then one backward of a fixed loss:

    L = mean over (b, t) of  y[b, t, :] · r[b, t, :]

where y is the last layer's output and r a tensor drawn from its own generator seeded with the
seed, so that L is linear in y and dL/dy = r / (B T) whatever the model: every difference in the
gradients below comes from the layers, none from the loss. Recorded per layer: the norm of dL/dx at
its input (read with a forward pre-hook that keeps the gradient of the tensor it is given), and the
norm of the gradients of its parameters together. Hooks are removed in `finally`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from blocktrace.tracing.grad_record import GradRecord, LayerGrad

if TYPE_CHECKING:
    import torch
    from torch import nn


class Init(StrEnum):
    torch = "torch"  # the modules' own init, PyTorch's defaults (nn.Linear: Kaiming-uniform, a=sqrt(5))
    xavier = "xavier"  # Xavier-uniform Linear weights, zero biases: the setting Xiong et al. 2020 analyse


def initialise(model: nn.Module, init: Init) -> None:
    """Redraw `model`'s Linear weights as `init` says (from torch's global generator, seeded by the
    caller); norms keep their ones and zeros."""
    import torch
    from torch import nn

    if init is Init.torch:
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    """The 2-norm of all of `tensors` as one vector, summed in float64 so that the order of the
    parts does not round differently."""
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors))


def measure_grad(
    model: nn.Module,
    layers: Sequence[nn.Module],
    args: tuple,
    kwargs: dict[str, Any],
    seed: int,
    init: str,
    config: dict[str, int | str | bool],
) -> GradRecord:
    """The gradients of one seeded step of `model` (whose stream passes through `layers` in order)
    called on `args` (the first is the stream's input), `kwargs`."""
    import torch

    inputs: list[torch.Tensor] = []

    def keep(_: nn.Module, layer_args: tuple) -> tuple | None:
        x = layer_args[0]
        if not x.requires_grad:  # the model's own input: a leaf of its own, so its .grad is kept
            x = x.detach().requires_grad_()
            inputs.append(x)
            return (x, *layer_args[1:])
        x.retain_grad()
        inputs.append(x)
        return None

    handles = [layer.register_forward_pre_hook(keep) for layer in layers]
    try:
        model.zero_grad(set_to_none=True)
        out = model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    if len(inputs) != len(layers):
        raise ValueError(f"each of the {len(layers)} layers should run once; {len(inputs)} calls ran")
    generator = torch.Generator(device=out.device).manual_seed(seed)
    r = torch.randn(out.shape, generator=generator, device=out.device).to(out.dtype)
    out.retain_grad()
    loss = (out * r).sum(-1).mean()
    loss.backward()
    rows = []
    for index, (layer, x) in enumerate(zip(layers, inputs, strict=True)):
        params = list(layer.parameters())
        assert x.grad is not None
        rows.append(
            LayerGrad(
                index=index,
                kind=type(layer).__name__,
                stream_norm=_norm([x.grad]),
                param_norm=_norm([p.grad for p in params if p.grad is not None]),
                params=sum(p.numel() for p in params),
            )
        )
    assert out.grad is not None
    return GradRecord(
        model=type(model).__name__,
        dtype=str(out.dtype).removeprefix("torch."),
        device=out.device.type,
        seed=seed,
        loss=float(loss.detach()),
        init=init,
        config=config,
        layers=tuple(rows),
        output_norm=_norm([out.grad]),
    )
