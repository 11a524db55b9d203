"""Every diagram in docs/ and README.md is produced by blocktrace itself; this test keeps them from drifting.

A block in docs is written as
    <!-- blocktrace: diagram --n-embd 64 -->
    ```text
    ...what that command prints...
    ```
and `pytest --update-golden` rewrites the blocks from the current output.
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
