"""The flags the commands share, each defined once: the model source (--module, --hf), the Block's
sizes and family, tracing and output; and how they become a ModelRequest.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from blocktrace.errors import ConfigError
from blocktrace.models.block.config import (
    ACTIVATIONS,
    DTYPES,
    NORMS,
    PRESETS,
    QKV_LAYOUTS,
    RESIDUALS,
    BlockConfig,
)
from blocktrace.models.request import ModelRequest
from blocktrace.output import formats
from blocktrace.views.shapes import Shapes


class Device(str, Enum):
    probe = "probe"
    meta = "meta"
    cpu = "cpu"
    cuda = "cuda"


class _Choice(str, Enum):
    """What each choice Enum below is to the type checker, which cannot read the tuples they are made of."""


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum of a config field's choices, for typer: the choices are defined once, in config."""
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]  # mypy: a member


if TYPE_CHECKING:
    Dtype = _Choice
    Preset = _Choice
    Norm = _Choice
    Activation = _Choice
    Residual = _Choice
    Qkv = _Choice
    DiagramFormat = _Choice
    TableFormat = _Choice
    SourceFormat = _Choice
else:
    Dtype = _choices("Dtype", DTYPES)
    Preset = _choices("Preset", tuple(PRESETS))
    Norm = _choices("Norm", NORMS)
    Activation = _choices("Activation", ACTIVATIONS)
    Residual = _choices("Residual", RESIDUALS)
    Qkv = _choices("Qkv", QKV_LAYOUTS)

    DiagramFormat = _choices("DiagramFormat", formats.names("diagram"))
    TableFormat = _choices("TableFormat", formats.names("table"))
    SourceFormat = _choices("SourceFormat", formats.names("source"))


SIZES_PANEL = "Model sizes"
FAMILY_PANEL = "Block family"
TRACE_PANEL = "Tracing"
OUTPUT_PANEL = "Output"

# One definition of each config flag, shared by every command that builds a Block.
NEmbd = Annotated[
    int, typer.Option("--n-embd", min=1, help="C: width of the residual stream.", rich_help_panel=SIZES_PANEL)
]
NHead = Annotated[
    int,
    typer.Option("--n-head", min=1, help="H: query heads; C must divide by it.", rich_help_panel=SIZES_PANEL),
]
NKvHead = Annotated[
    int | None,
    typer.Option(
        "--n-kv-head",
        min=1,
        help="Hkv: key/value heads (GQA when < H); H must divide by it. Default: the --n-head value.",
        show_default=False,
        rich_help_panel=SIZES_PANEL,
    ),
]
Seq = Annotated[
    int,
    typer.Option(
        "--seq", min=1, help="T: tokens per sequence in the probe input.", rich_help_panel=SIZES_PANEL
    ),
]
Batch = Annotated[
    int, typer.Option("--batch", min=1, help="B: sequences in the probe input.", rich_help_panel=SIZES_PANEL)
]
MlpRatio = Annotated[
    int,
    typer.Option(
        "--mlp-ratio", min=1, help="The MLP widens C to this many times C.", rich_help_panel=SIZES_PANEL
    ),
]
NLayer = Annotated[
    int,
    typer.Option("--n-layer", min=1, help="Blocks chained one after another.", rich_help_panel=SIZES_PANEL),
]
MlpHidden = Annotated[
    int | None,
    typer.Option(
        "--mlp-hidden",
        help="F: the MLP's inner width, if not --mlp-ratio times C (Llama 70B: 28672 for C = 8192).",
        show_default=False,
        rich_help_panel=SIZES_PANEL,
    ),
]
PresetOpt = Annotated[
    Preset,
    typer.Option(
        "--preset",
        help=(
            "The Block to build: nanochat (functional RMSNorm, ReLU squared, QK-norm, rotary, GQA), gpt2 "
            "(LayerNorm, fused c_attn, GELU, biases), llama (RMSNorm, SwiGLU, rotary, GQA), neox "
            "(attention and MLP in parallel, one add), bert (post-norm, bidirectional). "
            "The flags below override its choices."
        ),
        rich_help_panel=FAMILY_PANEL,
    ),
]


def _choice_flag(kind: Any, declaration: str, help: str) -> Any:
    """A flag that overrides one of the preset's choices; not given (None), the preset's stands."""
    option = typer.Option(declaration, help=help, show_default=False, rich_help_panel=FAMILY_PANEL)
    return Annotated[kind | None, option]


