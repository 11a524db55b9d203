"""`blocktrace memory` against real CPU runs of the same models, measured independently here: the
activations autograd saves (the distinct storages a real run's saved_tensors_hooks holds, by their
addresses), the weights, gradients and AdamW/SGD state of a real optimizer step, tied weights once,
and the inference peak of live tensors (each storage from the aten op that made it to the last that
read it). The models: the built-in Block, a stack, a Hugging Face Llama with tied embeddings, and a
--module block with dropout, recorded in train mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from blocktrace.models.block.config import BlockConfig
from blocktrace.models.request import ModelRequest
from blocktrace.pipeline import memory_record
from blocktrace.tracing.memory_record import MemoryRecord
from blocktrace.tracing.saved import stream_input_requires_grad
from blocktrace.views.memory.build import Optimizer, memory_view, optimizer_bytes
from tests.harness import TINY, invoke, one_error, tiny_llama

DROPOUT_BLOCK = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, n_embd: int = 16) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.drop = nn.Dropout(0.1)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.proj(torch.relu(self.fc(self.ln(x)))))
"""
LLAMA = tiny_llama(tie_word_embeddings=True)


def _requests(tmp: Path) -> dict[str, ModelRequest]:
    (tmp / "dropout_block.py").write_text(DROPOUT_BLOCK, encoding="utf-8")
    (tmp / "llama").mkdir(exist_ok=True)
    (tmp / "llama" / "config.json").write_text(json.dumps(LLAMA), encoding="utf-8")
    small = {"n_embd": 32, "n_head": 4, "n_kv_head": 2, "seq": 6, "batch": 2}
    return {
        "block": ModelRequest(BlockConfig(**small)),
        "stack": ModelRequest(BlockConfig(**small, n_layer=3)),
        "llama": ModelRequest(BlockConfig(), "hf", str(tmp / "llama"), {"batch": 2, "seq": 5}),
        "dropout": ModelRequest(
            BlockConfig(), "module", f"{tmp / 'dropout_block.py'}:Block", {"input": ("2,5,16",)}
        ),
    }


@pytest.fixture(scope="module")
def requests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelRequest]:
    return _requests(tmp_path_factory.mktemp("memory"))


def _real(request: ModelRequest) -> tuple[torch.nn.Module, tuple, dict[str, Any]]:
    torch.manual_seed(0)
    spec = request.spec()
    module = spec.build(spec.sizes, "cpu", spec.layers)
    args, kwargs = spec.inputs(spec.sizes, "cpu")
    return module, args, kwargs


def _address(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def real_saved_bytes(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any], train: bool) -> int:
    """The distinct storages a real run's saved_tensors_hooks holds, parameters and buffers apart."""
    weights = {_address(t) for t in (*module.parameters(), *module.buffers())}
    held: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if _address(t) not in weights:
            held.setdefault(_address(t), t)
        return t

    module.train(train)
    args, kwargs = stream_input_requires_grad(args, kwargs)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(*args, **kwargs)
    return sum(t.untyped_storage().nbytes() for t in held.values())


