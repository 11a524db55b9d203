"""FLOPs recorded at trace time by torch's own formulas, checked against FlopCounterMode on real models;
ops with no formula flagged; probe-derived FLOPs equal to meta-traced ones; tied weights counted once."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

from blocktrace.model import build_module, example_inputs
from blocktrace.models.block.config import BlockConfig
from blocktrace.models.block.families import Preset
from blocktrace.models.spec import Dtype
from blocktrace.pipeline import trace_config, trace_spec
from blocktrace.sizes.naming import derived_trace
from blocktrace.sizes.stack import fit_shapes
from blocktrace.sizes.symbols import Symbol, SymbolSet
from blocktrace.tracing.flops import signature
from blocktrace.tracing.tracer import trace
from blocktrace.views.steps import StepTree
from blocktrace.views.table.build import build_table
from blocktrace.views.table.render import to_csv, to_json, to_text
from tests.models import traced

CONFIGS = [
    BlockConfig(n_embd=64, n_head=4, seq=8, batch=2),
    BlockConfig(n_embd=64, n_head=4, n_kv_head=2, seq=8, batch=2),  # GQA
    BlockConfig(n_embd=48, n_head=6, n_kv_head=1, seq=5, batch=3, mlp_ratio=2),  # MQA, odd sizes
    BlockConfig(n_embd=32, n_head=2, seq=4, batch=1, n_layer=2),
]
aten = torch.ops.aten


def block_flops_closed_form(c: BlockConfig) -> int:
    """2·B·T·(Linear params) + 4·B·T²·C per Block: attention in full, not halved for causal."""
    linear_params = c.n_embd * c.n_embd * 2 + 2 * c.n_embd * c.n_kv_head * c.head_dim
    linear_params += 2 * c.mlp_ratio * c.n_embd**2
    per_block = 2 * c.batch * c.seq * linear_params + 4 * c.batch * c.seq**2 * c.n_embd
    return c.n_layer * per_block


def counted(module: nn.Module, args: tuple, kwargs: dict | None = None) -> int:
    """FlopCounterMode's total for one forward."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*args, **(kwargs or {}))
    return counter.get_total_flops()


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_block_flops_equal_the_closed_form(config: BlockConfig) -> None:
    table = build_table(StepTree(traced(config)))
    assert table.totals.flops == block_flops_closed_form(config)
    assert table.rows[0].flops == table.totals.flops  # the root row includes everything


@pytest.mark.parametrize("preset", list(Preset))
def test_each_preset_totals_equal_flop_counter_on_meta(preset: str) -> None:
    config = BlockConfig.from_preset(preset, n_embd=64, n_head=4, seq=8, batch=2, n_layer=2)
    module, args = build_module(config, "meta"), example_inputs(config, "meta")
    ours = trace(module, args)
    assert sum(o.flops for o in ours.ops) == counted(module, args) > 0
    assert not any(o.uncounted for o in ours.ops)


def test_cpu_attention_is_counted_where_flop_counter_counts_0() -> None:
    """torch 2.13 has no formula for the CPU attention kernel, and FlopCounterMode counts it as 0;
    it takes the formula of its CUDA twin (flops.TWINS)."""
    config = CONFIGS[1]
    module, args = build_module(config, "cpu"), example_inputs(config, "cpu")
    ours = trace(module, args)
    sdpa = next(o for o in ours.ops if o.name == "scaled_dot_product_attention")
    assert aten._scaled_dot_product_flash_attention_for_cpu not in flop_registry
    assert sdpa.flops == 4 * config.batch * config.seq**2 * config.n_embd and not sdpa.uncounted
    assert sum(o.flops for o in ours.ops) == counted(module, args) + sdpa.flops


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_every_call_matches_flop_counter_on_meta(config: BlockConfig) -> None:
    module = build_module(config, "meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*example_inputs(config, "meta"))
    root = type(module).__name__
    theirs = {
        name.removeprefix(root).removeprefix("."): sum(counts.values())
        for name, counts in counter.get_flop_counts().items()
        if name != "Global"
    }
    calls = [r for r in build_table(StepTree(traced(config))).rows if r.call is not None]
    assert {r.path: r.flops for r in calls if r.flops} == {p: f for p, f in theirs.items() if f}


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(3, 8, 5, padding=2)
        self.conv2 = nn.Conv2d(8, 4, (3, 3), stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)  # (B, 8, L)
        return self.conv2(y.unsqueeze(1).expand(-1, 8, -1, -1))


class EinsumAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = torch.einsum("btd,bsd->bts", q, k).softmax(-1)
        return torch.einsum("bts,bsd->btd", scores, v)


def gpt2(device: str) -> tuple[nn.Module, tuple]:
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=16, vocab_size=50)
    with torch.device(device):
        return GPT2Model(config), (torch.zeros(2, 7, dtype=torch.long),)


