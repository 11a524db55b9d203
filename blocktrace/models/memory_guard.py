"""Refuse a real run (`--device cpu`, `cuda`) that would not fit in memory, in one sentence, rather
than be killed halfway through by the kernel.

The bound is the weights and buffers and the inputs (a tenth over, for the allocator), the
activations, and SLACK for what does not grow with the model (kernel workspaces, the tracer's
records). The activations are PEAK_MARGIN times the most bytes of the forward's own tensors alive at
once (tracing/saved.py's inference peak: each storage from the op that made it to the last op that
read it, recorded under no_grad on the meta device, so it costs nothing at any size), or every
tensor the forward creates where a trace says so and that is less. The margin is measured: a real
traced run held 2.1 to 3.4 times the live peak (the allocator keeps freed blocks of a few MiB, and
the tracer keeps the frames of the forward's functions until the trace ends);
tests/test_memory_guard.py holds the bound above the peak RSS growth of real runs at several sizes.

It is compared with what the kernel can give without swapping: MemAvailable (free memory plus the
page cache and reclaimable slabs it can drop), not MemFree; on CUDA, the device's free memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from blocktrace.errors import ConfigError, TraceError
from blocktrace.models.spec import Device, ModelSpec

if TYPE_CHECKING:
    import torch

WEIGHT_MARGIN = Fraction(
    11, 10
)  # weights and inputs are allocated as counted; a tenth for the allocator's pages
PEAK_MARGIN = 4  # the real activations measured 2.1 to 3.4 times the live-tensor peak (see the test)
SLACK = 64 * 2**20  # bytes: workspaces and records, which do not grow with the model
PROBE_BYTES = 2**30  # one unit at the probes' sizes of a few dozen holds kilobytes
MEMINFO = "/proc/meminfo"


@dataclass(frozen=True)
class Need:
    weights: int  # parameters and buffers, each storage once
    inputs: int
    peak: int | None  # the forward's live-tensor peak on the meta device; None where it cannot run there
    created: int | None = None  # every tensor the forward creates, where a trace says: never exceeded
    uncounted: bool = False  # the weights and inputs alone were over: the activations not counted

    @property
    def activations(self) -> int:
        """The most the activations are taken to reach."""
        if self.uncounted:
            return 0
        bounds = [
            b for b in (None if self.peak is None else self.peak * PEAK_MARGIN, self.created) if b is not None
        ]
        return min(bounds, default=0)

    @property
    def bound(self) -> int:
        """The most bytes the run is taken to reach."""
        return math.ceil((self.weights + self.inputs) * WEIGHT_MARGIN) + self.activations + SLACK

    @property
    def subject(self) -> str:
        """What the bound counts, as the refusal says it."""
        if self.uncounted:
            return "the weights and input alone"
        return f"the weights, input and {self.what}"

    @property
    def what(self) -> str:
        if self.peak is None and self.created is None:
            return "no activations (the meta device cannot run it to count them)"
        if self.peak is None or (self.created is not None and self.created < self.peak * PEAK_MARGIN):
            return "every tensor the forward creates"
        return f"{PEAK_MARGIN} times the activations alive at once"


@dataclass(frozen=True)
class MetaBuild:
    """The model and its inputs built on the meta device, once for every count of a run."""

    module: torch.nn.Module
    args: tuple
    kwargs: dict[str, Any]


def build_on_meta(spec: ModelSpec) -> MetaBuild | None:
    """`spec` built at full size on the meta device; None where it cannot be built there."""
    try:
        module = spec.build(spec.sizes, "meta", spec.layers)
        args, kwargs = spec.inputs(spec.sizes, "meta")
    except KeyboardInterrupt:
        raise
    except BaseException:  # the user's code failing, sys.exit() included: the real run says it, once
        return None
    return MetaBuild(module, args, kwargs)


def check_weights(spec: ModelSpec, device: Device) -> MetaBuild | None:
    """ConfigError at once where the weights and inputs alone are over the memory the device has:
    before any probe or trace of a model that could never run. Returns the meta build it counted,
    for check_memory to count the activations on."""
    free = available_bytes(device)
    built = build_on_meta(spec)
    need = measure(spec, free=free, weights_only=True, built=built)
    if need is not None and need.bound > free:
        raise _over(need, device, free)
    return built


def check_probe(spec: ModelSpec, sizes: dict[str, int]) -> None:
    """TraceError where one unit of `spec` at the probe's `sizes` would hold over PROBE_BYTES on the
    CPU: a size the probes do not scale (T5's relative_attention_num_buckets) stays the config's,
    and a CPU probe of 2**31 buckets would take the machine's memory. Counted on the meta device."""
    module = spec.build(sizes, "meta", 1)
    held = storage_bytes([*module.parameters(), *module.buffers()])
    if held > PROBE_BYTES:
        raise TraceError(
            f"a probe at small sizes would hold {held / 2**30:.1f} GiB: a size it does not scale is large"
        )


def _over(need: Need, device: Device, free: int) -> ConfigError:
    return ConfigError(
        f"--device {device}: {need.subject} take up to {need.bound / 2**30:.1f} GiB, "
        f"over the {free / 2**30:.1f} GiB available; --device probe (the default) gives the same shapes"
    )


def check_memory(
    spec: ModelSpec, device: Device, created: int | None = None, built: MetaBuild | None = None
) -> Need | None:
    """The run's bound; ConfigError where it is over the memory the device has for it. `created`,
    the bytes of every tensor the forward creates (off a full-size trace that cost nothing), counts
    the activations where the meta device cannot run the model: more than are ever alive at once.
    `built`: check_weights' meta build, counted again rather than built again."""
    free = available_bytes(device)
    need = measure(spec, created, free, built=built)
    if need is not None and need.bound > free:
        raise _over(need, device, free)
    return need


def measure(
    spec: ModelSpec,
    created: int | None = None,
    free: int | None = None,
    weights_only: bool = False,
    built: MetaBuild | None = None,
) -> Need | None:
    """What a real run of `spec` holds at most, counted on the meta device (see the module doc);
    None where the model cannot be built there. Where the weights and inputs alone are over `free`
    (or with `weights_only`), the forward is not run to count the activations (a meta run of a huge
    stack takes a while). `built`: the meta build to count, where one was made already."""
    import torch
    from torch.utils._pytree import tree_leaves

    from blocktrace.tracing.saved import inference_peak

    built = built or build_on_meta(spec)
    if built is None:
        return None
    module, args, kwargs = built.module, built.args, built.kwargs
    weights = storage_bytes([*module.parameters(), *module.buffers()])
    inputs = storage_bytes(t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
    alone = Need(weights, inputs, None, uncounted=True)
    if weights_only or (free is not None and alone.bound > free):
        return alone
    try:
        peak: int | None = inference_peak(module, args, kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException:  # code the meta device cannot run, or that fails: counted without its peak
        peak = None
    return Need(weights, inputs, peak, created)


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """The bytes of the storages of `tensors`, each once (views and tied weights share one)."""
    from blocktrace.tracing.saved import storage_key

    return sum({storage_key(t): t.untyped_storage().nbytes() for t in tensors}.values())


def available_bytes(device: Device) -> int:
    """The bytes `device` can give a run: MemAvailable on Linux, else the free pages."""
    if device == Device.cuda:
        import torch

        return torch.cuda.mem_get_info()[0]
    try:
        with open(MEMINFO, encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
