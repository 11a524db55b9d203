"""SVG and HTML pictures (pictures.py) and the registry of formats that picks them (formats.py).

A picture must say what the text says: each SVG is parsed as XML and its rows of text, put back
together by position, are compared with the text drawing; the HTML page is parsed and its <pre> is
the text drawing. The same input gives the same bytes, whatever the environment.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.style import Style

from blocktrace.output.pictures import THEME_OF
from tests.harness import TINY, invoke

pytestmark = pytest.mark.usefixtures("module_cache")  # the same few traces, drawn in every format

SVG_NS = "{http://www.w3.org/2000/svg}"
CASES = {
    "diagram": ["diagram", *TINY],
    "diagram-formulas": ["diagram", *TINY, "--formulas", "--shapes", "both"],
    "neox": ["diagram", "--preset", "neox", *TINY],
    "narrow": ["diagram", *TINY, "--width", "60", "--ascii"],
    "table": ["table", *TINY],
    "table-depth": ["table", *TINY, "--depth", "1", "--shapes", "concrete"],
    "source": ["source", *TINY, "--function", "MLP.forward", "--function", "norm"],
}


def run(args: list[str], env: dict[str, str | None] | None = None) -> str:
    result = invoke(args, env=env)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def text_of(args: list[str]) -> list[str]:
    """The lines the text format prints to a pipe."""
    return run([*args, "--format", "text"]).splitlines()


# --- SVG ------------------------------------------------------------------------------------------


def plain(text: str | None) -> str:
    """Text as rich writes it into an SVG (every space a no-break space), with plain spaces."""
    return (text or "").replace("\u00a0", " ")


def svg_rows(svg: str) -> tuple[str, list[str]]:
    """The window's title, and the picture's rows of text: every <text> of the drawing placed at its
    column (x / cell width) in its row (by y); rich escapes spaces as no-break spaces."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    texts = list(root.iter(f"{SVG_NS}text"))
    title = [t for t in texts if t.get("class", "").endswith("-title")]
    assert len(title) == 1
    matrix = [t for t in texts if t not in title and (t.text or "").strip()]
    cell = {float(t.get("textLength", 0)) / len(t.text or "x") for t in matrix}
    assert max(cell) - min(cell) < 1e-6, cell  # one cell width for every run: the columns align
    width = cell.pop()
    rows: dict[float, dict[int, str]] = {}
    for t in matrix:
        rows.setdefault(float(t.get("y", 0)), {})[round(float(t.get("x", 0)) / width)] = t.text or ""
    ys = sorted(rows)
    pitch = min(b - a for a, b in itertools.pairwise(ys))
    lines: list[str] = [""] * (round((ys[-1] - ys[0]) / pitch) + 1)
    for y, runs in rows.items():
        line = ""
        for column, run_text in sorted(runs.items()):
            assert len(line) <= column, f"runs overlap in row {y}"
            line = line.ljust(column) + run_text
        lines[round((y - ys[0]) / pitch)] = plain(line).rstrip()
    return plain(title[0].text), lines


