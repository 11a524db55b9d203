"""model spec -> module -> trace: what every command that traces starts with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blocktrace.errors import ConfigError, TraceError, error_line
from blocktrace.models.block.config import BlockConfig
from blocktrace.models.block.spec import BlockSpec
from blocktrace.models.request import ModelRequest
from blocktrace.models.spec import Device, ModelSpec
from blocktrace.models.user_output import user_output_to_stderr
from blocktrace.tracing.trace import Trace

if TYPE_CHECKING:
    from blocktrace.models.memory_guard import MetaBuild
    from blocktrace.sizes.fit import ShapeFit
    from blocktrace.tracing.grad import Init
    from blocktrace.tracing.grad_record import GradRecord
    from blocktrace.tracing.memory_record import MemoryRecord


def trace_spec(
    spec: ModelSpec, device: Device = Device.probe, frozen: tuple[str, ...] = (), stats: bool = False
) -> Trace:
    """The named trace of `spec`.

    device "probe" derives the full-size shapes from two tiny CPU probes (falling back to "meta"
    if the probes cannot be fitted); "meta" traces the full-size module on PyTorch's meta device;
    "cpu" and "cuda" run it with real tensors. `frozen`: module path globs to set requires_grad=False.
    A spec with `full_size_trace` is traced on the meta device under "probe" too, the probes only
    naming its sizes. What the model's code prints goes to stderr. `stats`: each tensor with the
    statistics of its values, from a real run seeded with 0 (cpu or cuda only).
    """
    from blocktrace.progress import stage

    if stats and device not in (Device.cpu, Device.cuda):
        raise ConfigError(
            f"--stats reads the values that flowed: give --device cpu (or cuda), not {device}, which has none"
        )
    stage("probing at small sizes" if device == Device.probe else f"tracing on {device}")
    if device == Device.cuda:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: this torch build or machine has no CUDA device")
    with user_output_to_stderr():
        traced = _trace_spec(spec, device, frozen, stats)
    from blocktrace.output.sink import notice

    for line in getattr(spec, "notes", ()):  # a spec's word on how it built the model (HFSpec's MoE)
        notice("note", line)
    return traced


def _trace_spec(spec: ModelSpec, device: Device, frozen: tuple[str, ...], stats: bool) -> Trace:
    from blocktrace.sizes.naming import derived_trace, named
    from blocktrace.sizes.stack import fit_shapes

    built: MetaBuild | None = None
    if device in (Device.cpu, Device.cuda):  # a model that could never run: refused before any probe
        from blocktrace.models.memory_guard import check_weights

        built = check_weights(spec, device)
    if spec.full_size_trace:
        from blocktrace.output.sink import notice

        spec, unit, why = _related_fit(spec, frozen)
        traced = _full_size(spec, device, frozen, stats, built, unit)
        if why is not None:  # said once the trace is made: a failure is its one line alone
            notice("note", why)
        return traced
    shape_fit = fit_shapes(spec, frozen)
    derived = derived_trace(spec, shape_fit) if shape_fit is not None else None
    if device == Device.probe and derived is not None:
        return derived
    if device in (Device.cpu, Device.cuda):
        _check_memory(spec, device, derived, built)
    return named(
        _run(spec, Device.meta if device == Device.probe else device, frozen, stats), spec, shape_fit
    )


def _run(spec: ModelSpec, device: str, frozen: tuple[str, ...], stats: bool = False) -> Trace:
    """The trace of the full-size module on `device`; with `stats`, its weights and inputs drawn
    from seed 0, so that the values repeat."""
    from blocktrace.progress import stage
    from blocktrace.tracing.freeze import freeze
    from blocktrace.tracing.tracer import trace

    stage(f"tracing at full size on {device}")
    import torch

    try:
        if stats:
            torch.manual_seed(0)
        module = spec.build(spec.sizes, device, spec.layers)
        freeze(module, frozen)
        if stats:
            torch.manual_seed(0)
        args, kwargs = spec.inputs(spec.sizes, device)
        return trace(module, args, kwargs, stats=stats)
    except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
        if isinstance(error, TraceError):
            raise
        raise TraceError(f"--device {device}: {error_line(error)}") from error


def _unit_fit(spec: ModelSpec, frozen: tuple[str, ...]) -> ShapeFit | None:
    """The probes' fit of one unit of code we did not write, or None: no sizes to name, or the code
    does not run at the probes' sizes (then the full-size trace goes unnamed)."""
    from blocktrace.models.memory_guard import check_probe
    from blocktrace.sizes.fit import fit_probes

    if not spec.symbols.basis:
        return None
    try:
        check_probe(spec, spec.symbols.probes()[-1])
        return fit_probes(spec, frozen)
    except (TraceError, ConfigError):
        return None


