"""The typer app: every failure one line on stderr with its exit code, the root callback, and the
installed command's entry point. The commands are in commands.py, their flags in options.py.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from blocktrace import __version__
from blocktrace.cli.clicks import core, exceptions, formatting
from blocktrace.cli.lazy import LazyCommands, LazyTyper
from blocktrace.cli.wording import bad_value
from blocktrace.errors import BlocktraceError


def _help_given_or_false(option: Any) -> Any:
    """The help option, False where it is not given: typer coerces its None through pydantic, whose
    import costs every command that parses its flags a tenth of a second."""
    if option is not None:
        option.default = False
    return option


class _OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr, never a traceback. Exit codes: 2 for bad input
    (flags, configs, an output path that cannot be), 1 for a run that failed (a forward, a full disk),
    0 when the reader of a pipe went away (`| head -1`), 128+n on signal n: Ctrl-C (130), TERM (143)
    and HUP (129) alike, each leaving no temporary file and a target as it was. Its commands are
    built when named (lazy.py)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.commands: LazyCommands = LazyCommands(app)

    def format_commands(self, ctx: core.Context, formatter: formatting.HelpFormatter) -> None:
        self.commands.listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.commands.listing = False

    def get_help_option(self, ctx: core.Context) -> Any:
        return _help_given_or_false(super().get_help_option(ctx))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,  # not read: click's own handling of errors is never used
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        from blocktrace.errors import OutputError, PipeClosed

        if sys.stdout is None:  # closed by the shell (`>&-`): a write to it fails, not vanishes
            sys.stdout = _ClosedStdout()
        code: Any = 1
        signals = _Signals()
        try:
            try:
                with signals:
                    code = super().main(
                        args, prog_name or "blocktrace", complete_var, False, windows_expand_args, **extra
                    )
                if code == 128 + signal.SIGINT:  # typer's own answer to a KeyboardInterrupt
                    code = signals.exit_code
                if sys.stdout is not None:  # what is still buffered (help, --version) fails here
                    sys.stdout.flush()
            except typer.Abort as error:  # Ctrl-C inside click's own handling
                raise KeyboardInterrupt from error
            except SystemExit as error:
                # typer ends a broken pipe it meets itself (the help into `| true`) with exit 1
                if isinstance(error.__context__, BrokenPipeError):
                    raise PipeClosed() from error
                raise
            except (OSError, UnicodeEncodeError) as error:  # a write no command wrapped (help, --version)
                if isinstance(error, OSError) and error.filename:
                    raise OutputError(f"{error.filename}: {error.strerror}", 1) from error
                from blocktrace.output.sink import stdout_errors

                with stdout_errors():
                    raise error
        except BlocktraceError as error:
            if debugging():
                import traceback

                traceback.print_exception(error)
            _fail(str(error), error.exit_code)
        except exceptions.ClickException as error:  # usage errors (exit_code 2) and the like
            _fail(bad_value(error) or error.format_message(), error.exit_code)
        except PipeClosed:
            _silence_stdout()  # let nothing flush into the closed pipe at exit
            sys.exit(0)
        except KeyboardInterrupt:
            _silence_stdout()
            sys.exit(signals.exit_code)
        sys.exit(code or 0)


class _Signals:
    """TERM and HUP raised as Ctrl-C is, a KeyboardInterrupt where the program is, so that the same
    cleanup runs (a temporary file removed); remembered, for the exit code 128+n. The handlers they
    had are restored on leaving (none is set off the main thread, where none can be)."""

    def __init__(self) -> None:
        self.received: int = signal.SIGINT
        self.previous: dict[int, Any] = {}

    @property
    def exit_code(self) -> int:
        return 128 + self.received

    def _interrupt(self, signum: int, frame: object) -> None:
        self.received = signum
        raise KeyboardInterrupt

    def __enter__(self) -> _Signals:
        with contextlib.suppress(ValueError):
            for signum in (signal.SIGTERM, signal.SIGHUP):
                self.previous[signum] = signal.signal(signum, self._interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class _ClosedStdout(io.TextIOBase):
    """What stands in for a stdout the shell closed: every write fails as writing to fd 1 would."""

    encoding = "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        raise OSError(errno.EBADF, "Bad file descriptor")


class OptionsOnly(TyperCommand):
    """A command that names a stray argument exactly (`blocktrace diagram ''`): the commands take
    options only. Its help lists the options in their panels, in PANELS' order, as click's plain
    help (rich is not imported for it)."""

    def get_help_option(self, ctx: core.Context) -> Any:
        return _help_given_or_false(super().get_help_option(ctx))

    def format_options(self, ctx: core.Context, formatter: formatting.HelpFormatter) -> None:
        from blocktrace.cli.options import PANELS

        panels: dict[str, list[tuple[str, str]]] = {name: [] for name in PANELS}
        for param in self.get_params(ctx):
            row = param.get_help_record(ctx)
            if row is not None:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(row)
        for name, rows in panels.items():
            if rows:
                with formatter.section(name):
                    formatter.write_dl(rows)

    def parse_args(self, ctx: core.Context, args: list[str]) -> list[str]:
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
    from blocktrace.output.sink import notice

    one_line = " ".join(message.split())
    if one_line:  # empty when click already printed the help (no command given)
        notice("error", one_line)
    _silence_stdout_if_broken()
    sys.exit(code)


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


app = LazyTyper(
    cls=_OneLineErrors,
    help="Trace the tensor shapes through a transformer Block and draw its data flow.",
    epilog="Start with: blocktrace diagram --n-embd 768 --seq 1024",
    invoke_without_command=True,  # bare `blocktrace`: the help, exit 0
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: it rewraps paragraphs, and needs no rich.markdown
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"blocktrace {__version__}")
        raise typer.Exit()


def _traceback(value: bool) -> None:
    if value:
        os.environ[DEBUG] = "1"


DEBUG = "BLOCKTRACE_DEBUG"  # =1: a failure's full traceback before its one line


def debugging() -> bool:
    return os.environ.get(DEBUG, "") not in ("", "0")


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True),
    ] = False,
    traceback: Annotated[
        bool,
        typer.Option(
            "--traceback",
            help=f"On a failure, print its full traceback (for a bug report) before its one line; "
            f"{DEBUG}=1 does the same.",
            callback=_traceback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Trace the tensor shapes through a transformer Block and draw its data flow.

    Every shape printed comes from running the Block: forward hooks on every module, plus an op-level
    hook for what modules do not see (F.rms_norm, relu, attention, and the residual x + f(x) adds).
    """
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


COMPLETE_VAR = "_BLOCKTRACE_COMPLETE"  # set by the completion scripts: complete the words given


def completion_classes() -> None:
    """typer's completion scripts, which its completion at run time answers (click's own differ)."""
    from typer._completion_classes import completion_init

    completion_init()


def main() -> None:
    """The command (blocktrace/__main__.py runs it, its garbage collector set first). Once a run has
    written everything, the process ends without Python's teardown, which saves nothing: unloading
    torch's modules costs a quarter of a second, and typer's and the CLI's a tenth of `--help`."""
    if os.environ.get(COMPLETE_VAR):
        completion_classes()
    try:
        app()
    except SystemExit as done:
        # everything is written by now: _OneLineErrors flushed stdout, the files are renamed into place
        if done.code is None or isinstance(done.code, int):
            if sys.stderr is not None:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.flush()
            os._exit(done.code or 0)
        raise