MODELS = {
    "convs": lambda device: (Convs().to(device), (torch.randn(2, 3, 9, device=device),)),
    "einsum": lambda device: (EinsumAttention(16).to(device), (torch.randn(2, 5, 16, device=device),)),
    "gpt2_conv1d": gpt2,
}


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("name", MODELS)
def test_models_nobody_here_wrote_match_flop_counter(name: str, device: str) -> None:
    module, args = MODELS[name](device)
    ours = trace(module, args)
    assert sum(o.flops for o in ours.ops) == counted(module, args) > 0
    assert not any(o.uncounted for o in ours.ops)


def test_each_op_has_its_own_flops() -> None:
    module, args = MODELS["convs"]("cpu")
    ops = {o.name: o.flops for o in trace(module, args).ops}
    conv1 = 2 * (2 * 8 * 9) * (3 * 5)  # 2 · output elements · (in channels · kernel)
    conv2 = 2 * (2 * 4 * 3 * 4) * (8 * 3 * 3)  # (B, 4, 3, 4) out of (B, 8, 8, 9)
    assert (ops["conv1d"], ops["conv2d"], ops["unsqueeze"], ops["expand"]) == (conv1, conv2, 0, 0)
    module, args = MODELS["gpt2_conv1d"]("cpu")
    addmms = [o for o in trace(module, args).ops if o.name == "addmm"]  # Conv1D: x @ W + b
    assert [o.flops for o in addmms] == [2 * 14 * 32 * n for n in (96, 32, 128, 128)]  # 2·tokens·in·out


class Unknowable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.linalg.inv(x))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_an_op_with_no_formula_is_flagged_not_0(device: str) -> None:
    assert aten.linalg_inv_ex not in flop_registry
    x = torch.randn(3, 4, 4, device=device) + 4 * torch.eye(4, device=device)
    ours = trace(Unknowable().to(device), (x,))
    inv, linear = ours.ops
    assert (inv.flops, inv.uncounted) == (0, ("aten.linalg_inv_ex",))
    assert (linear.flops, linear.uncounted) == (2 * 12 * 4 * 4, ())
    table = build_table(StepTree(ours))
    root, inv_row = table.rows[0], next(r for r in table.rows if r.op == inv.index)
    assert root.uncounted == ("aten.linalg_inv_ex",) and root.flops == linear.flops
    text = to_text(table)
    assert f"{linear.flops:,}+?" in text.splitlines()[2]  # the root row: its known part, marked
    assert text.splitlines()[3].rstrip().endswith(" ?")  # the inverse's row
    assert "FLOPs unknown (?): 1 op ran aten ops with no formula: aten.linalg_inv_ex" in text
    doc = json.loads(to_json(table))
    assert doc["totals"]["flops"] is None and doc["totals"]["flops_known"] == linear.flops
    assert [r["flops"] for r in doc["rows"]][:2] == [None, None]
    assert to_csv(table).splitlines()[1].endswith(",,1")  # the root row's flops: empty (then its count)
    assert inv_row.uncounted == ("aten.linalg_inv_ex",)


@pytest.mark.parametrize("n_embd", [64, 96, 192])
@pytest.mark.parametrize("preset", ["nanochat", "llama", "gpt2"])
def test_probe_flops_equal_meta_traced_flops(preset: str, n_embd: int) -> None:
    kv_heads = 4 if preset == "gpt2" else 2  # its fused qkv has no grouped-query attention
    config = BlockConfig.from_preset(
        preset, n_embd=n_embd, n_head=4, n_kv_head=kv_heads, seq=24, batch=3, n_layer=2
    )
    probe, meta = trace_config(config, "probe"), trace_config(config, "meta")
    assert probe.device == "probe"
    assert [o.flops for o in probe.ops] == [o.flops for o in meta.ops]
    assert sum(o.flops for o in probe.ops) > 0


