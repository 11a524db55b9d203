"""The command line: parse flags, hand off to the pipeline, print. Nothing else lives here.

torch is imported only inside the commands that trace, so `blocktrace --help` stays instant.
"""

from __future__ import annotations

import errno
import functools
import inspect
import io
import os
import sys
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand, TyperGroup

from blocktrace import __version__, formats
from blocktrace.config import (
    ACTIVATIONS,
    DTYPES,
    NORMS,
    PRESETS,
    QKV_LAYOUTS,
    RESIDUALS,
    BlockConfig,
    ConfigError,
)
from blocktrace.request import ModelRequest
from blocktrace.shapes import Shapes
from blocktrace.trace import TraceError


class _OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr, never a traceback. Exit codes: 2 for bad input
    (flags, configs, an output path that cannot be), 1 for a run that failed (a forward, a full disk),
    0 when the reader of a pipe went away (`| head -1`), 130 on Ctrl-C."""

    def main(self, args: Any = None, prog_name: Any = None, **extra: Any) -> Any:
        from blocktrace.output import OutputError, PipeClosed, stdout_errors

        extra["standalone_mode"] = False
        if sys.stdout is None:  # closed by the shell (`>&-`): a write to it fails, not vanishes
            sys.stdout = _ClosedStdout()
        code: Any = 1
        try:
            try:
                code = super().main(args, prog_name or "blocktrace", **extra)
                if sys.stdout is not None:  # what is still buffered (help, --version) fails here
                    with stdout_errors():
                        sys.stdout.flush()
            except click.Abort as error:  # Ctrl-C inside click's own handling
                raise KeyboardInterrupt from error
            except SystemExit as error:
                # typer ends a broken pipe it meets itself (the help into `| true`) with exit 1
                if isinstance(error.__context__, BrokenPipeError):
                    raise PipeClosed() from error
                raise
            except (OSError, UnicodeEncodeError) as error:  # a write no command wrapped (help, --version)
                if isinstance(error, OSError) and error.filename:
                    raise OutputError(f"{error.filename}: {error.strerror}", 1) from error
                with stdout_errors():
                    raise error
        except (ConfigError, OutputError) as error:
            _fail(str(error), getattr(error, "exit_code", 2))
        except TraceError as error:
            _fail(str(error), 1)
        except click.ClickException as error:  # usage errors (exit_code 2) and the like
            _fail(_dedupe(error.format_message()), error.exit_code)
        except PipeClosed:
            _silence_stdout()  # let nothing flush into the closed pipe at exit
            sys.exit(0)
        except KeyboardInterrupt:
            _silence_stdout()
            sys.exit(130)
        sys.exit(code or 0)


class _ClosedStdout(io.TextIOBase):
    """What stands in for a stdout the shell closed: every write fails as writing to fd 1 would."""

    encoding = "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        raise OSError(errno.EBADF, "Bad file descriptor")


class _Command(TyperCommand):
    """A command that names a stray argument exactly (`blocktrace diagram ''`): the commands take
    options only."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        allowed, ctx.allow_extra_args = ctx.allow_extra_args, True
        try:
            rest = super().parse_args(ctx, args)
        finally:
            ctx.allow_extra_args = allowed
        if ctx.args and not allowed and not ctx.resilient_parsing:
            stray = ", ".join(repr(a) for a in ctx.args)
            ctx.fail(f"unexpected argument {stray}: `blocktrace {self.name}` takes only options (see --help)")
        return rest


def _fail(message: str, code: int) -> None:
    one_line = " ".join(message.split())
    if one_line:  # empty when click already printed the help (no command given)
        _say(f"blocktrace: error: {one_line}")
    _silence_stdout_if_broken()
    sys.exit(code)


def _say(line: str) -> None:
    """One line on stderr, if there is a stderr to write to."""
    if sys.stderr is None:
        return
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _dedupe(message: str) -> str:
    """Click and typer both add "Did you mean 'diagram'?" to an unknown command: say it once."""
    sentences = message.split(". ")
    return ". ".join(s for i, s in enumerate(sentences) if s not in sentences[:i])


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so that the interpreter's last flush has nowhere to fail."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _silence_stdout_if_broken() -> None:
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stdout()


