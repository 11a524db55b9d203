"""The click that typer runs on. From 0.26 on typer carries its own copy, typer._click, and raises its
exceptions, not those of the click package (which it no longer needs): a `click.UsageError` caught
here would miss every usage error typer raises. So the CLI names click's parts from typer's copy."""

from typer._click import core, exceptions, formatting, shell_completion
from typer._click import globals as context

__all__ = ["context", "core", "exceptions", "formatting", "shell_completion"]
