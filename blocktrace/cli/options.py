"""The flags the commands share, each defined once: the model source (--module, --hf), the Block's
sizes and family, tracing and output; and how they become a ModelRequest.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from blocktrace.cli.clicks import context, core
from blocktrace.models.block.families import (
    FAMILIES,
    OWN_SIZES,
    ROPE_THETA,
    ROTARY_PCT,
    Activation,
    Norm,
    Preset,
    Qkv,
    Residual,
)
from blocktrace.models.request import SOURCES, Flag, ModelRequest
from blocktrace.models.spec import Device, Dtype
from blocktrace.output import formats
from blocktrace.views.shapes import Shapes


class _Format(StrEnum):
    """What the format Enums below are to the type checker: their members are the registry's."""


def _formats(command: str) -> type[StrEnum]:
    """A StrEnum of the formats a command writes, for typer: they are defined once, in the registry."""
    return StrEnum(f"{command.title()}Format", {v: v for v in formats.names(command)})  # type: ignore[return-value]  # mypy: the functional API's return


class _Theme(StrEnum):
    """What Theme is to the type checker: its members are formats.THEMES."""


if TYPE_CHECKING:
    DiagramFormat = _Format
    TableFormat = _Format
    SourceFormat = _Format
    MemoryFormat = _Format
    GradFormat = _Format
    Theme = _Theme
else:
    DiagramFormat, TableFormat, SourceFormat, MemoryFormat, GradFormat = map(
        _formats, ("diagram", "table", "source", "memory", "grad")
    )
    Theme = StrEnum("Theme", {name: name for name in formats.THEMES})
DEFAULT_THEME = Theme(formats.THEMES[0])


SOURCE_PANEL = "Model source (default: the built-in Block)"
FAMILY_PANEL = "Block family"
SIZES_PANEL = "Sizes"
TRACE_PANEL = "Tracing"
OUTPUT_PANEL = "Output"
PANELS = (SOURCE_PANEL, FAMILY_PANEL, SIZES_PANEL, TRACE_PANEL, OUTPUT_PANEL, "Options")  # help's order


def _by_preset(name: str) -> str:
    """Each preset's value of a size: its reference's, or nanochat's (the default), for --help."""
    return ", ".join(f"{p} {getattr(FAMILIES[p].sizes or OWN_SIZES, name)}" for p in Preset)


def _set_by(name: str) -> str:
    """The presets whose reference sets what otherwise follows another flag or a default (Hkv, F, the
    rotary base), with their values, for --help."""
    sizes = {p: getattr(f.sizes, name, None) for p, f in FAMILIES.items()}
    return ", ".join(f"{p} {value:g}" for p, value in sizes.items() if value is not None)


def _size_flag(declaration: str, help: str, name: str, then: str = "") -> Any:
    """A size the preset gives unless the flag is given."""
    words = f"{help} Default: the preset's, {_by_preset(name)}{then}."
    option = typer.Option(declaration, min=1, help=words, show_default=False, rich_help_panel=SIZES_PANEL)
    return Annotated[int | None, option]