app = typer.Typer(
    cls=_OneLineErrors,
    help="Trace the tensor shapes through a transformer Block and draw its data flow.",
    epilog="Start with: blocktrace diagram --n-embd 768 --seq 1024",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: it rewraps paragraphs, and needs no rich.markdown
    suggest_commands=False,  # click says "Did you mean ...?" itself
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Device(str, Enum):
    probe = "probe"
    meta = "meta"
    cpu = "cpu"
    cuda = "cuda"


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum of a config field's choices, for typer: the choices are defined once, in config."""
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


Dtype = _choices("Dtype", DTYPES)
Preset = _choices("Preset", tuple(PRESETS))
Norm = _choices("Norm", NORMS)
Activation = _choices("Activation", ACTIVATIONS)
Residual = _choices("Residual", RESIDUALS)
Qkv = _choices("Qkv", QKV_LAYOUTS)


DiagramFormat = _choices("DiagramFormat", formats.names("diagram"))
TableFormat = _choices("TableFormat", formats.names("table"))
SourceFormat = _choices("SourceFormat", formats.names("source"))


_MODEL = "Model sizes"
_FAMILY = "Block family"
_TRACE = "Tracing"
_OUT = "Output"

# One definition of each config flag, shared by every command that builds a Block.
NEmbd = Annotated[
    int, typer.Option("--n-embd", min=1, help="C: width of the residual stream.", rich_help_panel=_MODEL)
]
NHead = Annotated[
    int, typer.Option("--n-head", min=1, help="H: query heads; C must divide by it.", rich_help_panel=_MODEL)
]
NKvHead = Annotated[
    int | None,
    typer.Option(
        "--n-kv-head",
        min=1,
        help="Hkv: key/value heads (GQA when < H); H must divide by it. Default: the --n-head value.",
        show_default=False,
        rich_help_panel=_MODEL,
    ),
]
Seq = Annotated[
    int,
    typer.Option("--seq", min=1, help="T: tokens per sequence in the probe input.", rich_help_panel=_MODEL),
]
Batch = Annotated[
    int, typer.Option("--batch", min=1, help="B: sequences in the probe input.", rich_help_panel=_MODEL)
]
MlpRatio = Annotated[
    int,
    typer.Option("--mlp-ratio", min=1, help="The MLP widens C to this many times C.", rich_help_panel=_MODEL),
]
NLayer = Annotated[
    int, typer.Option("--n-layer", min=1, help="Blocks chained one after another.", rich_help_panel=_MODEL)
]
MlpHidden = Annotated[
    int | None,
    typer.Option(
        "--mlp-hidden",
        help="F: the MLP's inner width, if not --mlp-ratio times C (Llama 70B: 28672 for C = 8192).",
        show_default=False,
        rich_help_panel=_MODEL,
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
        rich_help_panel=_FAMILY,
    ),
]


def _choice_flag(kind: Any, declaration: str, help: str) -> Any:
    """A flag that overrides one of the preset's choices; not given (None), the preset's stands."""
    option = typer.Option(declaration, help=help, show_default=False, rich_help_panel=_FAMILY)
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
    Dtype, typer.Option("--dtype", help="dtype of weights and activations.", rich_help_panel=_MODEL)
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
        rich_help_panel=_TRACE,
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
        rich_help_panel=_TRACE,
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
        rich_help_panel=_OUT,
    ),
]
ShapesOpt = Annotated[
    Shapes,
    typer.Option(
        "--shapes",
        help="symbolic: (B, T, C); concrete: (8, 1024, 768); both: (B, T, C)=(8, 1024, 768).",
        rich_help_panel=_OUT,
    ),
]


_ANY = "Any model"
ModuleOpt = Annotated[
    str | None,
    typer.Option(
        "--module",
        metavar="FILE.py:NAME",
        help="Trace your own model instead of the built-in Block: NAME in FILE.py (or package.module:NAME) "
        "is an nn.Module class (give --input, and --kwargs) or a function whose int parameters are the "
        "sizes, returning (module, args). This imports and runs that code.",
        show_default=False,
        rich_help_panel=_ANY,
    ),
]
KwargsOpt = Annotated[
    str | None,
    typer.Option(
        "--kwargs",
        metavar="JSON",
        help="With --module CLASS: its constructor's arguments, e.g. '{\"n_embd\": 768}'.",
        show_default=False,
        rich_help_panel=_ANY,
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
        rich_help_panel=_ANY,
    ),
]
DimOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dim",
        metavar="NAME=SIZE",
        help="With --module FUNCTION: a size in place of its parameter's default, e.g. T=4096; repeatable.",
        show_default=False,
        rich_help_panel=_ANY,
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
        rich_help_panel=_ANY,
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
    ("dtype", DtypeOpt, Dtype.float32),
    ("preset", PresetOpt, Preset.nanochat),  # type: ignore[attr-defined]
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

    with_flags.__signature__ = inspect.Signature(
        [*flags, *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own)]
    )  # type: ignore[attr-defined]
    with_flags.__annotations__ = {
        **{n: a for n, a, _ in every},
        **{k: v for k, v in command.__annotations__.items() if k != "model"},
    }
    return with_flags


