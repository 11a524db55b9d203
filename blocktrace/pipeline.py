"""flags -> config -> module -> trace: what every command that draws a Block starts with."""

from __future__ import annotations

from blocktrace.config import BlockConfig

DEVICES = ("probe", "meta", "cpu", "cuda")


def trace_config(config: BlockConfig, device: str = "probe"):
    """The named trace of `config`. device "probe" derives the full-size shapes from small CPU
    probes (falling back to "meta" when the probes cannot be fitted); "meta" traces the full-size
    module on PyTorch's meta device; "cpu" and "cuda" run it with real tensors."""
    from blocktrace.model import build_module, example_inputs
    from blocktrace.probe import derived_trace, fit_shapes, named
    from blocktrace.tracer import trace

    shape_fit = fit_shapes(config)
    derived = derived_trace(config, shape_fit) if device == "probe" and shape_fit else None
    if derived is not None:
        return named(derived, config, shape_fit)
    full_device = "meta" if device == "probe" else device
    module = build_module(config, full_device)
    return named(trace(module, example_inputs(config, full_device)), config, shape_fit)