def _full_size(
    spec: ModelSpec,
    device: Device,
    frozen: tuple[str, ...],
    stats: bool,
    built: MetaBuild | None,
    unit: ShapeFit | None,
) -> Trace:
    from blocktrace.sizes.naming import named

    if device in (Device.probe, Device.meta):
        return _trace_full_size(spec, device, frozen, unit)
    try:  # the meta device tells what a real run needs, at no cost
        sized: Trace | None = _run(spec, "meta", frozen)
    except TraceError:
        sized = None
    _check_memory(spec, device, sized, built)
    return named(_run(spec, device, frozen, stats), spec, unit)


def _related_fit(spec: ModelSpec, frozen: tuple[str, ...]) -> tuple[ModelSpec, ShapeFit | None, str | None]:
    """The spec, its probes' fit, and a note to give; where the probes do not run, the spec with its
    sizes related as its code relates them (HFSpec.related) if those do, and why; else no fit, and
    that no size is named."""
    unit = _unit_fit(spec, frozen)
    offer = getattr(spec, "related", None)
    found = offer() if unit is None and offer is not None else None
    if found is not None and (related := _unit_fit(found[0], frozen)) is not None:
        return found[0], related, found[1]
    if unit is None and spec.symbols.basis:
        return (
            spec,
            None,
            (
                "the dims are shown as numbers: one unit of the model does not run, or does not scale, at "
                "the probes' small sizes, so no size is named"
            ),
        )
    return spec, unit, None


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
        traced = named(_run(spec, "meta", frozen), spec, unit)
        if unit is not None and not traced.symbols:
            notice(
                "note",
                "the dims are shown as numbers: the full-size trace differs in structure from the probes' "
                f"{'one layer' if spec.layers > 1 else 'unit'} beyond repeating it, so no size is named",
            )
        return traced
    except TraceError as error:
        alternative = _meta_alternative(spec, device, frozen, error)
        if alternative is not None:
            return alternative
        if device == Device.probe and not spec.symbols.basis and _meta_unsupported(error):
            return _on_cpu_instead(spec, frozen, error)
        if device == Device.meta or not _meta_unsupported(error):
            if _fails_on_cpu_too(spec, frozen, error):
                raise
            if device == Device.meta or unit is None:
                # torch's meta kernels word an error their own way: say where it ran
                instead = (
                    "; without --device meta it runs on the CPU at the sizes given"
                    if not spec.symbols.basis and _meta_unsupported(error)
                    else ""
                )
                raise TraceError(f"{error} (on the meta device{instead})") from error
            # the probes ran one unit on the CPU: what failed is the meta device's (a kernel that
            # wants another dtype there, as the grouped matmul of MoE experts does)
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


