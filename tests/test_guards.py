"""Guards that only a model needing them can hold: each test is built on code that, with the guard
removed, would be drawn otherwise than torch runs it (or would end in a traceback). Each docstring
names the mutation it catches."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from blocktrace.errors import TraceError
from blocktrace.models.divisors import with_divisors
from blocktrace.models.user_module import FactorySpec, factory_defaults
from blocktrace.pipeline import trace_spec
from blocktrace.tracing.tracer import trace
from blocktrace.views.diagram.formulas import formulas
from blocktrace.views.diagram.layout import notes
from blocktrace.views.steps import StepKind, StepTree
from tests.harness import invoke
from tests.test_probe_guards import Spec


class Swapped(nn.Module):
    """fc(x).transpose(0, 1): (B, T, D) -> (T, B, D), so layer 1 gets a (T, B, D) input."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).transpose(0, 1)


def test_each_layer_of_a_stack_takes_its_twin_s_fit() -> None:
    """sizes/stack.py repeat: the per-layer twin check's `return None` -> `pass`."""
    spec = Spec(Swapped, {"B": 2, "T": 3, "D": 8}, layers=2)
    probe, real = trace_spec(spec, "probe"), trace_spec(spec, "cpu")
    assert real.outputs[0].shape == (2, 3, 8)  # swapped twice
    assert [t.shape for t in probe.tensors()] == [t.shape for t in real.tensors()]


class ShortOrLong(nn.Module):
    """relu for long sequences, sigmoid for short ones: the probes (T = 19 and 13) take both."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu if x.shape[1] > 15 else torch.sigmoid
        return act(self.fc(x))


def test_probes_that_ran_other_code_are_not_fitted() -> None:
    """sizes/fit.py fit_probes: `if any(structure(t) != ...)` -> `if False`."""
    spec = Spec(ShortOrLong, {"B": 2, "T": 3, "D": 8})
    ran = [o.name for o in trace_spec(spec, "cpu").ops]
    assert ran == ["linear", "sigmoid"]
    assert [o.name for o in trace_spec(spec, "probe").ops] == ran


class Counted(nn.Module):
    """.item() in the forward: the meta device cannot run it, the probes' CPU runs can."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * int(x.abs().sum().item() > 0)


def test_device_meta_never_falls_back_to_the_probes() -> None:
    """pipeline.py _trace_full_size: `device == "meta" or` dropped from the fallback's condition."""
    spec = replace(Spec(Counted, {"B": 2, "T": 3, "D": 8}), full_size_trace=True)
    assert trace_spec(spec, "probe").outputs[0].shape == (2, 3, 8)  # derived: the fallback works
    with pytest.raises(TraceError, match=r"\.item\(\).*\(on the meta device\)$"):
        trace_spec(spec, "meta")


def fused_qkv(B: int = 2, T: int = 5, C: int = 12, H: int = 3) -> tuple[nn.Module, tuple]:
    """One head's q, k and v: 3C/H is a product of sizes only where H divides C."""
    return nn.Linear(C, 3 * C // H), (torch.randn(B, T, C),)


def test_the_divisor_search_goes_on_until_every_size_is_named() -> None:
    """models/user_module.py with_divisors: `and fitted.shapes_complete` dropped."""
    spec = with_divisors(FactorySpec("guards:fused_qkv", fused_qkv, factory_defaults("fused_qkv", fused_qkv)))
    traced = trace_spec(spec, "probe")
    assert traced.outputs[0].shape == (2, 5, 12)
    assert traced.outputs[0].symbols == ("B", "T", "3C/H")


class Watched(nn.Module):
    """A leaf module that runs one op and returns something else: its input, untouched."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.peak = torch.amax(x)
        return x


class Watching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.watch = Watched()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.watch(x))


def test_a_leaf_call_is_its_one_op_only_where_it_returns_that_op_s_output() -> None:
    """views/steps.py is_one_op: `and ops[0].outputs == call.outputs` dropped."""
    tree = StepTree(trace(Watching(), (torch.randn(2, 8),)))
    watch = next(s for s in tree.stream if s.kind == StepKind.call and s.call and s.call.path == "watch")
    assert len(notes(tree, watch)) == 1 and "amax" in notes(tree, watch)[0]


LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 16,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 24,
    "num_hidden_layers": 1,
    "vocab_size": 40,
    "max_position_embeddings": 16,
    "pad_token_id": 19,  # the first probe's vocabulary size: one past its last row
}


def test_a_special_token_id_at_a_probe_s_vocabulary_size_is_dropped(tmp_path: Path) -> None:
    """models/hf.py HFSpec.at: `raw[key] >= values.get("V", ...)` -> `>`."""
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps(LLAMA), encoding="utf-8")
    result = invoke(["table", "--hf", str(tmp_path), "--batch", "2", "--seq", "4"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "" and "V=40" in result.stdout


class DroppedSum(nn.Module):
    """h = drop(x + a(x)); return h + b(h): GPT-2's drop(wte + wpe), then a residual on h."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(x + self.a(x))  # in eval mode dropout hands back its input: one id, two steps
        return h + self.b(h)


def test_a_value_is_named_only_after_its_last_step() -> None:
    """views/diagram/formulas.py value(): the `earlier[-1] == made_at[...][-1]` rule dropped."""
    lines = formulas(StepTree(trace(DroppedSum(), (torch.randn(2, 8),))))
    assert lines[:2] == ["x_mid = Dropout(x + Linear(x))", "x_out = x_mid + Linear(x_mid)"]
