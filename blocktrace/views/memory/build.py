"""What training and serving a model hold, from a memory record: no torch here.

Weights, gradients and the optimizer's state follow from the parameters (a tied one once): AdamW
keeps two moments per trainable element and a float32 step per trainable parameter, SGD (with
momentum) one buffer per element, `none` nothing. With `mixed`, a 16-bit model keeps float32 master
weights, and its optimizer state in float32. Activations are what autograd saved, as measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blocktrace.tracing.memory_record import MemoryRecord

FLOAT32 = 4


class Optimizer(StrEnum):
    adamw = "adamw"
    sgd = "sgd"
    none = "none"


MOMENTS = {Optimizer.adamw: 2, Optimizer.sgd: 1, Optimizer.none: 0}
STEP_BYTES = {
    Optimizer.adamw: FLOAT32,
    Optimizer.sgd: 0,
    Optimizer.none: 0,
}  # torch keeps AdamW's step as a tensor


@dataclass(frozen=True)
class Part:
    name: str
    bytes: int
    note: str


@dataclass(frozen=True)
class Memory:
    record: MemoryRecord
    optimizer: Optimizer
    mixed: bool
    training: tuple[Part, ...]
    inference: tuple[Part, ...]

    @property
    def training_bytes(self) -> int:
        return sum(p.bytes for p in self.training)

    @property
    def inference_bytes(self) -> int:
        return sum(p.bytes for p in self.inference)


def optimizer_bytes(record: MemoryRecord, optimizer: Optimizer, master: bool) -> int:
    """The optimizer's state: its moments at the parameters' dtype (float32 with master weights)."""
    element = FLOAT32 if master else record.trainable_bytes // max(record.trainable, 1)
    return MOMENTS[optimizer] * record.trainable * element + STEP_BYTES[optimizer] * record.trainable_tensors


def memory_view(record: MemoryRecord, optimizer: Optimizer = Optimizer.adamw, mixed: bool = False) -> Memory:
    master = mixed and record.dtype in ("bfloat16", "float16")
    mode = "train mode, dropout masks included" if record.training_mode else "as autograd saves them"
    training = [
        Part("weights", record.param_bytes, f"{record.params:,} parameters at {record.dtype}"),
        Part("gradients", record.trainable_bytes, f"{record.trainable:,} trainable"),
    ]
    if master:
        training.append(Part("master weights", record.trainable * FLOAT32, "float32 copies, --mixed"))
    training.append(
        Part(f"optimizer ({optimizer})", optimizer_bytes(record, optimizer, master), _state(optimizer))
    )
    training.append(Part("activations", record.saved_bytes, f"saved for backward, {mode}"))
    if record.buffer_bytes:
        training.append(Part("buffers", record.buffer_bytes, "rotary tables, masks"))
    inference = [Part("weights", record.param_bytes, f"at {record.dtype}")]
    if record.buffer_bytes:
        inference.append(Part("buffers", record.buffer_bytes, "rotary tables, masks"))
    if record.seq:
        per_token = record.kv_bytes // record.seq
        inference.append(
            Part("key/value cache", record.kv_bytes, f"at seq {record.seq}; {_bytes(per_token)} a token")
        )
    inference.append(Part("activations (peak)", record.peak_bytes, "the most live at once in the forward"))
    return Memory(record, optimizer, mixed, tuple(training), tuple(inference))


def _state(optimizer: Optimizer) -> str:
    return {
        Optimizer.adamw: "two moments a weight, a step a tensor",
        Optimizer.sgd: "a momentum buffer a weight",
        Optimizer.none: "no state",
    }[optimizer]


def _bytes(n: int) -> str:
    from blocktrace.views.stats import human_bytes

    return human_bytes(n)