def _on_cpu_instead(spec: ModelSpec, frozen: tuple[str, ...], error: TraceError) -> Trace:
    """A model with no sizes to scale (a module class fed --input shapes) that the meta device
    cannot run, an op whose output's shape is its input's values (an MoE's torch.where over the
    experts chosen): run once on the CPU at the sizes given, where it fits, seeded so that it repeats,
    and said in a note. What follows the values (the tokens each expert takes) is that input's."""
    import torch

    from blocktrace.models.memory_guard import check_weights
    from blocktrace.output.sink import notice
    from blocktrace.sizes.naming import named

    _check_memory(spec, Device.cpu, None, check_weights(spec, Device.cpu))
    with torch.random.fork_rng(devices=[]):  # the caller's random numbers are left as they were
        torch.manual_seed(0)
        traced = named(_run(spec, "cpu", frozen), spec, None)
    cause = str(error.__cause__ or "")
    where = str(error).removesuffix(f": {cause}") if cause else str(error)
    notice(
        "note",
        f"the meta device cannot run this model ({where}): it needs the values; traced on the CPU at "
        "the sizes given, from seed 0, so what follows the values, such as the tokens each MoE expert "
        "takes, is that input's routing, not a prediction for other inputs",
    )
    return traced


def _meta_alternative(
    spec: ModelSpec, device: Device, frozen: tuple[str, ...], error: TraceError
) -> Trace | None:
    """Where the meta device cannot run the model's default path but the library offers another that
    it can (transformers' eager attention), the trace of that one, said in a note; else None."""
    from blocktrace.output.sink import notice

    offer = getattr(spec, "meta_alternative", None)
    found = offer() if offer is not None and _meta_unsupported(error) else None
    if found is None:
        return None
    other, why = found
    try:
        traced = _trace_full_size(other, device, frozen, _unit_fit(other, frozen))
    except TraceError:
        return None  # no better: the default's error is the one to say
    notice("note", why)
    return traced


def _fails_on_cpu_too(spec: ModelSpec, frozen: tuple[str, ...], error: TraceError) -> bool:
    """Whether a small real CPU run of one unit fails as the meta device's did (the same exception
    type): then the error is the model's, not the meta device's. Without sizes to make it small, the
    only CPU run is the full size, not tried for an error's wording."""
    from blocktrace.models.memory_guard import check_probe
    from blocktrace.sizes.fit import probe_module, probe_trace

    if not spec.symbols.basis:
        return False
    sizes = spec.symbols.probes()[0]
    try:
        check_probe(spec, sizes)
        probe_trace(spec, sizes, probe_module(spec, sizes, frozen))
    except (TraceError, ConfigError) as cpu_error:
        return type(cpu_error.__cause__) is type(error.__cause__)
    return False


def _meta_unsupported(error: TraceError) -> bool:
    """Whether the forward failed for want of values, which the meta device does not have."""
    text = str(error.__cause__ or error).lower()
    return "meta" in text or "data-dependent" in text or isinstance(error.__cause__, NotImplementedError)


def trace_config(config: BlockConfig, device: Device = Device.probe, frozen: tuple[str, ...] = ()) -> Trace:
    """The named trace of a built-in Block family."""
    return trace_spec(BlockSpec(config), device, frozen)


def _check_memory(
    spec: ModelSpec, device: Device, sized: Trace | None, built: MetaBuild | None = None
) -> None:
    """Refuse a real run that would not fit (models/memory_guard.py); `sized`, a full-size trace
    that cost nothing, counts the activations where the meta device cannot run the model."""
    from blocktrace.models.memory_guard import check_memory
    from blocktrace.views.stats import totals

    check_memory(spec, device, None if sized is None else totals(sized).activation_bytes, built)


def cached_trace(
    model: BlockConfig | ModelRequest,
    device: Device = Device.probe,
    frozen: tuple[str, ...] = (),
    use_cache: bool = True,
    stats: bool = False,
) -> Trace:
    """The named trace of what was asked for, answered from the cache of traces when it holds this
    exact request; torch is imported only on a miss. A trace with `stats` is never cached."""
    from blocktrace import cache

    request = model if isinstance(model, ModelRequest) else ModelRequest(model)
    key = request.cache_key() if use_cache and not stats else None
    if key is not None and (hit := cache.load(key, device, frozen)) is not None:
        return _as_requested(hit, request)
    load_torch()
    from blocktrace.progress import stage

    stage("loading the model")
    with user_output_to_stderr():  # the spec imports the user's code, or transformers
        spec = request.spec(key)  # on the config.json hashed for the key, were it replaced since
    traced = trace_spec(spec, device, frozen, stats)
    if key is not None:
        cache.store(traced, key, device, frozen)
    return traced


