"""The commands: parse flags, hand off to the pipeline and the views, write. Nothing else lives here.

torch is imported only inside the commands that trace, so `blocktrace --help` stays instant.
"""

import functools
from collections.abc import Callable
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from blocktrace.cli.app import COMPLETE_VAR, OptionsOnly, app, completion_classes
from blocktrace.cli.choices import GradInit, Optimizer
from blocktrace.cli.options import (
    DEFAULT_THEME,
    OUTPUT_PANEL,
    TRACE_PANEL,
    CacheOpt,
    DeviceOpt,
    DiagramFormat,
    GradFormat,
    MemoryFormat,
    OutputOpt,
    PartialOpt,
    ShapesOpt,
    SourceFormat,
    TableFormat,
    ThemeOpt,
    block_flags,
    format_option,
    stats_option,
    width_option,
)
from blocktrace.cli.progress import progress, wanted
from blocktrace.models.request import ModelRequest
from blocktrace.models.spec import Device
from blocktrace.output import formats
from blocktrace.views.shapes import Shapes

if TYPE_CHECKING:
    from blocktrace.api.shown import Shown


@app.command(cls=OptionsOnly)
@block_flags
def diagram(
    model: ModelRequest,
    device: DeviceOpt = Device.probe,
    cache: CacheOpt = True,
    shapes: ShapesOpt = Shapes.symbolic,
    formulas: Annotated[
        bool,
        typer.Option(
            "--formulas", help="Add the formulas of each residual step.", rich_help_panel=OUTPUT_PANEL
        ),
    ] = False,
    fmt: Annotated[
        DiagramFormat | None,
        format_option(
            "text: the drawing; markdown: the drawing as a fenced block, then the legend as a table "
            "(and the formulas, with --formulas); json: the trace; svg, html: the drawing as a picture, "
            "coloured as in a terminal."
        ),
    ] = None,
    ascii_only: Annotated[
        bool,
        typer.Option(
            "--ascii", help="7-bit ASCII instead of Unicode box drawing.", rich_help_panel=OUTPUT_PANEL
        ),
    ] = False,
    collapse: Annotated[
        bool,
        typer.Option(
            "--collapse/--no-collapse",
            help="Draw a run of identical Blocks once, as 'Block x N' (the JSON keeps every call).",
            rich_help_panel=OUTPUT_PANEL,
        ),
    ] = True,
    width: Annotated[
        int | None,
        width_option(
            "Fit the drawing in N columns: side notes wrap, then are cut; a width the drawing cannot "
            "fit in is refused."
        ),
    ] = None,
    stats: Annotated[
        bool,
        stats_option("beside each edge's shape, its values"),
    ] = False,
    output: OutputOpt = None,
    theme: ThemeOpt = DEFAULT_THEME,
    partial: PartialOpt = False,
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
    from blocktrace import api

    shown = functools.partial(
        api.diagram, model, device=device, cache=cache, shapes=shapes, formulas=formulas,
        ascii=ascii_only, width=width, collapse=collapse, stats=stats, partial=partial,
    )  # fmt: skip
    _show("diagram", fmt, output, theme, shown)


def _show(
    command: str, fmt: Enum | None, output: str | None, theme: Enum, shown: Callable[[], "Shown"]
) -> None:
    """Trace and write what `shown` gives, with the progress line on a terminal; a partial view
    (--partial), then fail as its forward did."""
    from blocktrace.progress import stage

    name, output = _output(command, fmt, output)
    with progress(wanted(name)):
        view = shown()
        stage("rendering")
        formats.write(view.view, name, output, theme=theme.value)
    if view.failure is not None:
        raise view.failure


def _output(command: str, fmt: Enum | None, output: str | None) -> tuple[str, str | None]:
    """The format to write and the -o path, resolved and checked before anything is traced or any
    user code runs (it may change the working folder, or take minutes)."""
    from blocktrace.output.sink import check_output

    name = formats.resolve(command, None if fmt is None else fmt.value, output)
    return name, check_output(output)


@app.command(cls=OptionsOnly)
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
            rich_help_panel=TRACE_PANEL,
        ),
    ] = None,
    depth: Annotated[
        int | None,
        typer.Option(
            "--depth",
            min=0,
            help="Fold rows nested deeper than N into their parent (0: the root only); all if not given.",
            show_default=False,
            rich_help_panel=OUTPUT_PANEL,
        ),
    ] = None,
    stats: Annotated[
        bool,
        stats_option("each row's output values", " (see docs/table.md)"),
    ] = False,
    expand: Annotated[
        bool,
        typer.Option(
            "--expand",
            help="Every layer's rows: a run of identical layers is otherwise one row ('h.0 ... h.11', "
            "'Block x 12', the run's numbers) and the first layer's rows.",
            rich_help_panel=OUTPUT_PANEL,
        ),
    ] = False,
    shapes: ShapesOpt = Shapes.symbolic,
    fmt: Annotated[
        TableFormat | None,
        format_option(
            "text: a table for reading; markdown: a pipe table; json and csv: for scripts "
            "(see docs/table.md); svg, html: the whole table as a picture."
        ),
    ] = None,
    output: OutputOpt = None,
    theme: ThemeOpt = DEFAULT_THEME,
    partial: PartialOpt = False,
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
      blocktrace table --n-layer 12 --expand
      blocktrace table --n-head 8 --n-kv-head 2 -o block.csv
    """
    from blocktrace import api

    shown = functools.partial(
        api.table, model, device=device, freeze=freeze or (), cache=cache, depth=depth, shapes=shapes,
        stats=stats, expand=expand, partial=partial,
    )  # fmt: skip
    _show("table", fmt, output, theme, shown)


@app.command(cls=OptionsOnly)
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
            rich_help_panel=OUTPUT_PANEL,
        ),
    ] = None,
    shapes: ShapesOpt = Shapes.symbolic,
    fmt: Annotated[
        SourceFormat | None,
        format_option(
            "text: the numbered source; markdown: a fenced python block per function; json: the "
            "annotated lines (file, line, function, shapes; see docs/source.md); svg, html: the listing "
            "as a picture."
        ),
    ] = None,
    width: Annotated[
        int | None,
        width_option(
            "Fit the annotations in N columns: one that does not fit continues on comment lines "
            "below its line."
        ),
    ] = None,
    output: OutputOpt = None,
    theme: ThemeOpt = DEFAULT_THEME,
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
    from blocktrace import api

    shown = functools.partial(
        api.source, model, device=device, cache=cache, shapes=shapes, function=function or (), width=width
    )
    _show("source", fmt, output, theme, shown)


@app.command(cls=OptionsOnly)
@block_flags
def memory(
    model: ModelRequest,
    optimizer: Annotated[
        Optimizer,
        typer.Option(
            "--optimizer",
            help="The optimizer whose state training keeps: adamw (two moments a weight), sgd (with "
            "momentum: one), none.",
            rich_help_panel=TRACE_PANEL,
        ),
    ] = Optimizer.adamw,
    mixed: Annotated[
        bool,
        typer.Option(
            "--mixed",
            help="Mixed precision: a 16-bit --dtype keeps float32 master weights and optimizer state.",
            rich_help_panel=TRACE_PANEL,
        ),
    ] = False,
    fmt: Annotated[
        MemoryFormat | None,
        format_option(
            "text: the totals, then what each call and op saved for backward; markdown: tables; "
            "json and csv: for scripts (see docs/memory.md); svg, html: the text as a picture."
        ),
    ] = None,
    output: OutputOpt = None,
    theme: ThemeOpt = DEFAULT_THEME,
) -> None:
    """Show what training and inference hold: weights, gradients, optimizer state and the
    activations autograd saves for backward; weights, the key/value cache and the forward's peak.

    Measured by running the model at full size on the meta device, which allocates nothing: the
    saved activations are the distinct storages torch.autograd.graph.saved_tensors_hooks sees in a
    forward with grad (train mode where the model has dropout), per module call and per op.

    Examples:

    \b
      blocktrace memory --n-embd 768 --seq 1024
      blocktrace memory --dtype bfloat16 --mixed --optimizer adamw
      blocktrace memory --hf docs/examples/llama-70b --format json
    """
    from blocktrace import api

    _show(
        "memory", fmt, output, theme, functools.partial(api.memory, model, optimizer=optimizer, mixed=mixed)
    )


@app.command(cls=OptionsOnly)
@block_flags
def grad(
    model: ModelRequest,
    device: DeviceOpt = Device.cpu,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            min=0,
            help="Draws the weights, the input and the loss's r.",
            rich_help_panel=TRACE_PANEL,
        ),
    ] = 0,
    init: Annotated[
        GradInit,
        typer.Option(
            "--init",
            help="torch: the modules' own init (PyTorch's defaults); xavier: Xavier-uniform Linear "
            "weights and zero biases, the setting of Xiong et al. 2020.",
            rich_help_panel=TRACE_PANEL,
        ),
    ] = GradInit.torch,
    fmt: Annotated[
        GradFormat | None,
        format_option(
            "text: each layer's two norms with bars; markdown: a table; json and csv: for "
            "scripts (see docs/grad.md); svg, html: the text as a picture."
        ),
    ] = None,
    output: OutputOpt = None,
    theme: ThemeOpt = DEFAULT_THEME,
) -> None:
    """Measure the gradient along the residual stream at init: for each layer of the stack, the
    norm of dL/dx at its input and of its parameters' gradients.

    One seeded forward and backward with real tensors (--device cpu, or cuda) of a fixed loss,
    the mean over (b, t) of y[b, t] · r[b, t] with r drawn from the seed: the same seed gives the
    same numbers. --residual none builds Blocks with no skip at all, for the comparison.

    Examples:

    \b
      blocktrace grad --n-layer 24 --n-embd 64 --seq 16 --batch 2
      blocktrace grad --n-layer 12 --preset bert --init xavier --format csv
      blocktrace grad --n-layer 48 --residual none -o none.svg
    """
    from blocktrace import api

    shown = functools.partial(api.grad, model, seed=seed, device=device.value, init=init.value)
    _show("grad", fmt, output, theme, shown)


class CacheAction(StrEnum):
    info = "info"
    clear = "clear"


@app.command("cache", cls=OptionsOnly)
def cache_command(
    action: Annotated[
        CacheAction,
        typer.Argument(
            metavar="info|clear",  # typer brackets an optional argument itself
            help="info (the default): where the cache is, its entries and size; clear: remove every entry.",
            show_default=False,
        ),
    ] = CacheAction.info,
) -> None:
    """Show or clear the cache of traces that lets a repeated call skip importing torch.

    It lives in $XDG_CACHE_HOME/blocktrace (~/.cache/blocktrace when that is unset or relative) and
    is kept under a size limit by removing the entries used longest ago.
    """
    from blocktrace import cache
    from blocktrace.output.sink import write_output
    from blocktrace.views.stats import human_bytes

    if action is CacheAction.clear:
        removed, size = cache.clear()
        entries = "entry" if removed == 1 else "entries"
        size_text = human_bytes(size)
        write_output(f"removed {removed} {entries} ({size_text}) from {cache.cache_dir()}\n", None)
        return
    info = cache.info()
    write_output(
        f"folder:  {info.folder}\n"
        f"entries: {info.entries}\n"
        f"size:    {human_bytes(info.size)} (limit {human_bytes(cache.MAX_BYTES)};"
        " beyond it the entries used longest ago are removed)\n",
        None,
    )


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command(cls=OptionsOnly)
def completion(
    shell: Annotated[Shell, typer.Argument(metavar="bash|zsh|fish", help="The shell to complete in.")],
) -> None:
    """Print the script that completes blocktrace's commands, flags and choices in SHELL.

    \b
      bash: eval "$(blocktrace completion bash)"        (in ~/.bashrc)
      zsh:  eval "$(blocktrace completion zsh)"         (in ~/.zshrc)
      fish: blocktrace completion fish > ~/.config/fish/completions/blocktrace.fish
    """
    from blocktrace.cli.clicks import shell_completion
    from blocktrace.output.sink import write_output

    completion_classes()
    shell_class = shell_completion.get_completion_class(shell.value)
    assert shell_class is not None
    script = shell_class(typer.main.get_command(app), {}, "blocktrace", COMPLETE_VAR).source()
    write_output(script if script.endswith("\n") else script + "\n", None)
