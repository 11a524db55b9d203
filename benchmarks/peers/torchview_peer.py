"""Trace blocktrace's Block with torchview.draw_graph and print the graph in DOT.

Printing the DOT source needs no graphviz binary, so this measures the trace and the graph, not an
image renderer.

Usage: python benchmarks/peers/torchview_peer.py --device meta --n-embd 768 --seq 1024 --batch 8
"""

from __future__ import annotations

import common
from torchview import draw_graph


def main() -> None:
    args = common.parser(__doc__).parse_args()
    module, inputs = common.block_and_inputs(common.config_from(args), args.device)
    graph = draw_graph(module, input_data=inputs, device=args.device, depth=3)
    print(graph.visual_graph.source)


if __name__ == "__main__":
    common.run(main)
