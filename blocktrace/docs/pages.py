"""The markers in a markdown page and what they should hold, as `blocktrace docs` refreshes them.

A block is written as
    <!-- blocktrace: diagram --n-embd 64 -->
    ```text
    ...what `blocktrace diagram --n-embd 64` prints...
    ```
and a picture as
    <!-- blocktrace picture: diagram --preset neox -->
    ![the NeoX Block](img/neox.svg)
whose file (relative to the page) holds the bytes that command writes to a file of that name (its
suffix picks the format). Commands run in the current folder, so a path in them is written as from
there. Running a command is the caller's (`Runner`): this module knows pages, not commands.
"""

from __future__ import annotations

import difflib
import re
import shlex
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from blocktrace.errors import BlocktraceError, ConfigError, OutputError
from blocktrace.output.sink import atomic_write

BLOCK = re.compile(r"<!-- blocktrace: (?P<args>.+?) -->\n```(?P<lang>\w*)\n(?P<body>.*?)```\n", re.DOTALL)
PICTURE = re.compile(r"<!-- blocktrace picture: (?P<args>.+?) -->\n!\[[^\]]*\]\((?P<path>[^)\s]+)\)\n")
T = TypeVar("T")


class Runner(Protocol):
    """Runs `blocktrace ARGS`: what it prints, or the bytes it writes to `-o name` (a file name,
    no folder). A failure is a BlocktraceError."""

    def text(self, args: list[str]) -> str: ...

    def file(self, args: list[str], name: str) -> bytes: ...


@dataclass(frozen=True)
class Change:
    """A file a page makes: the page itself or one of its pictures; `old` is None where it is missing."""

    path: Path
    old: bytes | None
    new: bytes

    @property
    def stale(self) -> bool:
        return self.old != self.new

    def diff(self, shown: str) -> str:
        """A unified diff from what the file holds to what it should, the file named `shown`."""
        old = "" if self.old is None else self.old.decode("utf-8", "replace")
        lines = difflib.unified_diff(
            old.splitlines(keepends=True),
            self.new.decode("utf-8", "replace").splitlines(keepends=True),
            "/dev/null" if self.old is None else shown,
            shown,
            "" if self.old is None else "(on disk)",
            "(as blocktrace prints it)",
        )
        end = "\n\\ No newline at end of file\n"
        return "".join(line if line.endswith("\n") else line + end for line in lines)


def refresh(page: Path, runner: Runner) -> list[Change]:
    """The page and each picture it shows, with what they hold and what they should.
    Raises ConfigError for a page that cannot be read or a marker that cannot run, with its line."""
    try:
        data = page.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ConfigError(f"cannot read {str(page)!r}: {reason}") from error

    def block(match: re.Match[str]) -> str:
        printed = _run(page, text, match, runner.text)
        return f"<!-- blocktrace: {match['args']} -->\n```{match['lang']}\n{printed}```\n"

    changes = [Change(page, data, BLOCK.sub(block, text).encode("utf-8"))]
    for match in PICTURE.finditer(text):
        target = page.parent / match["path"]
        drawn = _run(page, text, match, partial(runner.file, name=target.name), picture=True)
        try:
            old: bytes | None = target.read_bytes()
        except FileNotFoundError:
            old = None
        except OSError as error:
            raise ConfigError(f"cannot read {str(target)!r}: {error.strerror}") from error
        changes.append(Change(target, old, drawn))
    return changes


def stale(changes: Iterable[Change]) -> list[Change]:
    """The changes that change something, each file once (a picture two pages show is drawn once)."""
    seen: dict[Path, Change] = {}
    for change in changes:
        seen.setdefault(change.path.resolve(), change)
    return [c for c in seen.values() if c.stale]


def write(changes: Iterable[Change]) -> None:
    """Each change's new bytes into its file, atomically (a temporary file renamed over it), keeping
    its permissions; a picture's folder is made if missing. Raises OutputError."""
    for change in changes:
        try:
            change.path.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o644 if change.old is None else stat.S_IMODE(change.path.stat().st_mode)
            atomic_write(change.path, change.new, mode)
        except OSError as error:
            raise OutputError(f"cannot write {str(change.path)!r}: {error.strerror or error}", 1) from error


def _run(
    page: Path, text: str, match: re.Match[str], run: Callable[[list[str]], T], picture: bool = False
) -> T:
    """What `run` makes of the marker's command; any failure names the marker's page and line."""
    where = f"{page}:{text.count(chr(10), 0, match.start()) + 1}"
    try:
        args = shlex.split(match["args"])
    except ValueError as error:
        raise ConfigError(f"{where}: cannot read the command: {error}") from error
    if not args:
        raise ConfigError(f"{where}: the marker names no command")
    if args[0] == "docs":
        raise ConfigError(f"{where}: a marker cannot run `blocktrace docs`")
    if picture and any(a in ("-o", "--output") or a.startswith("--output=") for a in args):
        raise ConfigError(f"{where}: a picture's command takes no -o: the picture's path is it")
    try:
        return run(args)
    except BlocktraceError as error:
        raise BlocktraceError(f"{where}: `blocktrace {match['args']}`: {error}", error.exit_code) from error