def strip_blank_ends(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return lines


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_svg_text_is_the_text_drawing(case: str) -> None:
    args = CASES[case]
    title, lines = svg_rows(run([*args, "--format", "svg"]))
    assert lines == strip_blank_ends(text_of(args))
    model = "ParallelBlock" if "neox" in args else "Block"
    assert title == f"blocktrace {args[0]}: {model}"


def _classes(svg: str) -> dict[str, str]:
    """CSS class -> its rules, from the picture's stylesheet."""
    style = next(ET.fromstring(svg).iter(f"{SVG_NS}style")).text or ""
    found = {}
    for line in style.splitlines():
        if line.strip().startswith(".") and "{" in line:
            name, rules = line.strip()[1:].split("{", 1)
            found[name.strip()] = rules.strip(" }")
    return found


def _style_of(svg: str, text: str) -> str:
    runs = [t for t in ET.fromstring(svg).iter(f"{SVG_NS}text") if plain(t.text).strip() == text]
    assert runs, text
    return _classes(svg)[runs[0].get("class", "")]


def test_svg_is_coloured_as_in_the_terminal() -> None:
    from blocktrace.views.diagram.report import STYLES

    svg = run(["diagram", *TINY, "--format", "svg"])

    def colour(style: str) -> str:
        color = Style.parse(style).color
        assert color is not None
        return f"fill: {color.get_truecolor(THEME_OF['dark']).hex}"

    merge = _style_of(svg, "(+)")
    assert colour(STYLES["merge"]) in merge and "font-weight: bold" in merge
    assert colour(STYLES["expr"]) in _style_of(svg, "x + attn(norm(x), cos_sin[0], cos_sin[1])")
    table = run(["table", *TINY, "--format", "svg"])
    residual_row = "x + attn(norm(x), cos_sin[0], cos_sin[1])"  # as printed
    assert colour("bold yellow") in _style_of(table, residual_row)


def test_svg_names_local_monospace_fonts_and_fetches_nothing() -> None:
    svg = run(["diagram", *TINY, "--format", "svg"])
    assert "@font-face" not in svg and "url(http" not in svg and "https://cdn" not in svg
    style = next(ET.fromstring(svg).iter(f"{SVG_NS}style")).text or ""
    assert '"DejaVu Sans Mono"' in style and "monospace;" in style


# --- HTML -----------------------------------------------------------------------------------------


class Page(HTMLParser):
    """What a page holds: its tags with their attributes, its <title>, the text of its <pre>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self.pre = ""
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if "title" in self._open:
            self.title += data
        if "pre" in self._open:
            self.pre += data


@pytest.mark.parametrize("case", ["diagram", "diagram-formulas", "table", "source"])
def test_html_is_one_self_contained_page_of_the_text_drawing(case: str) -> None:
    args = CASES[case]
    html = run([*args, "--format", "html"])
    page = Page()
    page.feed(html)
    page.close()
    names = [tag for tag, _ in page.tags]
    assert html.startswith("<!DOCTYPE html>") and names.count("html") == 1 and names.count("body") == 1
    assert "link" not in names and "script" not in names and "img" not in names and "iframe" not in names
    assert not any("src" in attrs or "href" in attrs for _, attrs in page.tags)
    assert "url(" not in html and "@import" not in html and "http" not in html
    assert page.title == f"blocktrace {args[0]}: Block"
    assert [line.rstrip() for line in page.pre.splitlines()] == text_of(args)
    if args[0] != "source":  # the listing is plain in a terminal too
        assert "<span style=" in html  # coloured with inline styles, no stylesheet to lose


# --- the same bytes -------------------------------------------------------------------------------

# what rich would read from the environment; each alone, since one can hide another (LINES gives a
# console the height that spares it TERM=dumb's 80 columns)
ENVIRONMENTS = [
    {"COLUMNS": "20"},
    {"COLUMNS": "300", "LINES": "3"},
    {"TERM": "dumb"},
    {"NO_COLOR": "1"},
    {"FORCE_COLOR": "0"},
    {"FORCE_COLOR": "1", "TERM": "xterm-256color"},
]


@pytest.mark.parametrize("fmt", ["svg", "html"])
@pytest.mark.parametrize("command", ["diagram", "table", "source"])
def test_the_same_input_gives_the_same_bytes_anywhere(
    command: str, fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fresh = [command, *TINY, "--no-cache"]
    args = [command, *TINY]  # traced once: the environment reaches the drawing, not the trace
    quiet = {name: None for env in ENVIRONMENTS for name in env}
    first = run([*fresh, "--format", fmt], env=quiet)
    assert run([*fresh, "--format", fmt], env=quiet) == first  # two traces, the same bytes
    for env in ENVIRONMENTS:
        assert run([*args, "--format", fmt], env={**quiet, **env}) == first, env
    run([*args, "-o", f"picture.{fmt}"], env={**quiet, "TERM": "dumb"})
    assert (tmp_path / f"picture.{fmt}").read_bytes() == first.encode()
    terminal = invoke([*args, "--format", fmt], stdout="terminal", env={**quiet, "COLUMNS": "40"})
    assert terminal.stdout == first  # a picture is not fitted or coloured for the terminal it goes to


def test_a_separate_process_draws_the_same_bytes(tmp_path: Path) -> None:
    """Nothing in a picture depends on the process: hash seeds, ids, the time."""
    command = [sys.executable, "-m", "blocktrace", "diagram", *TINY, "--no-cache", "-o"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for name, seed in (("a.svg", "1"), ("b.svg", "2")):
        result = subprocess.run(
            [*command, str(tmp_path / name)], env={**env, "PYTHONHASHSEED": seed}, capture_output=True
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_an_ascii_stdout_gets_the_characters_as_references() -> None:
    result = invoke(["diagram", *TINY, "--format", "svg"], encoding="ascii")
    assert result.exit_code == 0, result.stderr
    assert "&#9474;" in result.stdout  # │
    assert unescape(result.stdout.replace("&#160;", " ")) == unescape(
        run(["diagram", *TINY, "--format", "svg"]).replace("&#160;", " ")
    )


def test_small_svg_matches_the_reviewed_golden_file(golden) -> None:
    """The table's picture; the diagram's are docs/img/*.svg, checked by test_docs."""
    golden("table_depth1.svg", run(["table", *TINY, "--depth", "1", "--format", "svg"]))
