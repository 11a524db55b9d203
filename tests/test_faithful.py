"""What we print must equal what torch computes: the probe-derived trace, the meta trace and a real
CPU run agree shape for shape, and module outputs match plain hooks on an untraced forward."""

import pytest
import torch

from blocktrace.model import build_module, example_inputs
from blocktrace.models.block.config import BlockConfig
from blocktrace.pipeline import trace_config
from tests.models import same

CONFIGS = [
    BlockConfig(n_embd=32, n_head=4, seq=6, batch=2),
    BlockConfig(n_embd=48, n_head=6, n_kv_head=2, seq=5, batch=3),
    BlockConfig(n_embd=64, n_head=8, n_kv_head=1, seq=8, batch=1, mlp_ratio=3),  # H == D
    BlockConfig(n_embd=16, n_head=2, seq=16, batch=1, n_layer=2, dtype="bfloat16"),  # T == C
]


def hooked_output_shapes(config: BlockConfig) -> dict[str, list[tuple[int, ...]]]:
    """Output shapes per module path from plain forward hooks on an untraced CPU forward."""
    module = build_module(config, "cpu")
    seen: dict[str, list[tuple[int, ...]]] = {}
    for path, m in module.named_modules():
        m.register_forward_hook(
            lambda _m, _a, out, path=path: seen.setdefault(path, []).append(tuple(out.shape))
        )
    with torch.no_grad():
        module(*example_inputs(config, "cpu"))
    return seen


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"C{c.n_embd}H{c.n_head}Hkv{c.n_kv_head}L{c.n_layer}"
)
def test_probe_meta_and_cpu_traces_agree(config: BlockConfig) -> None:
    probe = trace_config(config, "probe")
    cpu = trace_config(config, "cpu")
    meta = trace_config(config, "meta")
    assert (probe.device, cpu.device, meta.device) == ("probe", "cpu", "meta")
    same(probe, cpu)
    same(meta, cpu)


@pytest.mark.parametrize("config", CONFIGS[:2])
def test_module_outputs_match_an_untraced_forward(config: BlockConfig) -> None:
    traced: dict[str, list[tuple[int, ...]]] = {}
    for c in trace_config(config, "probe").calls:
        traced.setdefault(c.path, []).append(c.outputs[0].shape)
    assert traced == hooked_output_shapes(config)


def test_the_output_equals_the_real_output_shape() -> None:
    config = CONFIGS[1]
    with torch.no_grad():
        out = build_module(config, "cpu")(*example_inputs(config, "cpu"))
    assert trace_config(config, "probe").outputs[0].shape == tuple(out.shape)


def test_frozen_parameters_show_in_every_device() -> None:
    config = CONFIGS[0]
    for device in ("probe", "cpu"):
        t = trace_config(config, device, frozen=("attn.*",))
        by_path = {c.path: c for c in t.calls}
        assert by_path["attn"].trainable == 0 and by_path["attn"].params > 0
        assert by_path["mlp"].trainable == by_path["mlp"].params
        assert by_path[""].trainable == by_path["mlp"].params


def test_derived_trace_carries_the_config_and_a_full_legend() -> None:
    t = trace_config(CONFIGS[1], "probe")
    assert t.config["n_kv_head"] == 2
    assert t.symbols == {"B": 3, "T": 5, "C": 48, "H": 6, "Hkv": 2, "D": 8}


def test_derivation_needs_every_parameter_owner_called_and_every_dim_fitted() -> None:
    from dataclasses import replace

    from blocktrace.models.block.spec import BlockSpec
    from blocktrace.sizes.naming import derived_trace
    from blocktrace.sizes.stack import fit_shapes

    spec = BlockSpec(CONFIGS[1])
    shape_fit = fit_shapes(spec)
    assert shape_fit is not None and derived_trace(spec, shape_fit) is not None
    assert derived_trace(spec, replace(shape_fit, all_called=False)) is None
    some_tensor = next(iter(shape_fit.dims))
    unfitted = {**shape_fit.dims, some_tensor: (None,)}
    assert derived_trace(spec, replace(shape_fit, dims=unfitted)) is None