def _as_requested(hit: Trace, request: ModelRequest) -> Trace:
    """A cached trace naming the model as this request named it: the entry may have been stored by a
    call that wrote the same folder another way (`./other`, an absolute path, a symbolic link)."""
    from dataclasses import replace

    from blocktrace.tracing.records import FrozenDict

    if request.source is None or request.source not in hit.config:
        return hit
    return replace(hit, config=FrozenDict({**hit.config, request.source: request.target}))


def load_torch() -> None:
    """Import torch, then exempt what it made from garbage collection: otherwise every collection
    rescans torch's objects, which costs a one-shot command more than its whole trace."""
    import gc
    import warnings

    from blocktrace.progress import stage

    stage("importing torch")
    with warnings.catch_warnings():
        # a torch build beside no numpy says so at import; blocktrace never hands torch numpy arrays
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
        try:
            import torch  # noqa: F401
        except (ImportError, OSError, MemoryError) as error:  # a broken install, or `ulimit -v` too low
            raise TraceError(
                f"cannot import torch: {error_line(error)} (is memory limited, e.g. by ulimit -v?)"
            ) from error

    gc.freeze()


def memory_record(request: ModelRequest) -> MemoryRecord:
    """What the model asked for holds in training and inference, recorded at full size on the meta
    device (tracing/saved.py): nothing is allocated, whatever its size."""
    from blocktrace.tracing.saved import record_memory

    load_torch()
    spec = request.spec()
    try:
        module = spec.build(spec.sizes, "meta", spec.layers)
        args, kwargs = spec.inputs(spec.sizes, "meta")
        return record_memory(module, args, kwargs, spec.sizes.get("T"))
    except (RuntimeError, NotImplementedError) as error:
        if isinstance(error, TraceError):
            raise
        raise TraceError(f"the meta device cannot run this model: {error_line(error)}") from error


def grad_record(request: ModelRequest, device: Device, seed: int, init: Init) -> GradRecord:
    """The gradient along the residual stream of the Block stack asked for, at init: built with
    real tensors on `device` from `seed`, one forward and one backward (tracing/grad.py)."""
    from blocktrace.tracing.grad import initialise, measure_grad

    if request.source is not None:
        raise ConfigError(
            f"blocktrace grad measures the built-in Block families (--preset, --residual, --n-layer), "
            f"not --{request.source}"
        )
    if device not in (Device.cpu, Device.cuda):
        raise ConfigError(
            f"blocktrace grad runs real tensors: give --device cpu (or cuda), not {device}; the "
            "meta device has no values to take gradients of"
        )
    spec = BlockSpec(request.config)
    load_torch()
    import torch

    if device == Device.cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda: this torch build or machine has no CUDA device")
    _check_memory(spec, device, cached_trace(request))
    from blocktrace.progress import stage

    stage(f"one seeded step on {device}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU's sums in one order whatever its cores: the same bytes anywhere
    try:
        torch.manual_seed(seed)  # the weights, then the input, each drawn from the seed
        module = spec.build(spec.sizes, device.value, spec.layers)
        initialise(module, init)
        torch.manual_seed(seed)
        args, kwargs = spec.inputs(spec.sizes, device.value)
        layers = list(getattr(module, "h", [module]))  # a BlockStack's Blocks, or the one Block
        return measure_grad(module, layers, args, kwargs, seed, init.value, spec.describe())
    except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError
        raise TraceError(f"--device {device}: {error_line(error)}") from error
    finally:
        torch.set_num_threads(threads)
