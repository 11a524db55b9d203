"""Every diagram in docs/ and README.md is produced by blocktrace itself; `blocktrace docs --check`
keeps them from drifting, page by page, and `pytest --update-golden` rewrites them with `blocktrace
docs` (blocktrace/docs/pages.py says how a block and a picture are written). Commands run in the
repository's root, so a path in them (`--module docs/examples/nanogpt_block.py:block`, `--hf
docs/examples/gpt2`) is written as from there.
"""

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blocktrace.cli import app
from blocktrace.docs.pages import BLOCK, PICTURE
from tests.harness import TINY, invoke, one_error

DOCS = Path(__file__).parent.parent / "docs"
PAGES = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
MARKED = [p for p in PAGES if BLOCK.search(text := p.read_text(encoding="utf-8")) or PICTURE.search(text)]
SHOWN = [
    ((page.parent / m["path"]).resolve(), m["args"])
    for page in PAGES
    for m in PICTURE.finditer(page.read_text(encoding="utf-8"))
]
PICTURES = dict(SHOWN)  # picture -> the arguments that draw it
pytestmark = pytest.mark.usefixtures("module_cache")  # a model shown on several pages is traced once


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DOCS.parent)


def output_of(args: str) -> str:
    result = CliRunner().invoke(app, shlex.split(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_docs_have_generated_blocks() -> None:
    assert {"README.md", "diagram.md", "pictures.md"} <= {p.name for p in MARKED}


@pytest.mark.parametrize("path", MARKED, ids=lambda p: p.name)
def test_doc_pages_are_what_blocktrace_prints(path: Path, request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--update-golden"):
        result = invoke(["docs", str(path.relative_to(DOCS.parent))])
        assert result.exit_code == 0, result.stderr
        return
    result = invoke(["docs", "--check", str(path.relative_to(DOCS.parent))])
    assert result.exit_code == 0, f"{result.stderr}{result.stdout}"
    assert result.stdout == ""
    # a marker's own notes (an MoE's experts path) are passed on; nothing else is said
    assert all(line.startswith("blocktrace: note: ") for line in result.stderr.splitlines())


def test_docs_show_pictures_of_two_families() -> None:
    shown = {path.relative_to(DOCS.resolve()).as_posix(): args for path, args in PICTURES.items()}
    assert {"img/block.svg", "img/neox.svg"} <= set(shown)
    assert "--preset neox" in shown["img/neox.svg"] and "--preset" not in shown["img/block.svg"]
    assert len(set(SHOWN)) == len(PICTURES), "a picture shown twice is drawn by one command"
    kept = {p.resolve() for p in (DOCS / "img").iterdir()}
    assert kept == set(PICTURES), "every picture in docs/img is shown, with the command that draws it"


# --- the command on pages of its own ----------------------------------------------------------------

ARGS = " ".join(TINY)
PAGE = f"""# A page

<!-- blocktrace: diagram {ARGS} --width 60 -->
```text
an old drawing
```

<!-- blocktrace picture: table {ARGS} -->
![the table](img/table.svg)
"""


def _page(tmp_path: Path, text: str = PAGE) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    return page


def test_a_stale_page_fails_the_check_with_a_diff_and_is_left_as_it_was(tmp_path: Path) -> None:
    page = _page(tmp_path)
    result = invoke(["docs", "--check", str(page)])
    one_error(result, 1, "2 files stale", str(page), str(tmp_path / "img" / "table.svg"))
    assert f"--- {page}\t(on disk)\n+++ {page}\t(as blocktrace prints it)\n" in result.stdout
    assert "\n-an old drawing\n" in result.stdout
    assert "\n+Block (float32): 9 module calls" in result.stdout
    assert f"--- /dev/null\n+++ {tmp_path / 'img' / 'table.svg'}" in result.stdout
    assert page.read_text(encoding="utf-8") == PAGE and not (tmp_path / "img").exists()


def test_the_command_rewrites_a_stale_page_and_its_picture_then_the_check_passes(tmp_path: Path) -> None:
    page = _page(tmp_path)
    result = invoke(["docs", str(page)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"refreshed {page}, {tmp_path / 'img' / 'table.svg'}\n"
    text = page.read_text(encoding="utf-8")
    assert "an old drawing" not in text and text.startswith("# A page\n\n<!-- blocktrace: diagram")
    drawing = output_of(f"diagram {ARGS} --width 60")
    assert f"```text\n{drawing}```\n" in text
    picture = tmp_path / "img" / "table.svg"
    drawn = tmp_path / "drawn.svg"
    assert CliRunner().invoke(app, ["table", *TINY, "-o", str(drawn)]).exit_code == 0
    assert picture.read_bytes() == drawn.read_bytes()
    assert invoke(["docs", "--check", str(page)]).exit_code == 0
    again = invoke(["docs", str(page)])
    assert (again.exit_code, again.stdout) == (0, "every block and picture is fresh\n")
    picture.write_bytes(picture.read_bytes().replace(b"</svg>", b"<!-- edited --></svg>"))
    one_error(invoke(["docs", "--check", str(page)]), 1, "1 file stale", str(picture))


def test_a_failing_marker_names_its_line_and_changes_no_page(tmp_path: Path) -> None:
    page = _page(tmp_path, PAGE + "\n<!-- blocktrace: diagram --n-embd 30 --n-head 4 -->\n```text\n```\n")
    one_error(invoke(["docs", str(page)]), 2, f"{page}:11: `blocktrace diagram --n-embd 30 --n-head 4`:")
    assert page.read_text(encoding="utf-8").startswith(PAGE) and not (tmp_path / "img").exists()
    unknown = _page(tmp_path, "<!-- blocktrace: diagram --no-such-flag -->\n```text\n```\n")
    one_error(invoke(["docs", str(unknown)]), 2, f"{unknown}:1:", "--no-such-flag")


@pytest.mark.parametrize(
    ("marker", "words"),
    [
        ("<!-- blocktrace picture: diagram -o x.svg -->\n![x](x.svg)\n", "takes no -o"),
        ("<!-- blocktrace: docs page.md -->\n```text\n```\n", "cannot run `blocktrace docs`"),
        ("<!-- blocktrace: diagram 'unclosed -->\n```text\n```\n", "cannot read the command"),
    ],
)
def test_a_marker_that_cannot_be_run_is_refused(tmp_path: Path, marker: str, words: str) -> None:
    one_error(invoke(["docs", str(_page(tmp_path, marker))]), 2, "page.md:1:", words)


def test_a_page_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    one_error(invoke(["docs", str(tmp_path / "missing.md")]), 2, "missing.md", "No such file")


def documented_keys(section: str) -> set[str]:
    text = (DOCS / "trace-schema.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    keys: set[str] = set()
    for row in re.findall(r"^\| (`.+?`) \|", body, re.MULTILINE):
        keys |= set(re.findall(r"`(\w+)`", row))
    return keys


def test_schema_doc_lists_exactly_the_keys_of_the_json() -> None:
    import json

    data = json.loads(output_of("diagram --n-embd 32 --n-head 4 --seq 6 --batch 2 --format json"))
    assert documented_keys("Top level") == set(data)
    assert documented_keys("tensor") == set(data["inputs"][0])
    assert documented_keys("call") == set(data["calls"][0])
    assert documented_keys("site") == set(data["calls"][1]["site"])
    assert documented_keys("frame") == set(data["frames"][0])
    assert documented_keys("op") == set(data["ops"][0])
    assert documented_keys("residual") == set(data["residual_adds"][0])
    assert documented_keys("branch") == set(data["residual_adds"][0]["branches"][0])
