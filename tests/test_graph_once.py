"""The data-flow graph is built once per trace: the tracer builds it to find the residual adds, and
the trace that naming makes from it (sizes scaled, dims named) keeps it, its values renamed. That
graph must be the one a fresh build of the named trace gives, on every path a trace is named by."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from blocktrace.api.request import model_request
from blocktrace.models.spec import Device
from blocktrace.pipeline import trace_spec
from blocktrace.sizes.naming import derived_trace
from blocktrace.sizes.stack import fit_shapes
from blocktrace.tracing.graph import build
from blocktrace.tracing.graph.build import build_graph, graph_of
from blocktrace.tracing.records import FrozenDict
from tests.harness import TINY, invoke, tiny_llama

SMALL = {"n_embd": 32, "n_head": 4, "seq": 6, "batch": 2}


@pytest.mark.parametrize(
    ("flags", "device"),
    [
        ({"n_layer": 1}, Device.probe),  # one Block, derived from its probes
        ({"n_layer": 3}, Device.probe),  # a stack, derived from the stack traced small
        ({"n_layer": 2, "preset": "bert"}, Device.probe),  # post-norm, its joins inside calls
        ({"n_layer": 2, "preset": "neox"}, Device.probe),  # parallel branches
        ({"n_layer": 2}, Device.meta),  # traced at full size, named from the probes
    ],
)
def test_the_kept_graph_is_the_named_traces_own(flags: dict[str, object], device: Device) -> None:
    traced = trace_spec(model_request({**SMALL, **flags}).spec(), device)
    hash(traced)  # frozen all the way down, as restated by naming (an op's attrs a FrozenDict)
    assert build._KEPT in traced.__dict__  # handed on from the tracer, not built by the views
    kept = graph_of(traced)
    assert kept == build_graph(traced)
    assert any(level.residuals for level in kept.levels)
    assert any(level.side_inputs for level in kept.levels) == (flags.get("preset") != "bert")


def test_an_hf_model_keeps_its_graph_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(tiny_llama()))
    traced = trace_spec(model_request({"hf": str(tmp_path), "seq": 8}).spec(), Device.probe)
    assert traced.symbols  # named from the probes
    assert graph_of(traced) == build_graph(traced)


@pytest.mark.parametrize(("layers", "builds"), [("1", 2), ("3", 3)])
def test_a_diagram_builds_each_graph_once(layers: str, builds: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two probes of one Block, and for a stack the stack traced small: one graph each, none for
    the drawing, the formulas and the table, which read the named trace's."""
    built: list[object] = []
    real = build.build_graph

    def counted(trace: object) -> object:
        built.append(trace)
        return real(trace)  # type: ignore[arg-type]

    monkeypatch.setattr(build, "build_graph", counted)
    flags = [*TINY[:-1], layers, "--no-cache"]
    for command in (["diagram", "--formulas"], ["table"]):
        built.clear()
        result = invoke([*command, *flags])
        assert result.exit_code == 0, result.stderr
        assert len(built) == builds


def test_naming_restates_an_ops_arguments_frozen() -> None:
    """An argument that differed between the probes (a scale of 1/sqrt(D)) is unknown at full size:
    the derived trace's op goes without it, its arguments still a FrozenDict."""
    spec = model_request({**SMALL, "n_layer": 1}).spec()
    fit = fit_shapes(spec)
    assert fit is not None
    sdpa = next(o for o in fit.probe.ops if o.name == "scaled_dot_product_attention")
    derived = derived_trace(spec, replace(fit, varying=frozenset({(sdpa.index, "is_causal")})))
    assert derived is not None
    attrs = derived.ops[sdpa.index].attrs
    assert "is_causal" not in attrs and "enable_gqa" in attrs and isinstance(attrs, FrozenDict)
    hash(derived)
