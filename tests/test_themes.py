"""`--theme dark|light` (output/pictures.py): the light picture is on white in colours that read on
white, the dark one stays the terminal's, the HTML page follows, and a bad name is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.style import Style

import blocktrace
from blocktrace.errors import BlocktraceError
from blocktrace.output import formats
from blocktrace.output.pictures import DARK_OUTLINE, LIGHT, LIGHT_OUTLINE, THEME_OF
from tests.harness import TINY, invoke
from tests.test_pictures import _style_of, run, svg_rows, text_of

WHITE = "#ffffff"


def contrast(rgb: tuple[int, int, int]) -> float:
    """WCAG's contrast ratio of a colour against white."""
    channels = [c / 255 for c in rgb]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def test_every_theme_the_cli_offers_has_colours() -> None:
    assert set(formats.THEMES) == set(THEME_OF) and formats.THEMES[0] == "dark"


def test_light_svg_is_on_white_and_dark_is_not() -> None:
    light = run(["diagram", *TINY, "--format", "svg", "--theme", "light"])
    dark = run(["diagram", *TINY, "--format", "svg"])
    assert f'fill="{WHITE}"' in light and WHITE not in dark.lower()
    assert run(["diagram", *TINY, "--format", "svg", "--theme", "dark"]) == dark
    assert svg_rows(light)[1] == svg_rows(dark)[1]  # the same drawing, only coloured otherwise


def test_the_light_window_has_an_edge() -> None:
    light = run(["diagram", *TINY, "--format", "svg", "--theme", "light"])
    dark = run(["diagram", *TINY, "--format", "svg"])
    assert DARK_OUTLINE in dark  # what rich draws; if it ever changes, so must the light one
    assert LIGHT_OUTLINE in light and DARK_OUTLINE not in light


def test_light_colours_read_on_white() -> None:
    from blocktrace.views.diagram.report import STYLES

    assert all(contrast(rgb) >= 4.5 for rgb in (LIGHT.foreground_color, *LIGHT.ansi_colors))
    light = run(["diagram", *TINY, "--format", "svg", "--theme", "light"])
    color = Style.parse(STYLES["merge"]).color
    assert color is not None
    assert f"fill: {color.get_truecolor(LIGHT).hex}" in _style_of(light, "(+)")  # the highway's yellow


def test_html_honours_the_theme() -> None:
    light = run(["table", *TINY, "--format", "html", "--theme", "light"])
    dark = run(["table", *TINY, "--format", "html"])
    assert f"background-color: {WHITE}" in light and f"background-color: {WHITE}" not in dark
    assert "color: #8a5a00" in light  # the residual rows' yellow, darkened


def test_text_formats_ignore_the_theme() -> None:
    assert run(["diagram", *TINY, "--theme", "light"]).splitlines() == text_of(["diagram", *TINY])


@pytest.mark.parametrize("command", ["diagram", "table", "source", "memory", "grad"])
def test_an_unknown_theme_is_one_line_exit_2(command: str, tmp_path: Path) -> None:
    result = invoke([command, *TINY, "--theme", "blue", "-o", str(tmp_path / "x.svg")])
    assert result.exit_code == 2
    assert result.stderr.startswith("blocktrace: error: ") and result.stderr.count("\n") == 1
    assert "'blue'" in result.stderr and "light" in result.stderr
    assert not (tmp_path / "x.svg").exists()


def test_save_takes_the_theme(tmp_path: Path) -> None:
    shown = blocktrace.diagram(n_embd=64, n_head=4, seq=16, batch=2)
    shown.save(tmp_path / "light.svg", theme="light")
    shown.save(tmp_path / "dark.svg")
    assert f'fill="{WHITE}"' in (tmp_path / "light.svg").read_text()
    assert WHITE not in (tmp_path / "dark.svg").read_text().lower()
    with pytest.raises(BlocktraceError, match="no theme 'blue'") as raised:
        shown.save(tmp_path / "blue.svg", theme="blue")
    assert raised.value.exit_code == 2 and not (tmp_path / "blue.svg").exists()
