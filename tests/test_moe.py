"""MoE models from transformers 5 draw on the meta device through transformers' batched_mm experts
implementation, with one note; the grouped matmul of the default implementation is counted in FLOPs
by a formula checked against torch's own count of the matmuls it groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM

from blocktrace.api.request import model_request
from blocktrace.models.block.config import BlockConfig
from blocktrace.models.request import ModelRequest
from blocktrace.pipeline import cached_trace
from blocktrace.tracing.flops import FlopCounter
from blocktrace.views.stats import totals
from tests.harness import invoke, one_error
from tests.hooks import hooked_calls, traced_calls

B, T = 2, 6
SMALL = {"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 1, "vocab_size": 97}
CAUSAL = {"mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM"}
MOE = {
    "mixtral": lambda: transformers.MixtralConfig(
        **SMALL, intermediate_size=48, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2
    ),
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(
        **SMALL,
        intermediate_size=48,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=40,
        num_key_value_heads=2,
        num_experts=4,
        num_experts_per_tok=2,
    ),
}


@pytest.mark.parametrize("name", list(MOE))
def test_an_moe_draws_with_one_note_and_its_experts_counted(name: str, tmp_path: Path) -> None:
    config = MOE[name]()
    config.architectures = [CAUSAL[name]]
    config.save_pretrained(tmp_path)
    result = invoke(["table", "--hf", str(tmp_path), "--batch", str(B), "--seq", str(T)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("\n") == 1 and "batched_mm experts implementation" in result.stderr
    assert "FLOPs unknown" not in result.stdout
    trace = cached_trace(
        ModelRequest(BlockConfig(), "hf", str(tmp_path), {"batch": B, "seq": T}), use_cache=False
    )
    model = AutoModelForCausalLM.from_config(config).eval()  # its default experts: the same calls
    assert traced_calls(trace) == hooked_calls(model, (torch.zeros(B, T, dtype=torch.long),))
    assert totals(trace).params == sum(p.numel() for p in model.parameters())


def test_the_experts_multiply_adds_are_the_hand_count(tmp_path: Path) -> None:
    MOE["mixtral"]().save_pretrained(tmp_path)
    trace = cached_trace(
        ModelRequest(BlockConfig(), "hf", str(tmp_path), {"batch": B, "seq": T}), use_cache=False
    )
    experts = next(c.index for c in trace.calls if c.path.endswith("mlp.experts"))
    pairs, f, c = B * T * 2, 48, 32  # tokens x top-2; gate and up (2F x C), then down (C x F)
    assert sum(o.flops for o in trace.ops if o.call == experts) == 2 * pairs * (2 * f) * c + 2 * pairs * c * f


def _torch_count(run) -> int:
    with FlopCounterMode(display=False) as mode:
        run()
    return mode.get_total_flops()


def test_grouped_mm_is_counted_as_the_matmuls_it_groups() -> None:
    a, b = torch.randn(8, 16), torch.randn(3, 16, 32)
    offs = torch.tensor([3, 3, 8], dtype=torch.int32)  # 3 rows, none, 5 rows
    groups = [(0, 3), (3, 3), (3, 8)]
    a3, b3 = torch.randn(4, 8, 16), torch.randn(4, 16, 32)
    a2, b2, koffs = torch.randn(8, 16), torch.randn(16, 32), torch.tensor([4, 16], dtype=torch.int32)
    cases = [
        (
            lambda: torch._grouped_mm(a, b, offs=offs),
            lambda: [a[i:j] @ b[g] for g, (i, j) in enumerate(groups)],
        ),
        (lambda: torch._grouped_mm(a3, b3), lambda: [a3[g] @ b3[g] for g in range(4)]),
        (lambda: torch._grouped_mm(a2, b2, offs=koffs), lambda: [a2[:, :4] @ b2[:4], a2[:, 4:] @ b2[4:]]),
    ]
    for grouped, by_hand in cases:
        with FlopCounter() as counter:
            grouped()
        assert counter.counts.uncounted == []
        assert counter.counts.flops == _torch_count(by_hand) > 0


# tests/corpus_blocks.py's top-k MoE: torch.where over the experts chosen has no shape on meta
MOE_BLOCK = ["--module", "tests/corpus_blocks.py:MoEBlock", "--input", "2,6,16"]


def test_a_top_k_moe_block_draws_on_the_cpu_by_default_with_one_note() -> None:
    result = invoke(["diagram", *MOE_BLOCK])
    assert result.exit_code == 0, result.stderr
    (note,) = result.stderr.splitlines()
    assert note.startswith("blocktrace: note: the meta device cannot run this model (forward failed in moe")
    assert "TopKMoE.forward: where (12, 2)" in note and "is that input's routing" in note
    assert "(shapes from a real CPU run)" in result.stdout.splitlines()[0]
    assert "TopKMoE" in result.stdout and "2 residual adds" in result.stdout
    assert f"\n{note}\n" in Path("docs/any-model.md").read_text(encoding="utf-8")  # as documented


def test_a_top_k_moe_block_on_meta_asked_for_is_one_line() -> None:
    line = one_error(invoke(["diagram", *MOE_BLOCK, "--device", "meta"]), 1, "torch.nonzero()")
    assert line.endswith("(on the meta device; without --device meta it runs on the CPU at the sizes given)")


def test_the_top_k_moe_block_s_shapes_are_plain_hooks_on_the_same_cpu_run() -> None:
    """The experts' token counts are the seeded input's routing: hooks on that same module and input
    see the same calls, each expert's rows included, and a second trace repeats them."""
    request = model_request({"module": MOE_BLOCK[1], "input": (MOE_BLOCK[3],)})
    trace = cached_trace(request, use_cache=False)
    assert trace.device == "cpu"
    spec = request.spec()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # as the pipeline seeds its run: the module's weights, then the input
        module = spec.build(spec.sizes, "cpu", spec.layers)
        args, kwargs = spec.inputs(spec.sizes, "cpu")
    hooked = hooked_calls(module, args, kwargs)
    assert traced_calls(trace) == hooked
    rows = [shapes[0][0] for path, _, shapes in hooked if path.rpartition(".")[0] == "moe.experts"]
    assert sum(rows) == 2 * 6 * 2 and len(set(rows)) > 1  # top-2 of 12 tokens, unevenly routed
    assert traced_calls(cached_trace(request, use_cache=False)) == hooked
