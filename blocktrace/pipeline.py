"""model spec -> module -> trace: what every command that traces starts with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocktrace.config import BlockConfig, ConfigError
from blocktrace.spec import BlockSpec, ModelSpec
from blocktrace.trace import Trace, TraceError

if TYPE_CHECKING:
    from blocktrace.probe import ShapeFit


def trace_spec(spec: ModelSpec, device: str = "probe", frozen: tuple[str, ...] = ()) -> Trace:
    """The named trace of `spec`.

    device "probe" derives the full-size shapes from two tiny CPU probes (falling back to "meta"
    if the probes cannot be fitted); "meta" traces the full-size module on PyTorch's meta device;
    "cpu" and "cuda" run it with real tensors. `frozen`: module path globs to set requires_grad=False.
    """
    from blocktrace.model import freeze
    from blocktrace.probe import derived_trace, fit_shapes, named
    from blocktrace.tracer import trace

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: this torch build or machine has no CUDA device")
    shape_fit = fit_shapes(spec, frozen)
    derived = derived_trace(spec, shape_fit) if shape_fit is not None else None
    if device == "probe" and derived is not None:
        return derived
    full_device = "meta" if device == "probe" else device
    if device in ("cpu", "cuda"):
        _check_memory(spec, device, shape_fit, derived)
    try:
        module = spec.build(spec.sizes, full_device, spec.layers)
        freeze(module, frozen)
        args, kwargs = spec.inputs(spec.sizes, full_device)
        traced = trace(module, args, kwargs)
    except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
        if isinstance(error, TraceError):
            raise
        raise TraceError(f"--device {device}: {str(error).splitlines()[0]}") from error
    return named(traced, spec, shape_fit)


def trace_config(config: BlockConfig, device: str = "probe", frozen: tuple[str, ...] = ()) -> Trace:
    """The named trace of a built-in Block family."""
    return trace_spec(BlockSpec(config), device, frozen)


def _check_memory(spec: ModelSpec, device: str, shape_fit: ShapeFit | None, derived: Trace | None) -> None:
    """Refuse, in one sentence, a real run whose weights and activations would not fit in the memory
    free for it, rather than be killed halfway through by the kernel. The activations are every
    tensor the forward creates, read off the probes' derived trace (an upper bound: the forward frees
    some as it goes)."""
    import math

    from blocktrace.table import totals

    if derived is None:
        return  # no shapes known before running: nothing to judge by
    weights = sum(math.prod(w.shape) for c in derived.calls for w in c.weights if w.tied is None)
    weights *= spec.dtype_bytes()
    inputs = sum(math.prod(t.shape) for t in derived.inputs) * spec.dtype_bytes()
    need = weights + inputs + totals(derived).activation_bytes
    free = _free_bytes(device)
    if need > free:
        raise ConfigError(
            f"--device {device}: the weights, input and activations take {need / 2**30:.1f} GiB, over the "
            f"{free / 2**30:.1f} GiB free; --device probe (the default) gives the same shapes"
        )


def _free_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        return torch.cuda.mem_get_info()[0]
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def cached_trace(
    config: BlockConfig, device: str = "probe", frozen: tuple[str, ...] = (), use_cache: bool = True
) -> Trace:
    """trace_config, answered from the cache of traces when it holds this exact request; torch is
    imported only on a miss."""
    from blocktrace import cache

    spec = BlockSpec(config)
    if use_cache and (hit := cache.load(spec, device, frozen)) is not None:
        return hit
    load_torch()
    traced = trace_spec(spec, device, frozen)
    if use_cache:
        cache.store(traced, spec, device, frozen)
    return traced


def load_torch() -> None:
    """Import torch, then exempt what it made from garbage collection: otherwise every collection
    rescans torch's objects, which costs a one-shot command more than its whole trace."""
    import gc
    import warnings

    with warnings.catch_warnings():
        # a torch build beside no numpy says so at import; blocktrace never hands torch numpy arrays
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
        import torch  # noqa: F401

    gc.freeze()
