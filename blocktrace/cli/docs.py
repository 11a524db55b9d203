"""`blocktrace docs FILE.md...`: rewrite the blocks and pictures a page's markers name with what
blocktrace prints now (blocktrace/docs/pages.py reads the pages); `--check` only says what is stale.

Each marker's command runs in this process, as `blocktrace ARGS` would from the current folder, so a
page of twenty diagrams imports torch once.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from blocktrace.cli.app import app
from blocktrace.cli.clicks import context, core, exceptions
from blocktrace.errors import BlocktraceError, ConfigError, ran_before


@dataclass(frozen=True)
class _InProcess:
    """Runs `blocktrace ARGS` with the group this command runs in (docs.pages.Runner)."""

    group: core.Command

    def text(self, args: list[str]) -> str:
        """What the command prints; with --partial, a forward's failure is what it shows."""
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="\n")
        with contextlib.redirect_stdout(out):
            try:
                self._invoke(args)
            except BlocktraceError as error:
                if "--partial" not in args or ran_before(error) is None:
                    raise
            out.flush()
        return out.buffer.getvalue().decode("utf-8")

    def file(self, args: list[str], name: str) -> bytes:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="blocktrace-docs-") as folder:
            path = os.path.join(folder, name)
            self.text([*args, "-o", path])
            try:
                return Path(path).read_bytes()
            except FileNotFoundError:
                raise ConfigError("it wrote no file; a picture's command must write one with -o") from None

    def _invoke(self, args: list[str]) -> None:
        try:
            with self.group.make_context("blocktrace", list(args)) as ctx:
                self.group.invoke(ctx)
        except typer.Exit as done:
            if done.exit_code:
                raise BlocktraceError(f"it ended with exit code {done.exit_code}", 1) from done
        except exceptions.ClickException as error:
            raise BlocktraceError(" ".join(error.format_message().split()), error.exit_code) from error


@app.command("docs")
def docs_command(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE.md...",
            help="The markdown pages to refresh; a picture's path is read from the page's folder.",
            show_default=False,
        ),
    ],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Change nothing: print a unified diff of every stale block and picture, and exit 1 if "
            "there is one.",
        ),
    ] = False,
) -> None:
    """Rewrite every `<!-- blocktrace: ARGS -->` block and `<!-- blocktrace picture: ARGS -->`
    picture in the pages with what `blocktrace ARGS` prints (or draws) now.

    A block is the fenced block right after its marker; a picture is the image right after its
    marker, drawn with `-o` its path. Commands run in the current folder. Every command runs before
    anything is written, and each file is replaced whole (a temporary file renamed over it), so a
    failing command leaves every page as it was.

    Examples:

    \b
      blocktrace docs README.md docs/*.md
      blocktrace docs --check README.md docs/*.md    (in CI: exit 1 and a diff if one is stale)
    """
    from blocktrace.docs import pages
    from blocktrace.output.sink import write_output

    runner = _InProcess(context.get_current_context().find_root().command)
    changes = pages.stale(c for page in files for c in pages.refresh(Path(page), runner))
    names = ", ".join(str(c.path) for c in changes)
    if check:
        if changes:
            write_output("".join(c.diff(str(c.path)) for c in changes), None)
            count = f"{len(changes)} file{'s' if len(changes) > 1 else ''}"
            fix = "`blocktrace docs` without --check rewrites them"
            raise BlocktraceError(f"{count} stale: {names}; {fix}", 1)
        return
    pages.write(changes)
    write_output(f"refreshed {names}\n" if changes else "every block and picture is fresh\n", None)
