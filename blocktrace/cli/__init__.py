"""The command line: typer, thin; every command hands off to the pipeline and the views."""

from blocktrace.cli import commands, docs  # noqa: F401  (registers the commands on the app)
from blocktrace.cli.app import app, main

__all__ = ["app", "main"]
