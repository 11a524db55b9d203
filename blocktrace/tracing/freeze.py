"""--freeze: requires_grad=False on the modules a glob names, before a module is traced."""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from blocktrace.errors import ConfigError


def freeze(module: nn.Module, patterns: tuple[str, ...]) -> None:
    """requires_grad=False for the parameters of every module whose path matches a glob pattern."""
    paths = dict(module.named_modules())
    for pattern in patterns:
        matched = [m for path, m in paths.items() if path and fnmatchcase(path, pattern)]
        if not matched:
            examples = ", ".join(list(paths)[1:4])
            raise ConfigError(f"--freeze {pattern!r} matches no module path (e.g. {examples})")
        for m in matched:
            m.requires_grad_(False)
