"""Pictures of what the terminal shows: SVG and HTML, made by rich's console export from the very
renderables a view prints to a terminal (the diagram's coloured cells, the table), no graphviz.

The same input gives the same bytes, whatever the terminal or the environment (COLUMNS, NO_COLOR,
FORCE_COLOR, TERM): the console is as wide as the drawing, in truecolor, and every choice rich would
take from the environment is given here. So docs can keep the pictures in git.

The templates are rich's own (`CONSOLE_SVG_FORMAT`, `CONSOLE_HTML_FORMAT`), passed as its
`code_format`, with three changes:
- no web fonts: rich's template loads Fira Code from a CDN; a picture here is self-contained (an
  <img> on GitHub may not fetch anything anyway) and names a stack of local monospace fonts whose
  box-drawing glyphs are as wide as their letters: Fira Code, DejaVu Sans Mono, Menlo, Consolas,
  Liberation Mono, then the browser's monospace;
- the SVG's glyphs are drawn at FONT_PX, a little larger than rich's 20px cell height, so that a
  vertical line (│, ├, ┬) spans the whole 24.4px row and joins the next row's, instead of leaving a
  1px gap at every row; rich's per-row clip paths, which would cut that overlap, are switched off
  in the template's CSS. The letters stay in their cells: each run has rich's textLength;
- the HTML page has a <title> and a visible title line, and the SVG's window title is the same;
- on a light theme the window's outline, which rich draws white at 35% for a dark terminal, is
  drawn black at 35%, so the window still has an edge on white.

Two themes (`--theme`): dark, rich's SVG theme, as a terminal; and light, a white page whose
colours are darkened until each reads on white (yellow, rich's and a terminal's, does not).
"""

from __future__ import annotations

import hashlib
import io
from html import escape

from rich.console import Console, RenderableType
from rich.terminal_theme import SVG_EXPORT_THEME, TerminalTheme

from blocktrace.errors import OutputError
from blocktrace.output.formats import THEMES

FONTS = '"Fira Code", "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace'
FONT_PX = 21  # rich's cells are 20px high and 24.4px apart: 21px glyphs of these fonts join rows
ADVANCE = 0.6  # a cell's width in ems in these fonts
ASPECT = ADVANCE * FONT_PX / 20  # rich's cell width / cell height (its font_aspect_ratio)
# each colour at least 5.9:1 against white (WCAG AA asks 4.5:1 of text); bright ones as plain ones
_LIGHT_ANSI = [
    (36, 41, 47),  # black
    (178, 34, 34),  # red
    (17, 110, 40),  # green
    (138, 90, 0),  # yellow: dark amber
    (9, 86, 190),  # blue
    (130, 50, 160),  # magenta
    (0, 110, 125),  # cyan
    (88, 96, 105),  # white: grey
]
LIGHT = TerminalTheme((255, 255, 255), (36, 41, 47), _LIGHT_ANSI, _LIGHT_ANSI)
THEME_OF: dict[str, TerminalTheme] = {"dark": SVG_EXPORT_THEME, "light": LIGHT}  # SVG and HTML alike
DARK_OUTLINE = 'stroke="rgba(255,255,255,0.35)"'  # the window's edge as rich draws it
LIGHT_OUTLINE = 'stroke="rgba(0,0,0,0.35)"'

SVG_FORMAT = """<svg class="rich-terminal" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">
    <!-- Generated with Rich https://www.textualize.io, by blocktrace -->
    <style>

    .{unique_id}-matrix {{
        font-family: FONTS;
        font-size: FONT_PXpx;
        line-height: {line_height}px;
        font-variant-east-asian: full-width;
    }}

    .{unique_id}-matrix text {{
        clip-path: none;
    }}

    .{unique_id}-title {{
        font-size: 18px;
        font-weight: bold;
        font-family: arial, "Liberation Sans", "DejaVu Sans", sans-serif;
    }}

    {styles}
    </style>

    <defs>
    <clipPath id="{unique_id}-clip-terminal">
      <rect x="0" y="0" width="{terminal_width}" height="{terminal_height}" />
    </clipPath>
    {lines}
    </defs>

    {chrome}
    <g transform="translate({terminal_x}, {terminal_y})" clip-path="url(#{unique_id}-clip-terminal)">
    {backgrounds}
    <g class="{unique_id}-matrix">
    {matrix}
    </g>
    </g>
</svg>
""".replace("FONTS", FONTS).replace("FONT_PX", str(FONT_PX))

HTML_FORMAT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>TITLE</title>
<style>
{stylesheet}
body {{
    color: {foreground};
    background-color: {background};
}}
pre, h1 {{
    font-family: FONTS;
    font-size: 14px;
}}
h1 {{
    font-weight: bold;
    margin: 0.5em 0;
}}
</style>
</head>
<body>
<h1>TITLE</h1>
<pre><code style="font-family:inherit">{code}</code></pre>
</body>
</html>
""".replace("FONTS", FONTS)


def picture(
    fmt: str, renderables: list[RenderableType], size: tuple[int, int], title: str, theme: str = "dark"
) -> str:
    """`renderables` printed on a console of `size` (columns, lines), exported as `fmt` ("svg" or
    "html") in `theme` (one of THEMES; else OutputError, exit 2). Every setting rich would read from
    the environment is given: a console given no height takes 80 columns in a dumb terminal
    (TERM=dumb), whatever its width."""
    colours = theme_of(theme)
    columns, lines = size
    console = Console(
        record=True,
        file=io.StringIO(),
        width=max(columns, len(title) + 16),  # room for the window's title beside its three buttons
        height=lines,
        force_terminal=True,
        force_jupyter=False,
        force_interactive=False,
        color_system="truecolor",
        no_color=False,
        legacy_windows=False,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
        tab_size=8,
    )
    for renderable in renderables:
        console.print(renderable, end="", no_wrap=True, overflow="ignore", crop=False)
    if fmt == "svg":
        digest = hashlib.sha256(console.export_text(clear=False).encode() + title.encode()).hexdigest()
        svg = console.export_svg(
            title=title,
            theme=colours,
            code_format=SVG_FORMAT,
            font_aspect_ratio=ASPECT,
            unique_id=f"blocktrace-{digest[:10]}",
        )
        return svg if colours is not LIGHT else svg.replace(DARK_OUTLINE, LIGHT_OUTLINE, 1)
    if fmt == "html":
        page = HTML_FORMAT.replace("TITLE", escape(title).replace("{", "{{").replace("}", "}}"))
        return console.export_html(theme=colours, code_format=page, inline_styles=True)
    raise ValueError(f"no picture format {fmt!r}")


def theme_of(name: str) -> TerminalTheme:
    """The terminal theme `name` names; OutputError (exit 2) for a name THEMES lacks."""
    if name not in THEME_OF:
        raise OutputError(f"no theme {name!r}; the themes are {', '.join(THEMES)}", 2)
    return THEME_OF[name]
