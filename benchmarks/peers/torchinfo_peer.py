"""Trace blocktrace's Block with torchinfo.summary and print the summary table.

Usage: python benchmarks/peers/torchinfo_peer.py --device meta --n-embd 768 --seq 1024 --batch 8
"""

from __future__ import annotations

import common
from torchinfo import summary


def main() -> None:
    args = common.parser(__doc__).parse_args()
    module, inputs = common.block_and_inputs(common.config_from(args), args.device)
    # verbose=0 returns the statistics without printing; we print them once, as a user would
    stats = summary(module, input_data=inputs, device=args.device, depth=3, verbose=0)
    print(stats)


if __name__ == "__main__":
    common.run(main)
