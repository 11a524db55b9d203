"""The Python API: trace a live module, a function of sizes, a Block or a Hugging Face config, and
draw it. The CLI's commands call the same functions. torch is imported only when something is traced.

    import blocktrace
    print(blocktrace.diagram(preset="llama", n_embd=256, n_head=4))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from blocktrace.errors import BlocktraceError, ConfigError, ran_before

if TYPE_CHECKING:  # imported where used: the CLI's --help imports this package and needs none of it
    from blocktrace.api.shown import Shown
    from blocktrace.models.request import ModelRequest
    from blocktrace.tracing.trace import Trace
    from blocktrace.views.shapes import Shapes

__all__ = ["Shown", "diagram", "grad", "memory", "source", "table", "trace"]


def trace(
    model: Any = None,
    /,
    *args: Any,
    device: str | None = None,
    dims: Mapping[str, int] | None = None,
    freeze: Sequence[str] = (),
    cache: bool = True,
    stats: bool = False,
    **kwargs: Any,
) -> Trace:
    """The trace of what is named, by the first argument:

    - an nn.Module: called as `model(*args, **kwargs)`, where its tensors are (or on a copy on the
      meta device, `device="meta"`); the module comes back as it was;
    - a function whose int parameters (each with a default) are the sizes, returning (module, args)
      or (module, args, kwargs): `dims` gives sizes in place of the defaults, `dtype=` the dtype;
    - nothing: a model named by keywords as the CLI's flags name it (`preset=`, `n_embd=`, `hf=`,
      `module=`, `batch=`, `seq=`, `dtype=` ...);
    - a Trace: itself (and a ModelRequest, the CLI's: its trace).

    `device` ("probe", "meta", "cpu", "cuda") and `freeze` (module path globs set requires_grad=False)
    are as on the command line; so is `stats` (each tensor with its values' statistics, from a real
    run of a model named by keywords, seeded with 0). Raises BlocktraceError, in one sentence."""
    from blocktrace.api.live import factory_trace, is_module, trace_live
    from blocktrace.api.request import model_request
    from blocktrace.models.request import ModelRequest
    from blocktrace.tracing.trace import Trace

    if isinstance(model, Trace):
        if args or kwargs or dims:
            raise ConfigError("a Trace is traced already: give it alone")
        return model
    if isinstance(model, ModelRequest):  # the CLI's flags, checked already
        return _cached(model, device, freeze, cache, stats)
    if stats and model is not None:
        raise ConfigError("stats are for a model named by keywords (preset=, hf=, module=, ...)")
    if is_module(model):
        if dims or freeze:
            raise ConfigError("dims and freeze are for a function of sizes or a Block, not a live module")
        return trace_live(model, args, kwargs, device)
    if args:
        raise ConfigError("positional inputs are for a live nn.Module (its forward's arguments)")
    if callable(model):
        extra = sorted(set(kwargs) - {"dtype"})
        if extra:
            raise ConfigError(f"unknown keyword {extra[0]!r}: a function of sizes takes dims= and dtype=")
        return factory_trace(
            model, dims or {}, kwargs.get("dtype", "float32"), device or "probe", tuple(freeze)
        )
    if model is not None:
        raise ConfigError(
            f"cannot trace a {type(model).__name__}: give an nn.Module, a function of sizes, a Trace, or "
            "keywords (preset=, hf=, module=, ...)"
        )
    if dims:
        kwargs = {**kwargs, "dim": [f"{name}={size}" for name, size in dims.items()]}
    return _cached(model_request(kwargs), device, freeze, cache, stats)


def _cached(
    request: ModelRequest, device: str | None, freeze: Sequence[str], cache: bool, stats: bool = False
) -> Trace:
    from blocktrace.models.spec import Device, choice
    from blocktrace.pipeline import cached_trace

    chosen = choice(Device, device or "probe", "device")
    return cached_trace(request, chosen, tuple(freeze), cache, stats)


def _ran(args: tuple, kwargs: dict[str, Any], partial: bool) -> tuple[Trace, BlocktraceError | None]:
    """The trace of `trace(*args, **kwargs)`; with `partial`, where its forward fails, the trace of
    what ran before the failure (its `stopped` the failure's line), and the failure."""
    from dataclasses import replace

    from blocktrace.tracing.trace import Trace

    try:
        return trace(*args, **kwargs), None
    except BlocktraceError as error:
        ran = ran_before(error)
        if not partial or not isinstance(ran, Trace):
            raise
        return replace(ran, stopped=str(error)), error


def diagram(
    *args: Any,
    shapes: str = "symbolic",
    formulas: bool = False,
    ascii: bool = False,
    width: int | None = None,
    collapse: bool = True,
    partial: bool = False,
    **kwargs: Any,
) -> Shown:
    """The data-flow diagram of what `trace(*args, **kwargs)` traces (or of a Trace), with the
    diagram command's options. `partial`: where the forward fails, the diagram of what ran up to
    the failure instead of the error, the failure in its `failure` and its first line."""
    from blocktrace.api.shown import Shown
    from blocktrace.views.diagram.report import DiagramView

    traced, failure = _ran(args, kwargs, partial)
    return Shown(DiagramView(traced, _shapes(shapes), formulas, ascii, _width(width), collapse), failure)


def table(
    *args: Any,
    shapes: str = "symbolic",
    depth: int | None = None,
    expand: bool = False,
    partial: bool = False,
    **kwargs: Any,
) -> Shown:
    """The table of every call, op and residual add, with the table command's options (`expand`:
    every layer's rows, where a run of identical layers is otherwise one row and one layer's;
    `partial`: as diagram's, the failure in the last line)."""
    from blocktrace.api.shown import Shown
    from blocktrace.views.steps import StepTree
    from blocktrace.views.table.build import build_table
    from blocktrace.views.table.render import TableView

    if depth is not None and depth < 0:
        raise ConfigError(f"depth must be 0 or more, got {depth}")
    traced, failure = _ran(args, kwargs, partial)
    built = build_table(StepTree(traced), depth, collapse=not expand)
    return Shown(TableView(built, _shapes(shapes)), failure)


def source(
    *args: Any,
    shapes: str = "symbolic",
    function: Sequence[str] = (),
    width: int | None = None,
    **kwargs: Any,
) -> Shown:
    """The code that ran, each line with the shapes it made, with the source command's options
    (`function`: glob patterns of the functions to print)."""
    from blocktrace.api.shown import Shown
    from blocktrace.views.source.render import SourceListing
    from blocktrace.views.source.view import source_view

    chosen = _shapes(shapes)
    patterns = (function,) if isinstance(function, str) else tuple(function)
    return Shown(SourceListing(source_view(trace(*args, **kwargs), chosen, patterns), chosen, _width(width)))


def memory(*args: Any, optimizer: str = "adamw", mixed: bool = False, **kwargs: Any) -> Shown:
    """What training and inference hold, with the memory command's options: a model named by
    keywords as the CLI's flags name it (`preset=`, `n_embd=`, `hf=`, `module=` ...), or the CLI's
    ModelRequest. A live module or a Trace is refused: the memory is measured by running a model
    built afresh at full size on the meta device."""
    from blocktrace.api.shown import Shown
    from blocktrace.models.spec import choice
    from blocktrace.pipeline import memory_record
    from blocktrace.views.memory.build import Optimizer, memory_view
    from blocktrace.views.memory.render import MemoryView

    request = _request(args, kwargs, "memory")
    chosen = choice(Optimizer, optimizer, "optimizer")
    return Shown(MemoryView(memory_view(memory_record(request), chosen, mixed)))


def grad(*args: Any, seed: int = 0, device: str = "cpu", init: str = "torch", **kwargs: Any) -> Shown:
    """The gradient along the residual stream of a Block stack at init, with the grad command's
    options: a Block named by keywords as the CLI's flags name it (`preset=`, `n_layer=`,
    `residual=` ...), or the CLI's ModelRequest, run on `device` ("cpu" or "cuda") from `seed`, its
    Linear weights as `init` says ("torch": the modules' own, "xavier")."""
    from blocktrace.api.shown import Shown
    from blocktrace.models.spec import Device, choice
    from blocktrace.pipeline import grad_record
    from blocktrace.tracing.grad import Init
    from blocktrace.views.grad.render import GradView

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer, 0 or more, got {seed!r}")
    request = _request(args, kwargs, "grad")
    chosen = choice(Device, device, "device")
    return Shown(GradView(grad_record(request, chosen, seed, choice(Init, init, "init"))))


def _request(args: tuple, kwargs: dict[str, Any], name: str) -> ModelRequest:
    """The model named by keywords, or the CLI's ModelRequest given alone."""
    from blocktrace.api.request import model_request
    from blocktrace.models.request import ModelRequest

    if len(args) == 1 and isinstance(args[0], ModelRequest) and not kwargs:
        return args[0]
    if args:
        raise ConfigError(
            f"{name}() takes a model named by keywords (preset=, hf=, module=, ...), not an object"
        )
    return model_request(kwargs)


def _shapes(value: str) -> Shapes:
    from blocktrace.models.spec import choice
    from blocktrace.views.shapes import Shapes

    return choice(Shapes, value, "shapes")


def _width(value: int | None) -> int | None:
    if value is not None and value < 20:
        raise ConfigError(f"width must be 20 or more, got {value}")
    return value
