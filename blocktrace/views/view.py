"""The one seam between the views and output/: what a view is, and what it is told of where it goes.

A view (the diagram, the table, the source listing) knows its command, its title and its formats,
and renders itself: to a string per format for a `Page`, and to rich renderables (a `Screen`) for
a terminal and for pictures. output/ chooses the destination and writes; a view imports nothing of
it, so a new format is one writer for every view, and a new view one class here-shaped.

No torch, and rich only inside methods: `--help` and piped output never import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class Page:
    """Where a view goes: a file (the defaults) or a stream."""

    width: int | None = None  # a tty's columns; None for a file or a pipe
    terminal: bool = False  # rich takes the tty for a terminal (not with FORCE_COLOR="", say)
    colour: bool = False  # rich would colour it (a colour system, and no NO_COLOR)
    encoding: str | None = "utf-8"  # the stream's, as it says (None where it says none)

    def carries(self, text: str) -> bool:
        """Whether the stream can write `text`; one that names no encoding is taken as 7-bit."""
        try:
            text.encode(self.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            return False
        return True

    @property
    def columns(self) -> int | None:
        """The columns to fit plain text in: a terminal's; None for no limit."""
        return self.width if self.terminal else None

    @property
    def unicode(self) -> bool:
        """rich's own test of a stream (its tables' boxes go 7-bit otherwise): a UTF encoding, where
        a stream that names none is UTF-8."""
        return (self.encoding or "utf-8").lower().startswith("utf")


@dataclass(frozen=True)
class Screen:
    """Rich renderables printed one after another: on a terminal, or as a picture."""

    renderables: tuple[Any, ...]
    width: int = 0  # the columns they take: a narrower terminal prints them this wide, never cut
    height: int = 0  # the lines they take (a picture's height)
    soft_wrap: bool = False  # printed as they are, no line wrapped to the terminal

    def show(self, console: Console) -> None:
        terminal = console.width
        console.width = max(terminal, self.width)
        try:
            for renderable in self.renderables:
                console.print(renderable, end="", soft_wrap=self.soft_wrap)
        finally:
            console.width = terminal
        console.file.flush()


class View(Protocol):
    @property
    def command(self) -> str:
        """The command that shows it: "diagram"."""
        ...

    @property
    def formats(self) -> tuple[str, ...]:
        """What render() writes; the pictures (svg, html) come from picture()."""
        ...

    @property
    def title(self) -> str:
        """A picture's title: "blocktrace diagram: Block"."""
        ...

    def render(self, fmt: str, page: Page) -> str:
        """The view as `fmt` (one of `formats`) for `page`."""
        ...

    def screen(self, page: Page) -> Screen | None:
        """What a terminal shows, coloured or fitted by rich; None where it shows the plain text."""
        ...

    def picture(self) -> Screen:
        """The renderables of a picture and its size: the same whatever the destination."""
        ...


def size_of(text: str) -> tuple[int, int]:
    """The columns and lines `text` takes."""
    from rich.cells import cell_len

    lines = text.splitlines() or [""]
    return max(max(cell_len(line) for line in lines), 1), len(lines)


def text_picture(text: str) -> Screen:
    """A view whose picture is its plain text, uncoloured (source, memory, grad)."""
    from rich.text import Text

    return Screen((Text(text),), *size_of(text))