NormOpt = _choice_flag(Norm, "--norm", "Norm before each sub-layer (after, with --residual post).")
ActivationOpt = _choice_flag(
    Activation, "--activation", "relu2: relu(x).square(); gelu; silu; swiglu: down(silu(gate(x)) * up(x))."
)
ResidualOpt = _choice_flag(
    Residual,
    "--residual",
    "pre: x + f(norm(x)) twice; post: norm(x + f(x)) twice; parallel: x + attn(norm(x)) + mlp(norm(x)); "
    "single: x + mlp(attn(norm(x))), one residual around both.",
)
BiasOpt = _choice_flag(bool, "--bias/--no-bias", "Biases in the Linears (and LayerNorms).")
QkNormOpt = _choice_flag(bool, "--qk-norm/--no-qk-norm", "Normalise q and k per head.")
RotaryOpt = _choice_flag(bool, "--rotary/--no-rotary", "Rotary position embeddings on q and k.")
CausalOpt = _choice_flag(bool, "--causal/--no-causal", "Causal attention mask.")
QkvOpt = _choice_flag(
    Qkv, "--qkv", "separate q, k, v projections, or one fused C -> 3C (needs --n-kv-head = --n-head)."
)
DtypeOpt = Annotated[
    Dtype, typer.Option("--dtype", help="dtype of weights and activations.", rich_help_panel=SIZES_PANEL)
]
DeviceOpt = Annotated[
    Device,
    typer.Option(
        "--device",
        help=(
            "probe: derive exact full-size shapes from two tiny CPU runs (no memory at any size); "
            "meta: trace the full-size Block on PyTorch's meta device; "
            "cpu / cuda: run it with real tensors."
        ),
        rich_help_panel=TRACE_PANEL,
    ),
]

CacheOpt = Annotated[
    bool,
    typer.Option(
        "--cache/--no-cache",
        help=(
            "Answer a repeated request from the cache of traces in $XDG_CACHE_HOME/blocktrace "
            "(keyed by blocktrace's source, torch's version, the config and --device; probe and "
            "meta only), without importing torch."
        ),
        rich_help_panel=TRACE_PANEL,
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write to FILE instead of stdout ('-': stdout). The file is replaced whole or not at all.",
        show_default=False,
        rich_help_panel=OUTPUT_PANEL,
    ),
]
ShapesOpt = Annotated[
    Shapes,
    typer.Option(
        "--shapes",
        help="symbolic: (B, T, C); concrete: (8, 1024, 768); both: (B, T, C)=(8, 1024, 768).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]


SOURCE_PANEL = "Any model"
ModuleOpt = Annotated[
    str | None,
    typer.Option(
        "--module",
        metavar="FILE.py:NAME",
        help="Trace your own model instead of the built-in Block: NAME in FILE.py (or package.module:NAME) "
        "is an nn.Module class (give --input, and --kwargs) or a function whose int parameters are the "
        "sizes, returning (module, args). This imports and runs that code.",
        show_default=False,
        rich_help_panel=SOURCE_PANEL,
    ),
]
KwargsOpt = Annotated[
    str | None,
    typer.Option(
        "--kwargs",
        metavar="JSON",
        help="With --module CLASS: its constructor's arguments, e.g. '{\"n_embd\": 768}'.",
        show_default=False,
        rich_help_panel=SOURCE_PANEL,
    ),
]
InputOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        metavar="SHAPE",
        help="With --module CLASS: the shape of a positional input, e.g. 8,1024,768, or 8,1024:long for "
        "token ids; repeatable, in order. Floats are at --dtype.",
        show_default=False,
        rich_help_panel=SOURCE_PANEL,
    ),
]
DimOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dim",
        metavar="NAME=SIZE",
        help="With --module FUNCTION: a size in place of its parameter's default, e.g. T=4096; repeatable.",
        show_default=False,
        rich_help_panel=SOURCE_PANEL,
    ),
]
HfOpt = Annotated[
    str | None,
    typer.Option(
        "--hf",
        metavar="CONFIG",
        help="Trace a Hugging Face model built from its config alone (a folder with config.json, or a Hub "
        "id; no weights, no remote code) on --batch x --seq token ids (--seq: 1024, or the model's "
        "positions if fewer). Needs pip install 'blocktrace[hf]'.",
        show_default=False,
        rich_help_panel=SOURCE_PANEL,
    ),
]
# with --hf, the config gives the sizes and the family; with --module, the code does
_HF_FLAGS = ("batch", "seq", "dtype")
_MODULE_FLAGS = ("dtype",)
_MODEL_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("module", ModuleOpt, None),
    ("kwargs", KwargsOpt, None),
    ("input", InputOpt, None),
    ("dim", DimOpt, None),
    ("hf", HfOpt, None),
)