class TwoSizedAttention(nn.Module):
    """Attention whose values are (T, T): its FLOPs, 2·B·T²·D + 2·B·T³, are no single product of sizes."""

    def __init__(self, d: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.unsqueeze(1)
        return F.scaled_dot_product_attention(q, q, q @ q.transpose(-1, -2))


def test_flops_with_no_fit_are_traced_on_meta() -> None:
    spec = VTDSpec(TwoSizedAttention, {"B": 2, "T": 10, "D": 6}, inputs=float_inputs)
    fit = fit_shapes(spec)
    assert fit is not None and not fit.complete and derived_trace(spec, fit) is None
    traced_ = trace_spec(spec, "probe")
    b, t, d = 2, 10, 6
    assert traced_.device == "meta"
    assert sum(o.flops for o in traced_.ops) == 2 * b * t * t * d + (2 * b * t * t * d + 2 * b * t * t * t)


# --- tied weights ------------------------------------------------------------------------------

VTD = SymbolSet(
    (
        Symbol("B", "batch", (11, 17)),
        Symbol("T", "sequence length", (19, 13)),
        Symbol("D", "n_embd", (7, 3), step=2),
    )
)


def token_inputs(sizes: dict[str, int], device: str) -> tuple[tuple, dict[str, Any]]:
    return (torch.zeros(sizes["B"], sizes["T"], dtype=torch.long, device=device),), {}


def float_inputs(sizes: dict[str, int], device: str) -> tuple[tuple, dict[str, Any]]:
    return (torch.randn(sizes["B"], sizes["T"], sizes["D"], device=device),), {}


class TiedLM(nn.Module):
    """An embedding and a head that share one weight, as GPT-2's wte and lm_head do."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(50, d)
        self.h = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, 50, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.h(self.wte(idx)))


def gpt2_lm(d: int) -> nn.Module:
    config = GPT2Config(
        n_embd=d, n_layer=1, n_head=2, n_positions=40, vocab_size=50, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


@dataclass(frozen=True)
class VTDSpec:
    """A model over (B, T, D), given tokens unless `inputs` says otherwise: make(D) builds it."""

    make: Callable[[int], nn.Module]
    sizes: dict[str, int]
    layers: int = 1
    symbols: SymbolSet = VTD
    full_size_trace: bool = False

    def build(self, sizes: dict[str, int], device: str, layers: int) -> nn.Module:
        with torch.device(device):
            return self.make(sizes["D"])

    inputs: Callable[[dict[str, int], str], tuple[tuple, dict[str, Any]]] = token_inputs

    def describe(self) -> dict[str, Any]:
        return {"model": self.make.__name__, **self.sizes}

    dtype = Dtype.float32


# transformers' GPT-2 cannot run on meta (its mask code calls .item()): TiedLM stands in there
@pytest.mark.parametrize(
    ("make", "head", "devices"),
    [(gpt2_lm, "transformer.wte.weight", ("cpu",)), (TiedLM, "wte.weight", ("cpu", "meta"))],
)
def test_tied_weights_are_counted_once_as_torch_counts_them(
    make: Callable, head: str, devices: tuple
) -> None:
    spec = VTDSpec(make, {"B": 2, "T": 9, "D": 32})
    module = spec.build(spec.sizes, "cpu", 1)
    assert module.lm_head.weight is module.get_parameter(head)
    real = sum(p.numel() for p in module.parameters())
    fit = fit_shapes(spec)
    derived = derived_trace(spec, fit) if fit is not None else None
    assert derived is not None
    for traced_ in (derived, *(trace_spec(spec, device) for device in devices)):
        root = build_table(StepTree(traced_)).rows[0]
        assert root.params == root.trainable == real, traced_.device
        lm_head = next(c for c in traced_.calls if c.path == "lm_head")
        assert lm_head.weights[0].tied == head and lm_head.params == 50 * 32, traced_.device


# --- each signature counted once ------------------------------------------------------------------


class Repeats(nn.Module):
    """The same functions called again with other shapes or other arguments: each call has its own
    FLOPs, though the tracer counts a signature's aten ops only the first time it meets it."""

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        a = F.conv2d(x, w)  # (2, 4, 6, 6)
        b = F.conv2d(x, w, stride=2)  # the same tensors, another stride: a quarter of the FLOPs
        c = F.conv2d(x, w)  # the first call again
        d = torch.einsum("bchw,bchw->bc", a, a)  # a contraction over h, w
        e = torch.einsum("bchw,bchw->bchw", a, a)  # the same tensors, a product: no FLOPs
        y = x[:, :, :4, :4].contiguous()
        return F.conv2d(y, w).sum() + b.sum() + c.sum() + d.sum() + e.sum()  # a smaller input


def test_repeated_calls_are_counted_by_their_own_shapes_and_arguments() -> None:
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    ours = trace(Repeats(), (x, w))
    convs = [o.flops for o in ours.ops if o.name == "conv2d"]
    per_output = 2 * 3 * 3 * 3  # 2 · in channels · kernel
    assert convs == [per_output * 2 * 4 * n for n in (36, 9, 36, 4)]
    einsums = [o.flops for o in ours.ops if o.name == "einsum"]
    assert einsums == [2 * 2 * 4 * 36, 0]
    assert sum(o.flops for o in ours.ops) == counted(Repeats(), (x, w))


def test_a_signature_tells_apart_what_changes_the_aten_ops() -> None:
    x, y, w = torch.randn(2, 3), torch.randn(2, 3), torch.randn(3, 3)
    key = signature(torch.matmul, (x, w), {})
    assert key is not None and key == signature(torch.matmul, (y, w), {})  # another tensor, alike
    assert key != signature(torch.matmul, (torch.randn(4, 3), w), {})  # a shape
    assert key != signature(torch.matmul, (x.t().contiguous().t(), w), {})  # strides
    assert key != signature(torch.matmul, (x.double(), w.double()), {})  # a dtype
    assert key != signature(torch.matmul, (torch.randn(2, 3, device="meta"), w), {})  # a device
    assert key != signature(torch.matmul, (w, w), {})  # one tensor twice
    assert key != signature(torch.mm, (x, w), {})  # the function
    assert len({signature(torch.add, (x, v), {}) for v in (1, 1.0, True)}) == 3  # equal, not alike
    assert signature(torch.sum, (x,), {"dim": 0}) != signature(torch.sum, (x,), {"dim": 1})
    assert signature(torch.Tensor.__getitem__, (x, (slice(0, 1), Ellipsis)), {}) is not None
    assert signature(torch.add, (x, object()), {}) is None  # not plain data: always counted afresh
