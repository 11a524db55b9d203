"""Trace a transformers model, built from its config.json on the meta device, with torchinfo or torchview.

Usage: python benchmarks/peers/hf_peer.py torchinfo docs/examples/llama-70b [--batch 1 --seq 1024]

The model is what `blocktrace diagram --hf FOLDER` traces: the class its config's `architectures`
names, built from the config alone (no weights), here on the meta device, fed batch x seq token ids.
torchinfo prints its summary table; torchview prints its graph's DOT source (no graphviz binary needed).
"""

from __future__ import annotations

import argparse

import common


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("tool", choices=("torchinfo", "torchview"))
    p.add_argument("config", help="a folder holding config.json")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--depth", type=int, default=3)
    args = p.parse_args()

    import torch
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.config)
    model_class = getattr(transformers, config.architectures[0])
    with torch.device("meta"):
        model = model_class(config).eval()
    if args.tool == "torchinfo":
        from torchinfo import summary

        stats = summary(
            model,
            input_size=(args.batch, args.seq),
            dtypes=[torch.long],
            device="meta",
            depth=args.depth,
            verbose=0,
        )
        print(stats)
    else:
        from torchview import draw_graph

        ids = torch.zeros(args.batch, args.seq, dtype=torch.long, device="meta")
        graph = draw_graph(model, input_data=[ids], device="meta", depth=args.depth)
        print(graph.visual_graph.source)


if __name__ == "__main__":
    common.run(main)
