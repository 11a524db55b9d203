"""The command line: parse flags, hand off to the pipeline, print. Nothing else lives here.

torch is imported only inside the commands that trace, so `blocktrace --help` stays instant.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from blocktrace import __version__
from blocktrace.config import BlockConfig, ConfigError
from blocktrace.trace import TraceError


class _OneLineErrors(TyperGroup):
    """Errors end as one line on stderr, never a traceback: exit code 2 for bad flags and configs,
    1 for a forward that failed."""

    def main(self, args: Any = None, prog_name: Any = None, **extra: Any) -> Any:
        extra["standalone_mode"] = False
        try:
            code = super().main(args, prog_name or "blocktrace", **extra)
        except ConfigError as error:
            _fail(str(error), 2)
        except TraceError as error:
            _fail(str(error), 1)
        except click.ClickException as error:  # usage errors (exit_code 2) and the like
            _fail(error.format_message(), error.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except BrokenPipeError:
            # the reader went away (`| head`): stop quietly, and let nothing flush into the closed pipe
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        sys.exit(code or 0)


def _fail(message: str, code: int) -> None:
    one_line = " ".join(message.split())
    if one_line:  # empty when click already printed the help (no command given)
        print(f"blocktrace: error: {one_line}", file=sys.stderr)
    sys.exit(code)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Trace the tensor shapes through a transformer Block and draw its data flow.",
    epilog="Start with: blocktrace diagram --n-embd 768 --seq 1024",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Device(str, Enum):
    probe = "probe"
    meta = "meta"
    cpu = "cpu"
    cuda = "cuda"


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Shapes(str, Enum):
    symbolic = "symbolic"
    concrete = "concrete"
    both = "both"


class DiagramFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


_MODEL = "Model"
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
ShapesOpt = Annotated[
    Shapes,
    typer.Option(
        "--shapes",
        help="symbolic: (B, T, C); concrete: (8, 1024, 768); both: (B, T, C)=(8, 1024, 768).",
        rich_help_panel=_OUT,
    ),
]


def block_config(
    n_embd: int,
    n_head: int,
    n_kv_head: int | None,
    seq: int,
    batch: int,
    mlp_ratio: int,
    n_layer: int,
    dtype: Dtype,
) -> BlockConfig:
    """The validated config for the shared model flags (raises ConfigError)."""
    return BlockConfig(
        n_embd=n_embd,
        n_head=n_head,
        n_kv_head=n_head if n_kv_head is None else n_kv_head,
        seq=seq,
        batch=batch,
        mlp_ratio=mlp_ratio,
        n_layer=n_layer,
        dtype=dtype.value,
    )


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


@app.command()
def diagram(
    n_embd: NEmbd = 768,
    n_head: NHead = 6,
    n_kv_head: NKvHead = None,
    seq: Seq = 1024,
    batch: Batch = 8,
    mlp_ratio: MlpRatio = 4,
    n_layer: NLayer = 1,
    dtype: DtypeOpt = Dtype.float32,
    device: DeviceOpt = Device.probe,
    cache: CacheOpt = True,
    shapes: ShapesOpt = Shapes.symbolic,
    formulas: Annotated[
        bool,
        typer.Option("--formulas", help="Add the formulas of each residual step.", rich_help_panel=_OUT),
    ] = False,
    fmt: Annotated[
        DiagramFormat,
        typer.Option(
            "--format",
            help="text: the drawing; markdown: a fenced block with legend and formulas; json: the trace.",
            rich_help_panel=_OUT,
        ),
    ] = DiagramFormat.text,
    ascii_only: Annotated[
        bool,
        typer.Option("--ascii", help="7-bit ASCII instead of Unicode box drawing.", rich_help_panel=_OUT),
    ] = False,
    collapse: Annotated[
        bool,
        typer.Option(
            "--collapse/--no-collapse",
            help="Draw a run of identical Blocks once, as 'Block × N' (the JSON keeps every call).",
            rich_help_panel=_OUT,
        ),
    ] = True,
    width: Annotated[
        int | None,
        typer.Option(
            "--width",
            min=20,
            help="Fit the drawing in N columns, cutting side notes. [default: the terminal's, else no limit]",
            show_default=False,
            rich_help_panel=_OUT,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to FILE instead of stdout.", rich_help_panel=_OUT),
    ] = None,
) -> None:
    """Draw the Block's data flow with the tensor shape on every edge.

    The input x (B, T, C) enters at the top; each sub-layer branches off the residual stream through
    RMSNorm and Attention (or MLP), and the residual highway carries x around it to a (+). Beside
    Attention and MLP: their internals, step by step. A legend gives each symbol's value.

    Examples:

      blocktrace diagram --n-embd 768 --seq 1024

      blocktrace diagram --n-embd 8192 --n-head 64 --n-kv-head 8 --seq 131072 --batch 1

      blocktrace diagram --format markdown --formulas -o docs/block.md

      blocktrace diagram --format json | jq '.residual_adds[].wraps'
    """
    from blocktrace.output import emit
    from blocktrace.pipeline import cached_trace

    config = block_config(n_embd, n_head, n_kv_head, seq, batch, mlp_ratio, n_layer, dtype)
    trace = cached_trace(config, device.value, use_cache=cache)
    emit(
        trace,
        fmt=fmt.value,
        shapes=shapes.value,
        formulas=formulas,
        ascii_only=ascii_only,
        width=width,
        output=output,
        collapse=collapse,
    )


class TableFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"
    csv = "csv"


@app.command()
def table(
    n_embd: NEmbd = 768,
    n_head: NHead = 6,
    n_kv_head: NKvHead = None,
    seq: Seq = 1024,
    batch: Batch = 8,
    mlp_ratio: MlpRatio = 4,
    n_layer: NLayer = 1,
    dtype: DtypeOpt = Dtype.float32,
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
        TableFormat,
        typer.Option(
            "--format",
            help="text: a table for reading; markdown: a pipe table; json and csv: for scripts "
            "(see docs/table.md).",
            rich_help_panel=_OUT,
        ),
    ] = TableFormat.text,
) -> None:
    """List every module call, functional op and residual add with its shapes, weights,
    parameters, requires_grad and FLOPs, then the totals.

    Rows come in execution order, indented by nesting. FLOPs count matmuls and attention as
    torch.utils.flop_counter does; activations are every tensor the forward creates, at --dtype.

    Examples:

      blocktrace table --n-embd 768 --seq 1024

      blocktrace table --freeze 'attn.*' --depth 1

      blocktrace table --n-head 8 --n-kv-head 2 --format csv > block.csv
    """
    from rich.console import Console

    from blocktrace.pipeline import cached_trace
    from blocktrace.table import build_table, print_text, render

    config = block_config(n_embd, n_head, n_kv_head, seq, batch, mlp_ratio, n_layer, dtype)
    result = build_table(cached_trace(config, device.value, tuple(freeze or ()), cache), depth)
    if fmt is TableFormat.text:
        print_text(result, Console(highlight=False), shapes.value)
    else:
        sys.stdout.write(render(result, fmt.value, shapes.value))


def main() -> None:
    app()
