"""The typer app: every failure one line on stderr with its exit code, the root callback, and the
installed command's entry point. The commands are in commands.py, their flags in options.py.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand, TyperGroup

from blocktrace import __version__
from blocktrace.errors import BlocktraceError


class _OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr, never a traceback. Exit codes: 2 for bad input
    (flags, configs, an output path that cannot be), 1 for a run that failed (a forward, a full disk),
    0 when the reader of a pipe went away (`| head -1`), 130 on Ctrl-C."""

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
        from blocktrace.output.sink import stdout_errors

        if sys.stdout is None:  # closed by the shell (`>&-`): a write to it fails, not vanishes
            sys.stdout = _ClosedStdout()
        code: Any = 1
        try:
            try:
                code = super().main(
                    args, prog_name or "blocktrace", complete_var, False, windows_expand_args, **extra
                )
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
        except BlocktraceError as error:
            _fail(str(error), error.exit_code)
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


class OptionsOnly(TyperCommand):
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
    from blocktrace.output.sink import notice

    one_line = " ".join(message.split())
    if one_line:  # empty when click already printed the help (no command given)
        notice("error", one_line)
    _silence_stdout_if_broken()
    sys.exit(code)


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
