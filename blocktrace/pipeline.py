"""flags -> config -> module -> trace: what every command that traces a Block starts with."""

from __future__ import annotations

from blocktrace.config import BlockConfig, ConfigError
from blocktrace.trace import Trace, TraceError


def trace_config(config: BlockConfig, device: str = "probe", frozen: tuple[str, ...] = ()) -> Trace:
    """The named trace of `config`.

    device "probe" derives the full-size shapes from two tiny CPU probes (falling back to "meta"
    if the probes cannot be fitted); "meta" traces the full-size module on PyTorch's meta device;
    "cpu" and "cuda" run it with real tensors. `frozen`: module path globs to set requires_grad=False.
    """
    from blocktrace.model import build_module, example_inputs, freeze
    from blocktrace.probe import derived_trace, fit_shapes, named
    from blocktrace.tracer import trace

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: this torch build or machine has no CUDA device")
    shape_fit = fit_shapes(config, frozen)
    if device == "probe" and shape_fit is not None:
        derived = derived_trace(config, shape_fit)
        if derived is not None:
            return derived
    full_device = "meta" if device == "probe" else device
    if device == "cpu":
        _check_memory(config)
    try:
        module = build_module(config, full_device)
        freeze(module, frozen)
        traced = trace(module, example_inputs(config, full_device))
    except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
        if isinstance(error, TraceError):
            raise
        raise TraceError(f"--device {device}: {str(error).splitlines()[0]}") from error
    return named(traced, config, shape_fit)


def _check_memory(config: BlockConfig) -> None:
    """Refuse, in one sentence, a real run whose weights and input alone would take over half of the
    memory this machine has free, rather than be killed halfway through by the kernel."""
    import os

    from blocktrace.model import build_module

    weights = sum(p.numel() * p.element_size() for p in build_module(config, "meta").parameters())
    x = config.batch * config.seq * config.n_embd * (4 if config.dtype == "float32" else 2)
    free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    if 2 * (weights + x) > free:
        raise ConfigError(
            f"--device cpu: the weights and input alone take {(weights + x) / 2**30:.1f} GiB, over half "
            f"of the {free / 2**30:.1f} GiB free; --device probe (the default) gives the same shapes"
        )


def cached_trace(
    config: BlockConfig, device: str = "probe", frozen: tuple[str, ...] = (), use_cache: bool = True
) -> Trace:
    """trace_config, answered from the cache of traces when it holds this exact request; torch is
    imported only on a miss."""
    from blocktrace import cache

    if use_cache and (hit := cache.load(config, device, frozen)) is not None:
        return hit
    load_torch()
    traced = trace_config(config, device, frozen)
    if use_cache:
        cache.store(traced, config, device, frozen)
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
