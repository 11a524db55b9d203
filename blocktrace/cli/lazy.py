"""Commands built when they are named. typer builds every command's click parameters (some 35 flags
for each of six commands) before it parses anything, a fifth of `blocktrace --help`; here
`blocktrace diagram --help` builds diagram's alone, and `blocktrace --help` none: its list of
commands needs their names and first lines only."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand
from typer.main import get_command_from_info, get_command_name
from typer.models import CommandInfo

from blocktrace.cli.clicks import core

F = TypeVar("F", bound=Callable[..., Any])


class LazyTyper(typer.Typer):
    """A Typer whose commands wait, unbuilt, in `waiting`: typer, seeing none registered, builds the
    group alone, and the group (see LazyCommands) builds each command the first time it is named."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.waiting: dict[str, CommandInfo] = {}

    def command(self, name: str | None = None, **settings: Any) -> Callable[[F], F]:
        register = super().command(name, **settings)

        def wait(function: F) -> F:
            register(function)
            self.waiting[name or get_command_name(function.__name__)] = self.registered_commands.pop()
            return function

        return wait


class LazyCommands(MutableMapping[str, core.Command]):
    """A group's commands by name, in the order they were registered, each built on first use. While
    `listing`, one not built yet is given as its name and help alone, for the group's help."""

    def __init__(self, app: LazyTyper) -> None:
        self.app = app
        self.built: dict[str, core.Command] = {}
        self.listing = False

    def __getitem__(self, name: str) -> core.Command:
        if name in self.built:
            return self.built[name]
        info = self.app.waiting[name]
        if self.listing:
            return _listed(name, info)
        command = get_command_from_info(
            info,
            pretty_exceptions_short=self.app.pretty_exceptions_short,
            rich_markup_mode=self.app.rich_markup_mode,
        )
        spare_pydantic(command)
        self.built[name] = command
        return command

    def __setitem__(self, name: str, command: core.Command) -> None:
        self.built[name] = command

    def __delitem__(self, name: str) -> None:
        self.built.pop(name, None)
        self.app.waiting.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self.app.waiting), **dict.fromkeys(self.built)})

    def __len__(self) -> int:
        return len(self.app.waiting.keys() | self.built.keys())


def _listed(name: str, info: CommandInfo) -> core.Command:
    """A command as the group's help lists it: its help found as typer finds it, no parameters."""
    words = inspect.getdoc(info.callback) if info.help is None else inspect.cleandoc(info.help)
    return TyperCommand(
        name, help=words, short_help=info.short_help, hidden=info.hidden, deprecated=info.deprecated
    )


def spare_pydantic(command: core.Command) -> None:
    """Gives `command` blocktrace's own coercion of its values, where typer's imports pydantic (0.29
    on); before 0.29 typer coerces with click's types, so there is nothing to spare."""
    try:
        from blocktrace.cli.coercion import install
    except ImportError:  # typer < 0.29: no typer._coercion
        return
    install(command)
