"""The registry of output formats (formats.py): what each command writes, and which format an
`-o FILE` asks for by its suffix; a --format and a suffix that disagree are one line and exit 2,
said before anything is traced, with an existing file left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blocktrace.errors import OutputError
from blocktrace.output import formats
from tests.harness import TINY, invoke

# --- -o FILE picks the format ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "name", "starts"),
    [
        (["diagram"], "d.svg", "<svg "),
        (["diagram"], "D.SVG", "<svg "),
        (["diagram"], "d.html", "<!DOCTYPE html>"),
        (["diagram"], "d.htm", "<!DOCTYPE html>"),
        (["diagram"], "d.md", "**Block"),
        (["diagram"], "d.json", "{"),
        (["diagram"], "d.txt", "Block (float32)"),
        (["diagram"], "d", "Block (float32)"),  # no suffix: text
        (["diagram", "--format", "text"], "d.log", "Block (float32)"),  # --format decides
        (["diagram", "--format", "svg"], "d.svg", "<svg "),
        (["table"], "t.csv", "depth,name,kind"),
        (["table"], "t.svg", "<svg "),
        (["table"], "t.html", "<!DOCTYPE html>"),
        (["table"], "t.md", "| path |"),
        (["table"], "t.json", "{"),
        (["table"], "t.txt", "path "),
    ],
)
def test_the_suffix_of_output_picks_the_format(
    args: list[str], name: str, starts: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke([args[0], *TINY, *args[1:], "-o", name])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    text = (tmp_path / name).read_text(encoding="utf-8")
    assert text.startswith(starts), text[:80]
    if name.endswith(".json"):
        json.loads(text)


@pytest.mark.parametrize(
    ("args", "name", "message"),
    [
        (
            ["diagram", "--format", "svg"],
            "x.md",
            "and -o 'x.md' disagree: its suffix means markdown",
        ),
        (["diagram", "--format", "text"], "x.svg", "--format text and -o 'x.svg' disagree"),
        (["table", "--format", "csv"], "x.html", "--format csv and -o 'x.html' disagree"),
        (["diagram"], "x.csv", "asks for csv, which blocktrace diagram does not write"),
        (["diagram"], "x.png", "cannot tell the format of -o 'x.png' from its suffix '.png'"),
        (["table"], "x.png", "name a file ending in .txt, .md, .markdown, .json, .csv, .svg, .html, .htm"),
    ],
)
def test_a_format_and_suffix_that_disagree_is_one_line_and_exit_2(
    args: list[str], name: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blocktrace.pipeline

    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text("the old file\n")
    traced: list[object] = []
    monkeypatch.setattr(blocktrace.pipeline, "trace_spec", lambda *a, **k: traced.append(a))
    result = invoke([args[0], *TINY, "--no-cache", *args[1:], "-o", name])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("blocktrace: error: ") and message in lines[0], lines
    assert (tmp_path / name).read_text() == "the old file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert traced == []  # said before tracing


# --- the registry ---------------------------------------------------------------------------------


def test_resolve() -> None:
    assert formats.resolve("diagram", None, None) == "text"
    assert formats.resolve("diagram", None, "-") == "text"
    assert formats.resolve("diagram", "svg", "-") == "svg"
    assert formats.resolve("diagram", None, "out/x.y/block") == "text"  # a dot in a folder is no suffix
    assert formats.resolve("diagram", None, "/dev/null") == "text"
    assert formats.resolve("table", None, "a.Markdown") == "markdown"
    assert formats.resolve("table", "json", "a.json") == "json"
    with pytest.raises(OutputError) as error:
        formats.resolve("diagram", "csv", None)
    assert error.value.exit_code == 2 and "blocktrace diagram cannot write csv" in str(error.value)


def test_every_writer_is_registered_once_and_imports() -> None:
    from blocktrace.cli import options as cli
    from blocktrace.views.diagram.report import DiagramView
    from blocktrace.views.source.render import SourceListing
    from blocktrace.views.table.render import TableView

    suffixes = [s for f in formats.FORMATS.values() for s in f.suffixes]
    assert len(suffixes) == len(set(suffixes)) and all(s == s.lower() for s in suffixes)
    assert set(formats.WRITERS) == set(formats.FORMATS)
    for fmt in formats.WRITERS:
        assert callable(formats.writer(fmt)), fmt
    for view in (DiagramView, TableView, SourceListing):  # what each view renders, the registry offers
        assert formats.names(view.command) == (*view.formats, "svg", "html"), view.command
    assert [f.value for f in cli.DiagramFormat] == list(formats.names("diagram"))
    assert [f.value for f in cli.TableFormat] == list(formats.names("table"))
    assert [f.value for f in cli.SourceFormat] == list(formats.names("source"))
