"""Each built-in preset is structurally the Hugging Face layer it is named after, built here from
`transformers` itself: module for module (by an explicit map of our paths to theirs), parameter for
parameter, and output shape for output shape, at sizes with odd head counts, grouped-query heads and
an MLP width that is not a multiple of C.

Two views of our Block are held against one real CPU forward of the reference layer: the probe trace
(shapes derived from two tiny probes and scaled, what blocktrace prints), and plain forward hooks on
our module run on the CPU. Each module is compared on its kind (Linear, LayerNorm, RMSNorm), its output
shape, its parameter count, its own weights' shapes, and where its input comes from (the layer's input,
the output of another mapped module, or a value computed between modules, such as a residual sum): the
last is what tells pre-norm, post-norm and parallel residuals apart. The order of the calls is compared
too. Not compared: anything shapes and parameter counts cannot show (the activation function, the
rotary convention, norm epsilons, how a fused qkv weight is laid out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import pytest

pytest.importorskip("transformers")

import torch
from torch import nn
from transformers import BertConfig, GPT2Config, GPTNeoXConfig, LlamaConfig
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXLayer, GPTNeoXRotaryEmbedding
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding
from transformers.pytorch_utils import Conv1D

from blocktrace.model import build_module, example_inputs
from blocktrace.models.block.config import BlockConfig
from blocktrace.pipeline import trace_config
from blocktrace.tracing.trace import Trace

B, T = 2, 7

# Our module path -> the reference's module path, for every module with parameters on either side
# (test_every_module_with_parameters_is_mapped checks that) and the containers that correspond.
MAPS: dict[str, dict[str, str]] = {
    "gpt2": {
        "": "",
        "ln_1": "ln_1",
        "attn": "attn",
        "attn.c_attn": "attn.c_attn",  # their Conv1D C -> 3C, weight (C, 3C): our Linear's transpose
        "attn.c_proj": "attn.c_proj",
        "ln_2": "ln_2",
        "mlp": "mlp",
        "mlp.c_fc": "mlp.c_fc",
        "mlp.c_proj": "mlp.c_proj",
    },
    "llama": {
        "": "",
        "input_layernorm": "input_layernorm",
        "self_attn": "self_attn",
        "self_attn.q_proj": "self_attn.q_proj",
        "self_attn.k_proj": "self_attn.k_proj",
        "self_attn.v_proj": "self_attn.v_proj",
        "self_attn.o_proj": "self_attn.o_proj",
        "post_attention_layernorm": "post_attention_layernorm",
        "mlp": "mlp",
        "mlp.gate_proj": "mlp.gate_proj",
        "mlp.up_proj": "mlp.up_proj",
        "mlp.down_proj": "mlp.down_proj",
    },
    "neox": {
        "": "",
        "input_layernorm": "input_layernorm",
        "attention": "attention",
        "attention.query_key_value": "attention.query_key_value",
        "attention.dense": "attention.dense",
        "post_attention_layernorm": "post_attention_layernorm",
        "mlp": "mlp",
        "mlp.dense_h_to_4h": "mlp.dense_h_to_4h",
        "mlp.dense_4h_to_h": "mlp.dense_4h_to_h",
    },
    # BertLayer nests differently: its `attention` holds the add & norm after attention, and it has no
    # module around the MLP; so our `attention` and `mlp` containers have no counterpart, only the
    # modules inside them do.
    "bert": {
        "": "",
        "attention.query": "attention.self.query",
        "attention.key": "attention.self.key",
        "attention.value": "attention.self.value",
        "attention.dense": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "mlp.intermediate": "intermediate.dense",
        "mlp.output": "output.dense",
        "output_norm": "output.LayerNorm",
    },
}

# A module's kind, from its class name; "module" for containers (Block, GPT2Block, ...).
KINDS = {
    "Linear": "Linear",
    "Conv1D": "Linear",  # transformers' GPT-2 Linear with the weight transposed
    "LayerNorm": "LayerNorm",
    "RMSNorm": "RMSNorm",
    "LlamaRMSNorm": "RMSNorm",
}


@dataclass(frozen=True)
class Size:
    n_embd: int  # C
    n_head: int  # H
    n_kv_head: int  # Hkv
    mlp_hidden: int  # F

    def __str__(self) -> str:
        return f"C{self.n_embd}-H{self.n_head}-Hkv{self.n_kv_head}-F{self.mlp_hidden}"


# Rotary presets need an even head dim C/H; fused qkv presets have Hkv == H.
SIZES = {
    "gpt2": [Size(48, 3, 3, 192), Size(60, 5, 5, 100), Size(45, 3, 3, 100)],  # D = 15: odd head dim
    "bert": [Size(48, 3, 3, 192), Size(60, 5, 5, 100), Size(45, 3, 3, 100)],
    # GPTNeoXConfig rotates a quarter of each head (rotary_pct 0.25): D a multiple of 8 keeps that even
    "neox": [Size(48, 3, 3, 192), Size(40, 5, 5, 100)],
    "llama": [
        Size(48, 3, 3, 192),
        Size(60, 5, 1, 100),  # one key/value head for five query heads
        Size(64, 8, 2, 172),  # grouped-query attention, F not a multiple of C
        Size(72, 9, 3, 100),  # an odd number (3) of query heads per key/value head
    ],
}
CASES = [
    pytest.param(preset, size, id=f"{preset}-{size}") for preset, sizes in SIZES.items() for size in sizes
]


def reference(preset: str, size: Size) -> tuple[nn.Module, tuple, dict[str, Any]]:
    """The transformers layer `preset` is named after, at `size`, and the arguments of its forward."""
    x = torch.randn(B, T, size.n_embd)
    position_ids = torch.arange(T)[None]
    if preset == "gpt2":
        config = GPT2Config(n_embd=size.n_embd, n_head=size.n_head, n_inner=size.mlp_hidden)
        config._attn_implementation = "sdpa"
        return GPT2Block(config, layer_idx=0), (x,), {}
    if preset == "llama":
        config = LlamaConfig(
            hidden_size=size.n_embd,
            num_attention_heads=size.n_head,
            num_key_value_heads=size.n_kv_head,
            intermediate_size=size.mlp_hidden,
        )
        config._attn_implementation = "sdpa"
        cos_sin = LlamaRotaryEmbedding(config)(x, position_ids)
        return LlamaDecoderLayer(config, layer_idx=0), (x,), {"position_embeddings": cos_sin}
    if preset == "neox":
        config = GPTNeoXConfig(
            hidden_size=size.n_embd,
            num_attention_heads=size.n_head,
            intermediate_size=size.mlp_hidden,
            use_parallel_residual=True,
        )
        config._attn_implementation = "sdpa"
        cos_sin = GPTNeoXRotaryEmbedding(config)(x, position_ids)
        return GPTNeoXLayer(config, layer_idx=0), (x,), {"position_embeddings": cos_sin}
    if preset == "bert":
        config = BertConfig(
            hidden_size=size.n_embd, num_attention_heads=size.n_head, intermediate_size=size.mlp_hidden
        )
        config._attn_implementation = "sdpa"
        return BertLayer(config), (x,), {}
    raise AssertionError(f"no reference for preset {preset!r}")


def ours(preset: str, size: Size, **overrides: Any) -> BlockConfig:
    """Our Block of `preset` at `size`, with `overrides` in place of the preset's (or size's) choices."""
    sizes = {"n_embd": size.n_embd, "n_head": size.n_head, "n_kv_head": size.n_kv_head}
    return BlockConfig.from_preset(
        preset, **{**sizes, "mlp_hidden": size.mlp_hidden, "n_layer": 1, **overrides}, seq=T, batch=B
    )


@dataclass(frozen=True)
class Seen:
    """What one module call shows of the structure, named in our terms."""

    kind: str  # Linear, LayerNorm, RMSNorm, or module
    shape: tuple[int, ...]  # of its (first) output
    params: int  # of the module and its submodules
    weights: tuple[tuple[str, tuple[int, ...]], ...]  # its own parameters: (name, shape as a Linear's)
    source: str  # its first input: "input" (the layer's), a mapped module's path, or "computed"


@dataclass
class Observed:
    calls: dict[str, Seen]  # by our path, in the order the calls began
    unmapped: list[str]  # modules with parameters of their own that the map leaves out


def _first_tensor(values: Any) -> torch.Tensor:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            return value[0]
    raise AssertionError(f"no tensor among {values!r}")


def _weights(module: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    out = []
    for name, p in module.named_parameters(recurse=False):
        shape = tuple(p.shape)
        if isinstance(module, Conv1D) and name == "weight":
            shape = shape[::-1]  # Conv1D keeps (in, out); a Linear (out, in)
        out.append((name, shape))
    return tuple(out)


def observe_module(module: nn.Module, to_ours: dict[str, str], args: tuple, kwargs: dict) -> Observed:
    """One real CPU forward of `module` under plain hooks; `to_ours` names its modules in our terms."""
    module.eval()
    order: list[str] = []
    seen: dict[str, Seen] = {}
    sources: dict[str, str] = {}
    produced: dict[int, str] = {id(args[0]): "input"}  # id(tensor) -> what made it
    keep: list[torch.Tensor] = [args[0]]  # hold every tensor named in `produced`, so no id is reused
    unmapped = []
    for path, m in module.named_modules():
        if path not in to_ours:
            if any(True for _ in m.parameters(recurse=False)):
                unmapped.append(path)
            continue
        name = to_ours[path]

        def before(m: nn.Module, a: tuple, kw: dict, name: str = name) -> None:
            order.append(name)
            sources[name] = produced.get(id(_first_tensor([*a, *kw.values()])), "computed")

        def after(m: nn.Module, a: tuple, kw: dict, out: Any, name: str = name) -> None:
            y = _first_tensor([out])
            produced.setdefault(id(y), name)  # the innermost module that returned it: it returns first
            keep.append(y)
            seen[name] = Seen(
                KINDS.get(type(m).__name__, "module"),
                tuple(y.shape),
                sum(p.numel() for p in m.parameters()),
                _weights(m),
                sources[name],
            )

        m.register_forward_pre_hook(before, with_kwargs=True)
        m.register_forward_hook(after, with_kwargs=True)
    with torch.no_grad():
        module(*args, **kwargs)
    return Observed({name: seen[name] for name in order}, unmapped)


def observe_trace(trace: Trace, paths: set[str]) -> Observed:
    """The same, read off a trace: tensor ids follow each value from the call that made it."""
    produced = {trace.inputs[0].id: "input"}
    for call in trace.calls:  # inner calls begin later: the innermost maker of a value is named last
        if call.path in paths:
            produced[call.outputs[0].id] = call.path
    calls = {}
    for call in trace.calls:
        if call.path in paths:
            calls[call.path] = Seen(
                KINDS.get(call.type, "module"),
                tuple(call.outputs[0].shape),
                call.params,
                tuple((w.name, tuple(w.shape)) for w in call.weights),
                produced.get(call.inputs[0].id, "computed"),
            )
    unmapped = [c.path for c in trace.calls if c.weights and c.path not in paths]
    return Observed(calls, unmapped)


def differences(got: Observed, want: Observed) -> list[str]:
    """Every way `got` (ours) is not `want` (the reference), one line each; [] where it is."""
    out = [f"ours has a module with parameters the map leaves out: {p!r}" for p in got.unmapped]
    out += [f"the reference has a module with parameters the map leaves out: {p!r}" for p in want.unmapped]
    if list(got.calls) != list(want.calls):
        out.append(f"calls: ours {list(got.calls)}, reference {list(want.calls)}")
    for path in sorted(got.calls.keys() | want.calls.keys()):
        a, b = got.calls.get(path), want.calls.get(path)
        if a is None or b is None:
            out.append(f"{path!r}: called only in {'the reference' if a is None else 'ours'}")
            continue
        for field in fields(Seen):
            x, y = getattr(a, field.name), getattr(b, field.name)
            if x != y:
                out.append(f"{path!r} {field.name}: ours {x}, reference {y}")
    return out


def observe_reference(preset: str, size: Size) -> Observed:
    layer, args, kwargs = reference(preset, size)
    return observe_module(layer, {theirs: our for our, theirs in MAPS[preset].items()}, args, kwargs)


def observe_probe(config: BlockConfig) -> Observed:
    trace = trace_config(config, "probe")
    assert trace.device == "probe", "the probes could not be fitted: this trace is not the derived one"
    return observe_trace(trace, set(MAPS[config.preset]))


def observe_cpu(config: BlockConfig) -> Observed:
    module = build_module(config, "cpu")
    return observe_module(module, {p: p for p in MAPS[config.preset]}, example_inputs(config, "cpu"), {})


@pytest.fixture(scope="module")
def reference_of() -> Callable[[str, Size], Observed]:
    cache: dict[tuple[str, Size], Observed] = {}

    def get(preset: str, size: Size) -> Observed:
        if (preset, size) not in cache:
            torch.manual_seed(0)
            cache[preset, size] = observe_reference(preset, size)
        return cache[preset, size]

    return get


@pytest.mark.parametrize(("preset", "size"), CASES)
def test_probe_trace_is_the_reference(preset: str, size: Size, reference_of) -> None:
    want = reference_of(preset, size)
    got = observe_probe(ours(preset, size))
    assert differences(got, want) == []
    assert set(got.calls) == set(MAPS[preset])  # every mapped module was called, on both sides


@pytest.mark.parametrize(("preset", "size"), CASES)
def test_cpu_module_is_the_reference(preset: str, size: Size, reference_of) -> None:
    want = reference_of(preset, size)
    config = ours(preset, size)
    assert differences(observe_cpu(config), want) == []
    layer = reference(preset, size)[0]
    total = sum(p.numel() for p in layer.parameters())
    assert sum(p.numel() for p in build_module(config, "cpu").parameters()) == total
    assert trace_config(config, "probe").calls[0].params == total
    assert want.calls[""].shape == (B, T, size.n_embd)


def test_every_module_with_parameters_is_mapped(reference_of) -> None:
    """The map names every parameter on both sides: a module left out would go uncompared."""
    for preset, sizes in SIZES.items():
        assert reference_of(preset, sizes[0]).unmapped == []
        assert observe_probe(ours(preset, sizes[0])).unmapped == []


# A Block that is not the reference must not pass: each of these differs from it in one choice, and
# the comparison must say so at the module named.
MUTANTS = [
    ("gpt2", {"bias": False}, "'attn.c_attn' params"),
    ("gpt2", {"qkv": "separate"}, "'attn.c_attn': called only in the reference"),
    ("gpt2", {"mlp_hidden": 4 * 60}, "'mlp.c_fc' shape"),
    ("gpt2", {"residual": "post"}, "'ln_1' source"),
    ("llama", {"bias": True}, "'self_attn.q_proj' params"),
    ("llama", {"n_kv_head": 5}, "'self_attn.k_proj' shape"),
    ("llama", {"activation": "silu"}, "'mlp.gate_proj': called only in the reference"),
    ("llama", {"norm": "layernorm"}, "'input_layernorm' kind"),
    ("llama", {"residual": "parallel"}, "'post_attention_layernorm' source"),
    ("neox", {"residual": "pre"}, "'post_attention_layernorm' source"),
    ("neox", {"bias": False}, "'attention.dense' params"),
    ("bert", {"residual": "pre"}, "'attention.query' source"),
    ("bert", {"norm": "rmsnorm"}, "'output_norm' kind"),
]


@pytest.mark.parametrize(
    ("preset", "overrides", "expected"), MUTANTS, ids=[f"{p}-{o}" for p, o, _ in MUTANTS]
)
def test_a_different_block_is_not_the_reference(
    preset: str, overrides: dict[str, Any], expected: str, reference_of
) -> None:
    size = SIZES[preset][1]  # H = 5 (n_kv_head 1 for llama), F = 100
    want = reference_of(preset, size)
    found = differences(observe_probe(ours(preset, size, **overrides)), want)
    assert any(line.startswith(expected) for line in found), found