def _version(value: bool) -> None:
    if value:
        print(f"blocktrace {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True),
    ] = False,
) -> None:
    """Trace the tensor shapes through a transformer Block and draw its data flow.

    Every shape printed comes from running the Block: forward hooks on every module, plus an op-level
    hook for what modules do not see (F.rms_norm, relu, attention, and the residual x + f(x) adds).
    """


@app.command(cls=_Command)
@block_flags
def diagram(
    model: ModelRequest,
    device: DeviceOpt = Device.probe,
    cache: CacheOpt = True,
    shapes: ShapesOpt = Shapes.symbolic,
    formulas: Annotated[
        bool,
        typer.Option("--formulas", help="Add the formulas of each residual step.", rich_help_panel=_OUT),
    ] = False,
    fmt: Annotated[
        DiagramFormat | None,
        typer.Option(
            "--format",
            help="text: the drawing; markdown: the drawing as a fenced block, then the legend as a table "
            "(and the formulas, with --formulas); json: the trace; svg, html: the drawing as a picture, "
            "coloured as in a terminal. Default: as -o FILE's suffix says, else text.",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = None,
    ascii_only: Annotated[
        bool,
        typer.Option("--ascii", help="7-bit ASCII instead of Unicode box drawing.", rich_help_panel=_OUT),
    ] = False,
    collapse: Annotated[
        bool,
        typer.Option(
            "--collapse/--no-collapse",
            help="Draw a run of identical Blocks once, as 'Block x N' (the JSON keeps every call).",
            rich_help_panel=_OUT,
        ),
    ] = True,
    width: Annotated[
        int | None,
        typer.Option(
            "--width",
            min=20,
            help="Fit the drawing in N columns: side notes wrap, then are cut; a width the drawing cannot "
            "fit in is refused. Default: the terminal's width, else no limit.",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Draw the Block's data flow with the tensor shape on every edge.

    The input x (B, T, C) enters at the top; each sub-layer branches off the residual stream through
    RMSNorm and Attention (or MLP), and the residual highway carries x around it to a (+). Beside
    Attention and MLP: their internals, step by step. A legend gives each symbol's value.

    Examples:

    \b
      blocktrace diagram --n-embd 768 --seq 1024
      blocktrace diagram --n-embd 8192 --n-head 64 --n-kv-head 8 --seq 131072 --batch 1
      blocktrace diagram --format markdown --formulas -o docs/block.md
      blocktrace diagram --format json | jq '.residual_adds[].wraps'
      blocktrace diagram --preset llama -o docs/llama.svg
    """
    from blocktrace.pipeline import cached_trace

    name = formats.resolve("diagram", _value(fmt), output)  # a bad -o is said before tracing
    trace = cached_trace(model, device.value, use_cache=cache)
    options = {"shapes": shapes, "formulas": formulas, "ascii_only": ascii_only, "width": width}
    formats.write("diagram", name, trace, output, collapse=collapse, **options)


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


@app.command(cls=_Command)
@block_flags
def table(
    model: ModelRequest,
    device: DeviceOpt = Device.probe,
    cache: CacheOpt = True,
    freeze: Annotated[
        list[str] | None,
        typer.Option(
            "--freeze",
            metavar="PATTERN",
            help="Set requires_grad=False on the modules whose path matches this glob (e.g. 'attn.*'); "
            "repeatable.",
            rich_help_panel=_TRACE,
        ),
    ] = None,
    depth: Annotated[
        int | None,
        typer.Option(
            "--depth",
            min=0,
            help="Fold rows nested deeper than N into their parent (0: the root only); all if not given.",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = None,
    shapes: ShapesOpt = Shapes.symbolic,
    fmt: Annotated[
        TableFormat | None,
        typer.Option(
            "--format",
            help="text: a table for reading; markdown: a pipe table; json and csv: for scripts "
            "(see docs/table.md); svg, html: the whole table as a picture. "
            "Default: as -o FILE's suffix says, else text.",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """List every module call, functional op and residual add with its shapes, weights,
    parameters, requires_grad and FLOPs, then the totals.

    Rows come in execution order, indented by nesting. FLOPs are torch.utils.flop_counter's
    formulas for each aten op (matmuls, convolutions, attention); an op with none shows "?", never 0.
    Activations are every tensor the forward creates, at --dtype.

    In a terminal the text table fits its width: it leaves out the weight column, then trainable,
    then kind, then wraps the shapes and shortens the paths; a number is never cut. To a file or a
    pipe it is printed whole.

    Examples:

    \b
      blocktrace table --n-embd 768 --seq 1024
      blocktrace table --freeze 'attn.*' --depth 1
      blocktrace table --n-head 8 --n-kv-head 2 -o block.csv
    """
    from blocktrace.pipeline import cached_trace
    from blocktrace.table import build_table

    name = formats.resolve("table", _value(fmt), output)
    result = build_table(cached_trace(model, device.value, tuple(freeze or ()), cache), depth)
    formats.write("table", name, result, output, shapes=shapes)


@app.command(cls=_Command)
@block_flags
def source(
    model: ModelRequest,
    device: DeviceOpt = Device.probe,
    cache: CacheOpt = True,
    function: Annotated[
        list[str] | None,
        typer.Option(
            "--function",
            metavar="PATTERN",
            help="Print only the functions whose qualified name matches this glob (e.g. 'MLP.forward', "
            "'*attn*'); repeatable. Default: every function that ran.",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = None,
    shapes: ShapesOpt = Shapes.symbolic,
    fmt: Annotated[
        SourceFormat | None,
        typer.Option(
            "--format",
            help="text: the numbered source; markdown: a fenced python block per function; json: the "
            "annotated lines (file, line, function, shapes; see docs/source.md); svg, html: the listing "
            "as a picture. Default: as -o FILE's suffix says, else text.",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = None,
    width: Annotated[
        int | None,
        typer.Option(
            "--width",
            min=20,
            help="Fit the annotations in N columns: one that does not fit continues on comment lines "
            "below its line. Default: the terminal's width, else no limit.",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Print the code that ran (each module's forward and the helpers it calls), every line
    annotated with the shapes it made.

    Functions come in the order they were first called, each once with its number of calls (a
    stack's Blocks share one listing). A statement over several lines is annotated on its last line;
    a line whose calls made different shapes lists each, with the calls it came from; a branch that
    provably did not run is marked so. torch's own code is not printed: its calls are annotated where
    they were made.

    Examples:

    \b
      blocktrace source --n-embd 768 --seq 1024
      blocktrace source --preset llama --shapes both
      blocktrace source --function 'CausalSelfAttention.*' --width 100
      blocktrace source --format markdown -o block.md
      blocktrace source --format json | jq '.lines[] | select(.line == 131)'
    """
    from blocktrace.pipeline import cached_trace
    from blocktrace.source import source_view

    name = formats.resolve("source", _value(fmt), output)  # a bad -o is said before tracing
    view = source_view(cached_trace(model, device.value, use_cache=cache), shapes, tuple(function or ()))
    formats.write("source", name, view, output, shapes=shapes, width=width)


class CacheAction(str, Enum):
    info = "info"
    clear = "clear"


@app.command("cache", cls=_Command)
def cache_command(
    action: Annotated[
        CacheAction,
        typer.Argument(help="info: where the cache is, its entries and size; clear: remove every entry."),
    ] = CacheAction.info,
) -> None:
    """Show or clear the cache of traces that lets a repeated call skip importing torch.

    It lives in $XDG_CACHE_HOME/blocktrace (~/.cache/blocktrace when that is unset or relative) and
    is kept under a size limit by removing the entries used longest ago.
    """
    from blocktrace import cache
    from blocktrace.output import write_output

    if action is CacheAction.clear:
        removed, size = cache.clear()
        entries = "entry" if removed == 1 else "entries"
        size_text = cache.human_size(size)
        write_output(f"removed {removed} {entries} ({size_text}) from {cache.cache_dir()}\n", None)
        return
    info = cache.info()
    write_output(
        f"folder:  {info.folder}\n"
        f"entries: {info.entries}\n"
        f"size:    {cache.human_size(info.size)} (limit {cache.human_size(cache.MAX_BYTES)};"
        " beyond it the entries used longest ago are removed)\n",
        None,
    )


def main() -> None:
    """The installed command. Its cyclic garbage collector runs rarely: a deep trace makes many small
    objects, and collecting after every 700 new ones cost a fifth of an 80-layer run; after 20,000
    it costs next to nothing, and the garbage left meanwhile is a few MiB. Once a run that imported
    torch has written everything, the process ends without Python's teardown: unloading torch's
    modules costs a quarter of a second and saves nothing."""
    import gc

    gc.set_threshold(20_000, 50, 1_000)
    try:
        app()
    except SystemExit as done:
        # everything is written by now: _OneLineErrors flushed stdout, and stderr is line-buffered
        if "torch" in sys.modules and (done.code is None or isinstance(done.code, int)):
            os._exit(done.code or 0)
        raise
