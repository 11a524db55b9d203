"""A view as a Python caller holds it: its text, rich's renderable protocol, a notebook's HTML and
SVG, a file by suffix, and its JSON. It wraps a view of views/view.py, which the CLI writes through
the same output/ writers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocktrace.errors import BlocktraceError
from blocktrace.output import formats
from blocktrace.output.writers import FILE
from blocktrace.views.view import Page, View

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType


@dataclass(frozen=True)
class Shown:
    """What blocktrace.diagram(), table() and source() return."""

    view: View
    failure: BlocktraceError | None = None  # with partial=True: the failure the view stops at

    def __str__(self) -> str:
        """The text a file gets (never fitted to a terminal, never coloured)."""
        return self.view.render("text", FILE)

    def __repr__(self) -> str:
        return f"<{self.view.title}>"

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType]:
        """As the CLI shows it on that console: fitted to its width, coloured where it colours."""
        from rich.text import Text

        page = Page(
            width=options.max_width,
            terminal=True,
            colour=bool(console.color_system) and not console.no_color,
            encoding=options.encoding,
        )
        shown = self.view.screen(page)
        if shown is None:
            yield Text(self.view.render("text", page), no_wrap=True, overflow="ignore", end="")
        else:
            yield from shown.renderables

    def _picture(self, fmt: str, theme: str = formats.THEMES[0]) -> str:
        from blocktrace.output.pictures import picture

        shown = self.view.picture()
        return picture(fmt, list(shown.renderables), (shown.width, shown.height), self.view.title, theme)

    def _repr_html_(self) -> str:
        """A notebook's display: the picture `save("x.html")` writes."""
        return self._picture("html")

    def _repr_svg_(self) -> str:
        return self._picture("svg")

    def save(self, path: str | Path, theme: str = formats.THEMES[0]) -> None:
        """Write to `path` in the format its suffix names (.txt .md .json .svg .html, and .csv for a
        table), as `-o FILE` does: whole or not at all; a picture in `theme` ("dark" or "light"), as
        `--theme` gives it. Raises BlocktraceError."""
        formats.write(self.view, None, str(path), theme=theme)

    def to_json(self) -> str:
        """What `--format json` prints."""
        return self.view.render("json", FILE)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.to_json())
        return result
