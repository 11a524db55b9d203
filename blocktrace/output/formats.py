"""The output formats, one registry: which writer writes each format, which formats each view
offers, and which format an `-o FILE` asks for by its suffix.

A writer is named as "module:function" and imported only when used, so that the CLI can build its
`--format` choices from this registry without importing rich or torch (`--help` stays instant).
Every writer takes the same arguments, `writer(view, output, stream=None)`: a view (views/view.py,
which carries the command's options), `output` a path or "-" / None for `stream` (stdout by default).

A new format is one writer in output/writers.py, one entry in FORMATS and WRITERS, and its name in
OFFERS for the views that render it (svg and html every view has); a new view one entry in OFFERS.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from blocktrace.views.view import View

STDOUT = "-"  # as --output: stdout (the same as output.STDOUT, without importing it)


@dataclass(frozen=True)
class Format:
    name: str  # as --format takes it
    suffixes: tuple[str, ...]  # `-o FILE` with one of these (any case) asks for this format


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("text", (".txt",)),
        Format("markdown", (".md", ".markdown")),
        Format("json", (".json",)),
        Format("csv", (".csv",)),
        Format("svg", (".svg",)),
        Format("html", (".html", ".htm")),
    )
}

# format -> its writer, for every view
WRITERS: dict[str, str] = {name: f"blocktrace.output.writers:{name}" for name in FORMATS}

# command (its view) -> the formats it offers; its --format choices, in this order
OFFERS: dict[str, tuple[str, ...]] = {
    "diagram": ("text", "markdown", "json", "svg", "html"),
    "table": ("text", "markdown", "json", "csv", "svg", "html"),
    "source": ("text", "markdown", "json", "svg", "html"),
    "memory": ("text", "markdown", "json", "csv", "svg", "html"),
    "grad": ("text", "markdown", "json", "csv", "svg", "html"),
}
DEFAULT = "text"  # with no --format and no -o FILE suffix to go by
PICTURES = ("svg", "html")  # the formats drawn in a theme; their writers take `theme=`
THEMES = ("dark", "light")  # --theme's choices (output/pictures.py colours them); the first is the default


def names(command: str) -> tuple[str, ...]:
    """The formats `command` writes, for its --format choices."""
    return OFFERS[command]


def by_suffix(path: str) -> Format | None:
    """The format whose suffix `path` has; None for no suffix or one no format claims."""
    suffix = _suffix(path)
    return next((f for f in FORMATS.values() if suffix in f.suffixes), None)


def _suffix(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[1].lower()


def resolve(command: str, fmt: str | None, output: str | None) -> str:
    """The format to write: `fmt` (--format) if given, else the one `output`'s suffix names, else text.

    Raises OutputError (exit 2) where they disagree (`--format svg -o x.md`), where the suffix names a
    format this command does not write (`diagram -o x.csv`), or where, without --format, the suffix
    names no format at all (`-o x.png`): better a line saying so than a text file called x.png. A file
    with no suffix (`-o block`, `-o /dev/null`) is text unless --format says otherwise."""
    from blocktrace.errors import OutputError

    supported = names(command)
    if fmt is not None and fmt not in supported:
        raise OutputError(f"blocktrace {command} cannot write {fmt}; it writes {', '.join(supported)}", 2)
    if output is None or output == STDOUT or not _suffix(output):
        return fmt or DEFAULT
    named = by_suffix(output)
    suffixes = ", ".join(s for f in supported for s in FORMATS[f].suffixes)
    if named is None:
        if fmt is not None:
            return fmt  # `--format text -o block.log`: the flag says what to write
        raise OutputError(
            f"cannot tell the format of -o {output!r} from its suffix {_suffix(output)!r}; "
            f"give --format, or name a file ending in {suffixes}",
            2,
        )
    if named.name not in supported:
        raise OutputError(
            f"-o {output!r} asks for {named.name}, which blocktrace {command} does not write; "
            f"name a file ending in {suffixes}",
            2,
        )
    if fmt is not None and fmt != named.name:
        raise OutputError(
            f"--format {fmt} and -o {output!r} disagree: its suffix means {named.name}; "
            "drop --format, or rename the file",
            2,
        )
    return named.name


def writer(fmt: str) -> Callable[..., None]:
    module, function = WRITERS[fmt].split(":")
    return getattr(importlib.import_module(module), function)


def write(
    view: View, fmt: str | None, output: str | None, stream: TextIO | None = None, theme: str = THEMES[0]
) -> None:
    """Write `view` as the format `fmt` and `output` resolve to (see `resolve`); a picture in `theme`,
    which the other formats, having no colours of their own, do not take."""
    name = resolve(view.command, fmt, output)
    if name in PICTURES:
        writer(name)(view, output, stream, theme=theme)
    else:
        writer(name)(view, output, stream)