class _Lifetimes(TorchDispatchMode):
    """Every storage an aten op makes, with the ops that made and read it; all kept alive, so that
    no address is reused."""

    def __init__(self, outside: set[int]) -> None:
        super().__init__()
        self.outside, self.steps, self.kept = outside, [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        read = {_address(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        made = {}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and _address(t) not in self.outside:
                made[_address(t)] = t.untyped_storage().nbytes()
                self.kept.append(t)
        self.steps.append((read, made))
        return out


def real_peak(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> int:
    inputs = {_address(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
    outside = inputs | {_address(t) for t in (*module.parameters(), *module.buffers())}
    module.eval()
    with torch.no_grad(), _Lifetimes(outside) as mode:
        output = module(*args, **kwargs)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    size: dict[int, int] = {}
    for step, (read, made) in enumerate(mode.steps):
        for address in read:
            if address in first:
                last[address] = step
        for address, nbytes in made.items():
            first.setdefault(address, step)
            last[address] = max(last.get(address, step), step)
            size[address] = nbytes
    for t in tree_leaves(output):
        if isinstance(t, torch.Tensor) and _address(t) in first:
            last[_address(t)] = len(mode.steps)
    return max(
        sum(size[a] for a in first if first[a] <= step <= last[a]) for step in range(len(mode.steps) + 1)
    )


def _loss(output: Any) -> torch.Tensor:
    tensor = output.logits if hasattr(output, "logits") else output
    return tensor.float().sum()


def real_training_state(
    module: torch.nn.Module, args: tuple, kwargs: dict[str, Any], optimizer: Optimizer
) -> tuple[int, int]:
    """The bytes of the gradients and of the optimizer's state after one real step."""
    params = list(module.parameters())
    step = {
        Optimizer.adamw: lambda: torch.optim.AdamW(params),
        Optimizer.sgd: lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    }[optimizer]()
    module.train()
    _loss(module(*args, **kwargs)).backward()
    step.step()
    grads = {_address(p.grad): p.grad for p in params if p.grad is not None}
    state = [t for s in step.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    nbytes = sum(t.untyped_storage().nbytes() for t in grads.values())
    return nbytes, sum(t.numel() * t.element_size() for t in state)


NAMES = ["block", "stack", "llama", "dropout"]
_records: dict[str, MemoryRecord] = {}


def _record(requests: dict[str, ModelRequest], name: str) -> MemoryRecord:
    if name not in _records:
        _records[name] = memory_record(requests[name])
    return _records[name]


@pytest.mark.parametrize("name", NAMES)
def test_saved_activations_are_what_a_real_run_s_hooks_hold(
    requests: dict[str, ModelRequest], name: str
) -> None:
    record = _record(requests, name)
    module, args, kwargs = _real(requests[name])
    assert record.training_mode == (name == "dropout")
    assert record.saved_bytes == real_saved_bytes(module, args, kwargs, record.training_mode) > 0
    root = record.saved[0]
    assert not root.is_op and root.depth == 0 and root.saved_bytes == record.saved_bytes
    ops = sum(s.saved_bytes for s in record.saved if s.is_op)
    assert ops == record.saved_bytes  # every storage is counted at exactly one op


def test_dropout_masks_are_saved_in_train_mode(requests: dict[str, ModelRequest]) -> None:
    record = _record(requests, "dropout")
    module, args, kwargs = _real(requests["dropout"])
    in_eval = real_saved_bytes(module, args, kwargs, train=False)
    assert record.saved_bytes - in_eval == 2 * 5 * 64  # the mask, one byte an element
    assert any(s.is_op and s.kind == "dropout" for s in record.saved)


@pytest.mark.parametrize("name", NAMES)
def test_inference_peak_is_a_real_run_s_peak_of_live_tensors(
    requests: dict[str, ModelRequest], name: str
) -> None:
    module, args, kwargs = _real(requests[name])
    assert _record(requests, name).peak_bytes == real_peak(module, args, kwargs) > 0


@pytest.mark.parametrize("optimizer", [Optimizer.adamw, Optimizer.sgd])
@pytest.mark.parametrize("name", NAMES)
def test_weights_gradients_and_optimizer_state_are_a_real_step_s(
    requests: dict[str, ModelRequest], name: str, optimizer: Optimizer
) -> None:
    record = _record(requests, name)
    module, args, kwargs = _real(requests[name])
    distinct = {_address(p): p for p in module.parameters()}
    assert record.param_bytes == sum(p.numel() * p.element_size() for p in distinct.values())
    grads, state = real_training_state(module, args, kwargs, optimizer)
    assert (record.trainable_bytes, optimizer_bytes(record, optimizer, master=False)) == (grads, state)


def test_tied_weights_are_counted_once(requests: dict[str, ModelRequest]) -> None:
    record = _record(requests, "llama")
    module, _, _ = _real(requests["llama"])
    assert module.lm_head.weight is module.model.embed_tokens.weight
    every = sum(p.numel() for _, p in module.named_parameters(remove_duplicate=False))
    assert record.params == every - 97 * 48


def test_key_value_cache_is_the_keys_and_values_attention_took(requests: dict[str, ModelRequest]) -> None:
    record = _record(requests, "stack")
    assert record.seq == 6
    assert record.kv_bytes == 3 * 2 * (2 * 2 * 6 * 8) * 4  # layers, k and v, (B, Hkv, T, D), float32


def test_master_weights_only_for_a_16_bit_mixed_model(requests: dict[str, ModelRequest]) -> None:
    record = _record(requests, "block")
    names = [p.name for p in memory_view(record, mixed=True).training]
    assert "master weights" not in names  # float32 already
    half = memory_record(ModelRequest(BlockConfig(n_embd=32, n_head=4, seq=6, batch=2, dtype="bfloat16")))
    mixed = {p.name: p.bytes for p in memory_view(half, Optimizer.adamw, mixed=True).training}
    plain = {p.name: p.bytes for p in memory_view(half, Optimizer.adamw).training}
    assert mixed["master weights"] == half.trainable * 4 == 2 * mixed["weights"]
    assert mixed["optimizer (adamw)"] == 2 * half.trainable * 4 + 4 * half.trainable_tensors
    assert plain["optimizer (adamw)"] == 2 * half.trainable * 2 + 4 * half.trainable_tensors
    assert "master weights" not in plain


@pytest.mark.parametrize("fmt", ["text", "markdown", "json", "csv", "svg", "html"])
def test_every_format_writes(fmt: str) -> None:
    result = invoke(["memory", *TINY, "--format", fmt])
    assert result.exit_code == 0, result.stderr
    assert "activations" in result.stdout


def test_json_totals_add_up() -> None:
    data = json.loads(invoke(["memory", *TINY, "--n-layer", "2", "--format", "json"]).stdout)
    assert data["training_bytes"] == sum(p["bytes"] for p in data["training"])
    assert data["record"]["saved"][0]["saved_bytes"] == data["record"]["saved_bytes"]


def test_a_bad_optimizer_is_one_line() -> None:
    one_error(invoke(["memory", *TINY, "--optimizer", "lion"]), 2)
