"""Every diagram in docs/ and README.md is produced by blocktrace itself; this test keeps them from drifting.

A block in docs is written as
    <!-- blocktrace: diagram --n-embd 64 -->
    ```text
    ...what that command prints...
    ```
and `pytest --update-golden` rewrites the blocks from the current output. A picture is written as
    <!-- blocktrace picture: diagram --preset neox -->
    ![the NeoX Block](img/neox.svg)
and the file it shows (relative to the page) must be the bytes that command writes to a file of
that name; `pytest --update-golden` rewrites the file. Commands run in the repository's root, so
a path in them (`--module docs/examples/nanogpt_block.py:block`, `--hf docs/examples/gpt2`) is
written as from there.
"""

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blocktrace.cli import app

DOCS = Path(__file__).parent.parent / "docs"
BLOCK = re.compile(r"<!-- blocktrace: (?P<args>.+?) -->\n```(?P<lang>\w*)\n(?P<body>.*?)```\n", re.DOTALL)
PAGES = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
FILES = [p for p in PAGES if BLOCK.search(p.read_text(encoding="utf-8"))]
PICTURE = re.compile(r"<!-- blocktrace picture: (?P<args>.+?) -->\n!\[[^\]]*\]\((?P<path>[^)\s]+)\)\n")
SHOWN = [
    ((page.parent / m["path"]).resolve(), m["args"])
    for page in PAGES
    for m in PICTURE.finditer(page.read_text(encoding="utf-8"))
]
PICTURES = dict(SHOWN)  # picture -> the arguments that draw it


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DOCS.parent)


def output_of(args: str) -> str:
    result = CliRunner().invoke(app, shlex.split(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_docs_have_generated_blocks() -> None:
    assert {"README.md", "diagram.md"} <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_doc_blocks_equal_what_blocktrace_prints(path: Path, request: pytest.FixtureRequest) -> None:
    text = path.read_text(encoding="utf-8")
    if request.config.getoption("--update-golden"):
        fresh = BLOCK.sub(
            lambda m: f"<!-- blocktrace: {m['args']} -->\n```{m['lang']}\n{output_of(m['args'])}```\n", text
        )
        path.write_text(fresh, encoding="utf-8")
        return
    for m in BLOCK.finditer(text):
        assert m["body"] == output_of(m["args"]), f"{path.name}: `blocktrace {m['args']}` prints otherwise"


def test_docs_show_pictures_of_two_families() -> None:
    shown = {path.relative_to(DOCS.resolve()).as_posix(): args for path, args in PICTURES.items()}
    assert {"img/block.svg", "img/neox.svg"} <= set(shown)
    assert "--preset neox" in shown["img/neox.svg"] and "--preset" not in shown["img/block.svg"]
    assert len(set(SHOWN)) == len(PICTURES), "a picture shown twice is drawn by one command"
    kept = {p.resolve() for p in (DOCS / "img").iterdir()}
    assert kept == set(PICTURES), "every picture in docs/img is shown, with the command that draws it"


@pytest.mark.parametrize("path", sorted(PICTURES), ids=lambda p: p.name)
def test_doc_pictures_are_what_blocktrace_draws(
    path: Path, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*shlex.split(PICTURES[path]), "-o", path.name]  # the file's suffix picks the format
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    fresh = (tmp_path / path.name).read_bytes()
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fresh)
        return
    assert path.exists(), f"no picture {path}; draw it with pytest --update-golden"
    assert path.read_bytes() == fresh, f"`blocktrace {PICTURES[path]} -o {path.name}` draws otherwise"


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
