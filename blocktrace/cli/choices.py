"""Choices of the CLI whose meaning lives in a stage its help need not import (tracing/, views/):
their values alone, each checked against its enum by tests/test_cli_choices.py."""

from enum import StrEnum


class Optimizer(StrEnum):  # views/memory/build.py's Optimizer
    adamw = "adamw"
    sgd = "sgd"
    none = "none"


class GradInit(StrEnum):  # tracing/grad.py's Init
    torch = "torch"
    xavier = "xavier"
