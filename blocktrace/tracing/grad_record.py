"""What a gradient measurement holds: plain data, no torch, so the grad view is built and tested
without it. tracing/grad.py measures it with autograd on a real run."""

from __future__ import annotations

from dataclasses import dataclass

# the loss every measurement takes the gradient of: linear in y, so dL/dy is r / (B T) for any model
LOSS = "mean over (b, t) of y[b, t] · r[b, t], y the last layer's output, r ~ N(0, 1) from the seed"


@dataclass(frozen=True)
class LayerGrad:
    """One layer of the stack, as the backward pass of one seeded step left it."""

    index: int  # 0: the layer that reads the model's input
    kind: str  # the layer's class: Block, PostNormBlock, ...
    stream_norm: float  # ||dL/dx|| at the layer's input, over every element of x
    param_norm: float  # ||dL/dW|| over all the layer's parameters together (0.0 for none)
    params: int  # the layer's parameters, each counted once


@dataclass(frozen=True)
class GradRecord:
    """The gradient along the residual stream of a stack at init (see tracing/grad.py)."""

    model: str  # the stack's class
    dtype: str
    device: str  # where it ran: cpu, cuda
    seed: int
    init: str  # how the weights were drawn: "torch" (the modules' own init) or "xavier"
    loss: float  # the value of the fixed loss (tracing/grad.py's LOSS)
    config: dict[str, int | str | bool]  # what was built, as the trace records it
    layers: tuple[LayerGrad, ...]
    output_norm: float  # ||dL/dy|| at the last layer's output, where the backward starts
