"""model spec -> module -> trace: what every command that traces starts with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocktrace.errors import ConfigError, TraceError, error_line
from blocktrace.models.block.config import BlockConfig
from blocktrace.models.block.spec import BlockSpec
from blocktrace.models.request import ModelRequest
from blocktrace.models.spec import Device, ModelSpec
from blocktrace.tracing.trace import Trace

if TYPE_CHECKING:
    from blocktrace.sizes.fit import ShapeFit


def trace_spec(spec: ModelSpec, device: Device = Device.probe, frozen: tuple[str, ...] = ()) -> Trace:
    """The named trace of `spec`.

    device "probe" derives the full-size shapes from two tiny CPU probes (falling back to "meta"
    if the probes cannot be fitted); "meta" traces the full-size module on PyTorch's meta device;
    "cpu" and "cuda" run it with real tensors. `frozen`: module path globs to set requires_grad=False.
    A spec with `full_size_trace` is traced on the meta device under "probe" too, the probes only
    naming its sizes.
    """
    from blocktrace.output.sink import notice
    from blocktrace.sizes.naming import derived_trace, named
    from blocktrace.sizes.stack import fit_shapes

    for line in getattr(spec, "notes", ()):  # what the spec's sizes could not name, said once
        notice("note", line)
    if device == Device.cuda:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: this torch build or machine has no CUDA device")
    if spec.full_size_trace:
        unit = _unit_fit(spec, frozen)
        if device in (Device.probe, Device.meta):
            return _trace_full_size(spec, device, frozen, unit)
        try:  # the meta device tells what a real run needs, at no cost
            sized: Trace | None = _run(spec, "meta", frozen)
        except TraceError:
            sized = None
        _check_memory(spec, device, sized)
        return named(_run(spec, device, frozen), spec, unit)
    shape_fit = fit_shapes(spec, frozen)
    derived = derived_trace(spec, shape_fit) if shape_fit is not None else None
    if device == Device.probe and derived is not None:
        return derived
    if device in (Device.cpu, Device.cuda):
        _check_memory(spec, device, derived)
    return named(_run(spec, Device.meta if device == Device.probe else device, frozen), spec, shape_fit)


def _run(spec: ModelSpec, device: str, frozen: tuple[str, ...]) -> Trace:
    """The trace of the full-size module on `device`."""
    from blocktrace.tracing.freeze import freeze
    from blocktrace.tracing.tracer import trace

    try:
        module = spec.build(spec.sizes, device, spec.layers)
        freeze(module, frozen)
        args, kwargs = spec.inputs(spec.sizes, device)
        return trace(module, args, kwargs)
    except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
        if isinstance(error, TraceError):
            raise
        raise TraceError(f"--device {device}: {error_line(error)}") from error


def _unit_fit(spec: ModelSpec, frozen: tuple[str, ...]) -> ShapeFit | None:
    """The probes' fit of one unit of code we did not write, or None: no sizes to name, or the code
    does not run at the probes' sizes (then the full-size trace goes unnamed)."""
    from blocktrace.sizes.fit import fit_probes

    try:
        return fit_probes(spec, frozen) if spec.symbols.basis else None
    except (TraceError, ConfigError):
        return None


def _trace_full_size(
    spec: ModelSpec, device: Device, frozen: tuple[str, ...], unit: ShapeFit | None
) -> Trace:
    """Code we did not write, on the meta device at full size; named from the probes of one unit
    where they fit. Where the code cannot run on the meta device (`.item()`, shapes that depend on
    values), the shapes are derived from the probes, which run for real at small sizes, and a note
    says so; failing that, it is refused."""
    from blocktrace.output.sink import notice
    from blocktrace.sizes.naming import derived_trace, named
    from blocktrace.sizes.stack import fit_shapes

    try:
        return named(_run(spec, "meta", frozen), spec, unit)
    except TraceError as error:
        if device == Device.meta or not _meta_unsupported(error):
            # torch's meta kernels word an error their own way: say where it ran
            raise TraceError(f"{error} (on the meta device)") from error
        reason = str(error)
    # a single unit's fit is the one already made; a stack's needs the stack traced small
    shape_fit = unit if spec.layers == 1 else fit_shapes(spec, frozen) if unit is not None else None
    derived = derived_trace(spec, shape_fit) if shape_fit is not None else None
    if derived is None:
        why = (
            "2 small CPU runs do not scale to its sizes" if spec.symbols.basis else "it has no sizes to scale"
        )
        raise TraceError(
            f"{reason}; the meta device cannot run it and {why} (--device cpu runs it for real, if it fits "
            "in memory)"
        )
    notice("note", f"the meta device cannot run this model ({reason}); shapes derived from 2 small CPU runs")
    return derived


def _meta_unsupported(error: TraceError) -> bool:
    """Whether the forward failed for want of values, which the meta device does not have."""
    text = str(error.__cause__ or error).lower()
    return "meta" in text or "data-dependent" in text or isinstance(error.__cause__, NotImplementedError)


def trace_config(config: BlockConfig, device: Device = Device.probe, frozen: tuple[str, ...] = ()) -> Trace:
    """The named trace of a built-in Block family."""
    return trace_spec(BlockSpec(config), device, frozen)


def _check_memory(spec: ModelSpec, device: Device, sized: Trace | None) -> None:
    """Refuse, in one sentence, a real run whose weights and activations would not fit in the memory
    free for it, rather than be killed halfway through by the kernel. The activations are every
    tensor the forward creates, read off a trace at full size that cost nothing (the probes' derived
    trace, or a meta one; an upper bound: the forward frees some as it goes). Without one, the
    weights alone are counted, off the module built on the meta device."""
    import math

    from blocktrace.views.stats import itemsize, totals

    if sized is not None:
        weights = sum(math.prod(w.shape) for c in sized.calls for w in c.weights if w.tied is None)
        inputs = sum(math.prod(t.shape) * itemsize(t.dtype) for t in sized.inputs)  # token ids: int64
        need = weights * spec.dtype.itemsize + inputs + totals(sized).activation_bytes
        what = "the weights, input and activations"
    else:
        module = spec.build(spec.sizes, "meta", spec.layers)
        need, what = sum(p.numel() * p.element_size() for p in module.parameters()), "the weights alone"
    free = _free_bytes(device)
    if need > free:
        raise ConfigError(
            f"--device {device}: {what} take {need / 2**30:.1f} GiB, over the "
            f"{free / 2**30:.1f} GiB free; --device probe (the default) gives the same shapes"
        )


def _free_bytes(device: Device) -> int:
    if device == Device.cuda:
        import torch

        return torch.cuda.mem_get_info()[0]
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def cached_trace(
    model: BlockConfig | ModelRequest,
    device: Device = Device.probe,
    frozen: tuple[str, ...] = (),
    use_cache: bool = True,
) -> Trace:
    """The named trace of what was asked for, answered from the cache of traces when it holds this
    exact request; torch is imported only on a miss."""
    from blocktrace import cache

    request = model if isinstance(model, ModelRequest) else ModelRequest(model)
    key = request.cache_key() if use_cache else None
    if key is not None and (hit := cache.load(key, device, frozen)) is not None:
        return hit
    load_torch()
    traced = trace_spec(request.spec(), device, frozen)
    if key is not None:
        cache.store(traced, key, device, frozen)
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
