"""The distribution: its name (free on the package index; the import and the command stay
`blocktrace`), named so in every install hint, and no upper pin on what it needs."""

import re
import tomllib
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# `pip install X` or `pip install 'X[extra]'` where X is blocktrace under some name
HINT = re.compile(r"pip install -?q? ?'?(blocktrace[\w-]*)")


def test_the_distribution_is_blocktrace_cli_with_the_blocktrace_command() -> None:
    assert PROJECT["name"] == "blocktrace-cli"
    assert PROJECT["scripts"] == {"blocktrace": "blocktrace.__main__:main"}
    installed = distribution("blocktrace-cli")
    assert "blocktrace" in {e.name for e in installed.entry_points if e.group == "console_scripts"}


def test_every_install_hint_names_the_distribution() -> None:
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("blocktrace/**/*.py")]
    hints = {(f.name, m[1]) for f in files for m in HINT.finditer(f.read_text(encoding="utf-8"))}
    assert {name for _, name in hints} == {PROJECT["name"]}, hints
    assert ("hf.py", "blocktrace-cli") in hints and ("any-model.md", "blocktrace-cli") in hints


def test_no_dependency_has_an_upper_pin() -> None:
    needs = [*PROJECT["dependencies"], *(r for rs in PROJECT["optional-dependencies"].values() for r in rs)]
    assert not [r for r in needs if "<" in r or "==" in r or "~=" in r], needs
    assert "torch>=2.13" in PROJECT["dependencies"]  # the oldest the tests ran on (README)
