"""The statistics of a tensor's values (--stats): what a real run's edges carried."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocktrace.tracing.trace import TensorStats

if TYPE_CHECKING:
    import torch


def tensor_stats(t: torch.Tensor) -> TensorStats | None:
    """Mean, std (the population's), RMS, min, max and the fraction of zeros of `t`'s elements, in
    float64; None for a tensor with no values to read (meta, empty, complex)."""
    import torch
    from torch.utils._python_dispatch import _disable_current_modes

    if t.device.type == "meta" or t.numel() == 0 or t.is_complex():
        return None
    # read outside the tracer's modes: these ops are not the model's, nor are their FLOPs
    with torch._C.DisableTorchFunction(), _disable_current_modes(), torch.no_grad():
        x = t.detach().double()
        mean = x.mean()
        return TensorStats(
            mean=float(mean),
            std=float((x - mean).square().mean().sqrt()),
            rms=float(x.square().mean().sqrt()),
            min=float(x.min()),
            max=float(x.max()),
            zeros=float((x == 0).double().mean()),
        )
