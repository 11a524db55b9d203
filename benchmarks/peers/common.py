"""What every peer script shares: the command line of a Block config, and the Block with its inputs.

The Block is blocktrace's own (blocktrace.model), so every peer traces exactly the module that
`blocktrace diagram` traces. Failures end as one line on stderr and exit code 1, which
benchmarks/run.py shows as the row's reason.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from blocktrace.models.block.config import BlockConfig


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the config flags of `blocktrace diagram` plus --device."""
    defaults = BlockConfig()
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--n-embd", type=int, default=defaults.n_embd)
    p.add_argument("--n-head", type=int, default=defaults.n_head)
    p.add_argument("--n-kv-head", type=int, default=None, help="default: --n-head")
    p.add_argument("--seq", type=int, default=defaults.seq)
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--n-layer", type=int, default=defaults.n_layer)
    p.add_argument("--device", choices=("meta", "cpu"), default="meta")
    return p


def config_from(args: argparse.Namespace) -> BlockConfig:
    return BlockConfig(
        n_embd=args.n_embd,
        n_head=args.n_head,
        n_kv_head=args.n_head if args.n_kv_head is None else args.n_kv_head,
        seq=args.seq,
        batch=args.batch,
        n_layer=args.n_layer,
    )


def block_and_inputs(config: BlockConfig, device: str) -> tuple[Any, list[Any]]:
    """The module `blocktrace diagram` traces for `config`, and its positional inputs [x, cos_sin]."""
    from blocktrace.model import build_module, example_inputs

    module = build_module(config, device)
    x, cos_sin = example_inputs(config, device)
    return module, [x, cos_sin]


def run(main: Callable[[], None]) -> None:
    """Call `main`; on any error print one line to stderr and exit 1 instead of a traceback."""
    try:
        main()
    except Exception as error:
        print(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", file=sys.stderr)
        sys.exit(1)
