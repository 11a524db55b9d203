"""One writer per format, for every view (views/view.py): each chooses where the view goes (a file
with -o FILE, else stdout: a terminal or not, how wide, what its encoding carries), asks the view for
that page and writes it through the sink. formats.WRITERS names them.

Colour and fitting only on a terminal, through rich (imported only then); a file or a pipe gets the
same plain text whatever COLUMNS or FORCE_COLOR say.
"""

from __future__ import annotations

from typing import TextIO

from blocktrace.output.sink import is_stdout, isatty, stdout, stdout_errors, terminal, write_output
from blocktrace.views.view import Page, View

FILE = Page()  # a file is written as UTF-8, never fitted or coloured


def page_of(stream: TextIO) -> Page:
    """What `stream` is: a tty (how wide; a terminal to rich or not, coloured or not) or not, and its
    encoding. rich is imported for a tty only."""
    encoding = getattr(stream, "encoding", None)
    if not isatty(stream):
        return Page(encoding=encoding)
    from rich.console import Console

    console = terminal(stream)
    return Page(
        width=Console(file=stream, force_terminal=True).width,
        terminal=console is not None,
        colour=console is not None and bool(console.color_system) and not console.no_color,
        encoding=encoding,
    )


def _destination(output: str | None, stream: TextIO | None) -> tuple[TextIO | None, Page]:
    """The stream to write to (None: the file `output`) and its page."""
    if not is_stdout(output):
        return None, FILE
    stream = stream or stdout()
    return stream, page_of(stream)


def text(view: View, output: str | None, stream: TextIO | None = None) -> None:
    """To a terminal as the view shows it there (fitted, coloured); elsewhere its plain text."""
    stream, page = _destination(output, stream)
    shown = None if stream is None else view.screen(page)
    if shown is None:
        write_output(view.render("text", page), output, stream)
        return
    from rich.console import Console

    console = Console(file=stream, highlight=False, force_terminal=True)
    with stdout_errors(stream):
        shown.show(console)


def _plain(fmt: str, view: View, output: str | None, stream: TextIO | None) -> None:
    stream, page = _destination(output, stream)
    write_output(view.render(fmt, page), output, stream)


def markdown(view: View, output: str | None, stream: TextIO | None = None) -> None:
    _plain("markdown", view, output, stream)


def json(view: View, output: str | None, stream: TextIO | None = None) -> None:
    _plain("json", view, output, stream)


def csv(view: View, output: str | None, stream: TextIO | None = None) -> None:
    _plain("csv", view, output, stream)


def _picture(fmt: str, view: View, output: str | None, stream: TextIO | None, theme: str) -> None:
    """A stdout that cannot carry a character gets it as a numeric reference (&#9474;), which SVG and
    HTML read as the character itself."""
    from blocktrace.output.pictures import picture

    shown = view.picture()
    drawn = picture(fmt, list(shown.renderables), (shown.width, shown.height), view.title, theme)
    stream, page = _destination(output, stream)
    if not page.carries(drawn):
        drawn = drawn.encode("ascii", "xmlcharrefreplace").decode("ascii")
    write_output(drawn, output, stream)


def svg(view: View, output: str | None, stream: TextIO | None = None, theme: str = "dark") -> None:
    _picture("svg", view, output, stream, theme)


def html(view: View, output: str | None, stream: TextIO | None = None, theme: str = "dark") -> None:
    _picture("html", view, output, stream, theme)
