"""`--stats` against plain forward hooks on the same seeded run: every module call's output
statistics equal what a hook computes from the tensor the module returned (numpy-free, by hand in
float64), the table shows them, the trace's JSON carries them and reads back; a probe or meta run is
refused in one line naming --device cpu."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from torch import nn

import blocktrace
from blocktrace.model import build_module, example_inputs
from blocktrace.models.block.config import BlockConfig
from blocktrace.tracing.trace import Trace
from tests.harness import TINY, invoke, one_error


def hooked_stats(config: BlockConfig) -> list[tuple[str, dict[str, float]]]:
    """(path, stats of its output) of every module call, from forward hooks on a run seeded as
    --stats seeds it: weights from seed 0, then the input from seed 0."""
    torch.manual_seed(0)
    module = build_module(config, "cpu")
    torch.manual_seed(0)
    args = example_inputs(config, "cpu")
    names = {m: path for path, m in module.named_modules()}
    found: list[tuple[str, dict[str, float]] | None] = []
    open_calls: list[int] = []

    def pre(m: nn.Module, _: tuple) -> None:
        open_calls.append(len(found))
        found.append(None)

    def post(m: nn.Module, _: tuple, out: torch.Tensor) -> None:
        values = [float(v) for v in out.detach().flatten().tolist()]
        n = len(values)
        mean = sum(values) / n
        found[open_calls.pop()] = (
            names[m],
            {
                "mean": mean,
                "std": (sum((v - mean) ** 2 for v in values) / n) ** 0.5,
                "rms": (sum(v * v for v in values) / n) ** 0.5,
                "min": min(values),
                "max": max(values),
                "zeros": sum(v == 0 for v in values) / n,
            },
        )

    handles = [
        h for m in module.modules() for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))
    ]
    try:
        with torch.no_grad():
            module.eval()(*args)
    finally:
        for h in handles:
            h.remove()
    return [f for f in found if f is not None]


@pytest.mark.parametrize("preset", ["nanochat", "gpt2", "bert"])
def test_stats_equal_plain_forward_hooks_on_the_same_seeded_run(preset: str) -> None:
    config = BlockConfig.from_preset(preset, n_embd=32, n_head=4, seq=8, batch=2, n_layer=2)
    traced = blocktrace.trace(
        preset=preset, n_embd=32, n_head=4, seq=8, batch=2, n_layer=2, device="cpu", stats=True
    )
    expected = hooked_stats(config)
    assert [c.path for c in traced.calls] == [path for path, _ in expected]
    for call, (path, stats) in zip(traced.calls, expected, strict=True):
        got = call.outputs[0].stats
        assert got is not None, path
        assert got.to_dict() == pytest.approx(stats, rel=1e-9, abs=1e-12), path


def test_relu_squared_shows_its_sparsity_and_rms_norm_its_scale() -> None:
    traced = blocktrace.trace(n_embd=32, n_head=4, seq=8, batch=2, device="cpu", stats=True)
    relu = next(op for op in traced.ops if op.name == "relu")
    assert relu.outputs[0].stats is not None and 0.3 < relu.outputs[0].stats.zeros < 0.7
    norm = next(op for op in traced.ops if op.name == "rms_norm")
    assert norm.outputs[0].stats is not None and norm.outputs[0].stats.rms == pytest.approx(1, abs=1e-3)


def test_the_trace_carries_stats_and_reads_them_back() -> None:
    traced = blocktrace.trace(n_embd=32, n_head=4, seq=8, batch=2, device="cpu", stats=True)
    again = Trace.from_dict(json.loads(traced.to_json()))
    assert again == traced and again.calls[1].outputs[0].stats == traced.calls[1].outputs[0].stats
    plain = blocktrace.trace(n_embd=32, n_head=4, seq=8, batch=2, device="cpu")
    assert "stats" not in plain.to_json()  # without --stats the schema is as it was


def test_the_table_shows_the_stats_in_every_format() -> None:
    args = ["table", *TINY, "--device", "cpu", "--stats", "--depth", "1"]
    text = invoke(args).stdout
    assert text.splitlines()[0].split()[-6:] == ["mean", "std", "rms", "min", "max", "zeros"]
    rows = list(csv.DictReader(io.StringIO(invoke([*args, "--format", "csv"]).stdout)))
    data = json.loads(invoke([*args, "--format", "json"]).stdout)
    assert [float(r["rms"]) for r in rows] == [r["stats"]["rms"] for r in data["rows"]]
    assert "| mean | std | rms | min | max | zeros |" in invoke([*args, "--format", "markdown"]).stdout
    assert "mean" not in invoke(["table", *TINY, "--device", "cpu", "--depth", "1"]).stdout


def test_the_same_run_gives_the_same_numbers() -> None:
    args = ["table", *TINY, "--device", "cpu", "--stats", "--format", "csv"]
    assert invoke(args).stdout == invoke(args).stdout


@pytest.mark.parametrize("device", ["probe", "meta"])
def test_stats_without_values_are_refused(device: str) -> None:
    one_error(invoke(["table", *TINY, "--stats", "--device", device]), 2, "--device cpu")


def test_the_diagram_labels_each_edge_with_the_values_it_carried() -> None:
    text = invoke(["diagram", *TINY, "--device", "cpu", "--stats"]).stdout
    traced = blocktrace.trace(n_embd=32, n_head=4, seq=6, batch=2, device="cpu", stats=True)
    attn = next(c for c in traced.calls if c.path == "attn").outputs[0].stats
    assert attn is not None
    assert f"(B, T, C)  mean {attn.mean:.3g} std {attn.std:.3g} rms {attn.rms:.3g} " in text
    labelled = [line for line in text.splitlines() if "│ (B, T, C)" in line]
    assert labelled and all(" rms " in line and " zeros " in line for line in labelled)
    assert " rms " not in invoke(["diagram", *TINY, "--device", "cpu"]).stdout
    one_error(invoke(["diagram", *TINY, "--stats"]), 2, "--device cpu")


def test_layers_whose_values_differ_are_not_collapsed() -> None:
    """A stack's layers read alike in shapes and counts but not in values: with --stats each layer
    keeps its own row, so no run of layers shows one layer's numbers for all of them."""
    args = ["table", *TINY, "--n-layer", "2", "--device", "cpu", "--stats", "--depth", "1", "--format", "csv"]
    rows = list(csv.DictReader(io.StringIO(invoke(args).stdout)))
    assert [r["path"] for r in rows] == ["", "h.0", "h.1"]
    assert rows[1]["rms"] != rows[2]["rms"]