# Every command that builds a Block takes these flags, defined once: `block_flags` adds them to it.
_BLOCK_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("n_embd", NEmbd, 768),
    ("n_head", NHead, 6),
    ("n_kv_head", NKvHead, None),
    ("seq", Seq, 1024),
    ("batch", Batch, 8),
    ("mlp_ratio", MlpRatio, 4),
    ("mlp_hidden", MlpHidden, None),
    ("n_layer", NLayer, 1),
    ("dtype", DtypeOpt, Dtype("float32")),
    ("preset", PresetOpt, Preset("nanochat")),
    ("norm", NormOpt, None),
    ("activation", ActivationOpt, None),
    ("residual", ResidualOpt, None),
    ("bias", BiasOpt, None),
    ("qk_norm", QkNormOpt, None),
    ("rotary", RotaryOpt, None),
    ("causal", CausalOpt, None),
    ("qkv", QkvOpt, None),
)


def block_config(preset: str = "nanochat", **flags: Any) -> BlockConfig:
    """The validated config for the Block flags (raises ConfigError): the preset, with every flag
    given in place of its choice."""
    values = {k: v.value if isinstance(v, Enum) else v for k, v in flags.items()}
    if values.get("mlp_hidden") is not None and values["mlp_hidden"] <= 0:
        raise ConfigError(f"--mlp-hidden must be a positive integer, got {values['mlp_hidden']}")
    return BlockConfig.from_preset(preset.value if isinstance(preset, Enum) else preset, **values)


def model_request(**flags: Any) -> ModelRequest:
    """What to trace, from the Block flags and the --module / --hf flags (raises ConfigError): a flag
    that the chosen model does not read is refused, not ignored."""
    given = _given_flags()
    module, hf = flags.pop("module"), flags.pop("hf")
    kwargs, inputs, dims = flags.pop("kwargs"), tuple(flags.pop("input") or ()), tuple(flags.pop("dim") or ())
    if module is not None and hf is not None:
        raise ConfigError("--module and --hf name two models; give one")
    if module is None and (kwargs is not None or inputs or dims):
        used = "--kwargs" if kwargs is not None else "--input" if inputs else "--dim"
        raise ConfigError(f"{used} is for --module")
    if module is not None or hf is not None:
        reads = _MODULE_FLAGS if module is not None else _HF_FLAGS
        extra = [name for name, _, _ in _BLOCK_FLAGS if name in given and name not in reads]
        if extra:
            flag = "--" + extra[0].replace("_", "-")
            source = "--module: the code" if module is not None else "--hf: the config"
            raise ConfigError(f"{flag} does not apply with {source} gives the model")
    if module is None and hf is None:
        return ModelRequest(block_config(**flags))
    # the model's own sizes are not the Block's: its flags' checks do not apply
    config = block_config(dtype=flags["dtype"])
    seq = flags["seq"] if "seq" in given else None
    return ModelRequest(config, module, kwargs, inputs, dims, hf, flags["batch"], seq)


def _given_flags() -> set[str]:
    """The parameters given on the command line (not defaults)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return set()
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    }


def block_flags(command: Callable[..., None]) -> Callable[..., None]:
    """`command(model, ...)` as a command taking the Block flags and the --module / --hf flags in
    place of `model`."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "model"]
    every = (*_BLOCK_FLAGS, *_MODEL_FLAGS)
    flags = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in every
    ]

    @functools.wraps(command)
    def with_flags(**kwargs: Any) -> None:
        model = model_request(**{name: kwargs.pop(name) for name, _, _ in every})
        command(model=model, **kwargs)

    with_flags.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # typer reads it; typeshed omits it
        [*flags, *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own)]
    )
    with_flags.__annotations__ = {
        **{n: a for n, a, _ in every},
        **{k: v for k, v in command.__annotations__.items() if k != "model"},
    }
    return with_flags