# One definition of each config flag, shared by every command that builds a Block.
NEmbd = _size_flag("--n-embd", "C: width of the residual stream.", "n_embd")
NHead = _size_flag("--n-head", "H: query heads; C must divide by it.", "n_head")
NKvHead = Annotated[
    int | None,
    typer.Option(
        "--n-kv-head",
        min=1,
        help="Hkv: key/value heads (GQA when < H); H must divide by it. Default: the --n-head value, "
        f"or, without --n-head, the preset's ({_set_by('n_kv_head')}).",
        show_default=False,
        rich_help_panel=SIZES_PANEL,
    ),
]
Seq = _size_flag(
    "--seq",
    "T: tokens per sequence, the full size traced.",
    "seq",
    "; with --hf 1024, or the model's positions if fewer",
)
Batch = Annotated[
    int, typer.Option("--batch", min=1, help="B: sequences per batch.", rich_help_panel=SIZES_PANEL)
]
MlpRatio = Annotated[
    int,
    typer.Option(
        "--mlp-ratio", min=1, help="The MLP widens C to this many times C.", rich_help_panel=SIZES_PANEL
    ),
]
NLayer = _size_flag("--n-layer", "Blocks chained one after another.", "n_layer")
MlpHidden = Annotated[
    int | None,
    typer.Option(
        "--mlp-hidden",
        help="F: the MLP's inner width, if not --mlp-ratio times C (Llama 70B: 28672 for C = 8192). "
        "Default: --mlp-ratio times C, or, without --n-embd and --mlp-ratio, the preset's "
        f"({_set_by('mlp_hidden')}).",
        show_default=False,
        rich_help_panel=SIZES_PANEL,
    ),
]
PresetOpt = Annotated[
    Preset,
    typer.Option(
        "--preset",
        help=f"The Block to build: {', '.join(f.summary for f in FAMILIES.values())}; each at its "
        "reference's sizes. The flags below override its choices and sizes.",
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
    "single: x + mlp(attn(norm(x))), one residual around both; none: mlp(norm(attn(norm(x)))), no skip.",
)
BiasOpt = _choice_flag(bool, "--bias/--no-bias", "Biases in the Linears (and LayerNorms).")
QkNormOpt = _choice_flag(bool, "--qk-norm/--no-qk-norm", "Normalise q and k per head.")
RotaryOpt = _choice_flag(bool, "--rotary/--no-rotary", "Rotary position embeddings on q and k.")
CausalOpt = _choice_flag(bool, "--causal/--no-causal", "Causal attention mask.")
RopeThetaOpt = Annotated[
    float | None,
    typer.Option(
        "--rope-theta",
        help=f"The base of the rotary frequencies. Default: the preset's ({_set_by('rope_theta')}), else "
        f"{ROPE_THETA:g}.",
        show_default=False,
        rich_help_panel=FAMILY_PANEL,
    ),
]
RotaryPctOpt = Annotated[
    float | None,
    typer.Option(
        "--rotary-pct",
        help="The part of each head the rotary embedding turns, from its first dim; the rest passes "
        f"through (GPT-NeoX's rotary_pct). Default: the preset's ({_set_by('rotary_pct')}), else "
        f"{ROTARY_PCT:g}.",
        show_default=False,
        rich_help_panel=FAMILY_PANEL,
    ),
]
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
ThemeOpt = Annotated[
    Theme,
    typer.Option(
        "--theme",
        help="svg, html: dark, as a terminal, or light, a white page whose colours read on white.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
PartialOpt = Annotated[
    bool,
    typer.Option(
        "--partial",
        help="Where the forward fails, print what ran up to the failure, with a line saying where and "
        "why it stopped; the run still fails (exit 1).",
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


def format_option(words: str) -> Any:
    """A command's --format: `words` say what each of its formats writes."""
    return typer.Option(
        "--format",
        help=f"{words} Default: as -o FILE's suffix says, else {formats.DEFAULT}.",
        show_default=False,
        rich_help_panel=OUTPUT_PANEL,
    )


def width_option(words: str) -> Any:
    """A command's --width N: `words` say what is fitted in N columns, and how."""
    return typer.Option(
        "--width",
        min=20,
        help=f"{words} Default: the terminal's width, else no limit.",
        show_default=False,
        rich_help_panel=OUTPUT_PANEL,
    )


def stats_option(what: str, then: str = "") -> Any:
    """A command's --stats: `what` it shows of the values of a real run."""
    return typer.Option(
        "--stats",
        help=f"With --device cpu or cuda: {what}, from weights and input seeded with 0: mean, std, RMS, "
        f"min, max and the fraction of zeros{then}.",
        rich_help_panel=TRACE_PANEL,
    )


def _source_option(flag: Flag) -> Any:
    """The typer option of a source's flag, from its entry in SOURCES."""
    kind = list[str] | None if flag.repeatable else str | None
    option = typer.Option(
        flag.option,
        metavar=flag.metavar,
        help=flag.help,
        show_default=False,
        rich_help_panel=SOURCE_PANEL,
    )
    return Annotated[kind, option]


_MODEL_FLAGS: tuple[tuple[str, Any, Any], ...] = tuple(
    (flag.name, _source_option(flag), None)
    for source in SOURCES.values()
    for flag in (source.option, *source.flags)
)

# Every command that builds a Block takes these flags, defined once: `block_flags` adds them to it.
_BLOCK_FLAGS: tuple[tuple[str, Any, Any], ...] = (
    ("n_embd", NEmbd, None),
    ("n_head", NHead, None),
    ("n_kv_head", NKvHead, None),
    ("seq", Seq, None),
    ("batch", Batch, 8),
    ("mlp_ratio", MlpRatio, 4),
    ("mlp_hidden", MlpHidden, None),
    ("n_layer", NLayer, None),
    ("dtype", DtypeOpt, Dtype.float32),
    ("preset", PresetOpt, Preset.nanochat),
    ("norm", NormOpt, None),
    ("activation", ActivationOpt, None),
    ("residual", ResidualOpt, None),
    ("bias", BiasOpt, None),
    ("qk_norm", QkNormOpt, None),
    ("rotary", RotaryOpt, None),
    ("rope_theta", RopeThetaOpt, None),
    ("rotary_pct", RotaryPctOpt, None),
    ("causal", CausalOpt, None),
    ("qkv", QkvOpt, None),
)


def model_request(**flags: Any) -> ModelRequest:
    """What to trace, from the flags given on the command line (raises ConfigError): checked as the
    Python API checks its keywords."""
    from blocktrace.api.request import model_request as request_of

    given = _given_flags()
    return request_of({name: value for name, value in flags.items() if name in given})


def _given_flags() -> set[str]:
    """The parameters given on the command line (not defaults)."""
    ctx = context.get_current_context(silent=True)
    if ctx is None:
        return set()
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (None, core.ParameterSource.DEFAULT)
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
