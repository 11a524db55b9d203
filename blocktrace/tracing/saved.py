"""Record what a forward holds, on the meta device so that any size costs nothing:

- with grad, the storages autograd saves for backward, seen by `torch.autograd.graph.saved_tensors_hooks`,
  each counted once at the module call and the op where it was first saved;
- under no_grad, each storage the forward's aten ops create, from its birth (the op that made it) to
  its last use (the last op that read it, or the end for an output), and the peak of their sum;
- the keys and values every `scaled_dot_product_attention` call took: what a key/value cache holds.

Parameters and buffers are counted apart (they are weights, not activations). A module with dropout
is recorded in train mode, so that its masks are saved too; `.training` is restored in `finally`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blocktrace.tracing.memory_record import MemoryRecord, SavedAt

if TYPE_CHECKING:
    import torch
    from torch import nn


SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
FLASH = 1  # torch.nn.attention.SDPBackend.FLASH_ATTENTION


def as_on_cpu(func: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    """`func(*args, **kwargs)`, with scaled_dot_product_attention on the meta device run by the kernel
    the CPU would choose: the meta device always takes the math path, which saves other tensors for
    backward (the scores) than the CPU's flash kernel does (the logsumexp)."""
    import torch
    import torch.nn.functional as F

    if func is not F.scaled_dot_product_attention:
        return func(*args, **kwargs)
    named = {**dict(zip(SDPA_ARGS, args, strict=False)), **kwargs}
    if named["query"].device.type != "meta":
        return func(*args, **kwargs)

    def stand_in(t: torch.Tensor) -> torch.Tensor:  # its shape and dtype in one row of memory
        return torch.empty(t.shape[-1], dtype=t.dtype).expand(t.shape)

    query, key, value = (stand_in(named[n]) for n in ("query", "key", "value"))
    flags = {
        n: named[n] for n in ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa") if n in named
    }
    if flags.get("attn_mask") is not None:
        flags["attn_mask"] = stand_in(flags["attn_mask"])
    if torch._fused_sdp_choice(query, key, value, **flags) != FLASH:
        return func(*args, **kwargs)
    output, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        named["query"],
        named["key"],
        named["value"],
        named.get("dropout_p", 0.0),
        named.get("is_causal", False),
        attn_mask=named.get("attn_mask"),
        scale=named.get("scale"),
    )
    return output


def storage_key(tensor: torch.Tensor) -> int:
    """The identity of a tensor's storage, which views share; the recorders keep every tensor they
    see alive, so no identity is reused while they run."""
    return tensor.untyped_storage()._cdata


def weight_keys(module: nn.Module) -> set[int]:
    return {storage_key(t) for t in (*module.parameters(), *module.buffers())}


def has_dropout(module: nn.Module) -> bool:
    from torch import nn

    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())


def record_memory(module: nn.Module, args: tuple, kwargs: dict[str, Any], seq: int | None) -> MemoryRecord:
    """What `module` called on `args`, `kwargs` holds (see the module docstring)."""
    params = list(module.parameters())  # a tied parameter once
    trainable = [p for p in params if p.requires_grad]
    dtypes = [str(p.dtype).removeprefix("torch.") for p in params] or ["float32"]
    train = has_dropout(module)
    saved, saved_bytes = _saved(module, args, kwargs, train)
    peak, kv = _inference(module, args, kwargs)
    return MemoryRecord(
        model=type(module).__name__,
        dtype=max(set(dtypes), key=dtypes.count),
        params=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in trainable),
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        trainable_tensors=len(trainable),
        buffer_bytes=sum(b.numel() * b.element_size() for b in module.buffers()),
        saved=saved,
        saved_bytes=saved_bytes,
        peak_bytes=peak,
        kv_bytes=kv if kv else 0,
        seq=seq if kv else None,
        training_mode=train,
    )


class _Calls:
    """The stack of module calls running, each call's place in the record, and its running total."""

    def __init__(self, module: nn.Module):
        self.names = {id(m): path for path, m in module.named_modules()}
        self.stack: list[int] = []  # indices into rows of the calls running
        self.rows: list[list[Any]] = []  # [depth, path, kind, is_op, bytes]

    def pre(self, m: nn.Module, *_: Any) -> None:
        self.stack.append(len(self.rows))
        self.rows.append([len(self.stack) - 1, self.names[id(m)], type(m).__name__, False, 0])

    def post(self, *_: Any) -> None:
        self.stack.pop()

    def add(self, op: str, nbytes: int) -> None:
        for index in self.stack:
            self.rows[index][4] += nbytes
        last = self.rows[-1] if self.rows else None
        path = self.rows[self.stack[-1]][1] if self.stack else ""
        if last is not None and last[3] and last[1] == path and last[2] == op:
            last[4] += nbytes  # the same op again in the same call, straight after: one row
        else:
            self.rows.append([len(self.stack), path, op, True, nbytes])


def _hooked(module: nn.Module, calls: _Calls) -> list[Any]:
    handles = []
    for m in module.modules():
        handles.append(m.register_forward_pre_hook(calls.pre))
        handles.append(m.register_forward_hook(calls.post))
    return handles


def _saved(
    module: nn.Module, args: tuple, kwargs: dict[str, Any], train: bool
) -> tuple[tuple[SavedAt, ...], int]:
    import torch
    from torch.overrides import TorchFunctionMode

    weights = weight_keys(module)
    seen: set[int] = set()
    kept: list[torch.Tensor] = []
    calls = _Calls(module)
    current: list[str] = []

    class _Ops(TorchFunctionMode):
        def __torch_function__(self, func, types, f_args=(), f_kwargs=None):
            current.append(getattr(func, "__name__", str(func)))
            try:
                return as_on_cpu(func, f_args, f_kwargs or {})
            finally:
                current.pop()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = storage_key(tensor)
        if key not in weights and key not in seen:
            seen.add(key)
            kept.append(tensor)
            calls.add(current[0] if current else "autograd", tensor.untyped_storage().nbytes())
        return tensor

    args, kwargs = stream_input_requires_grad(args, kwargs)
    was = [(m, m.training) for m in module.modules()]
    handles = _hooked(module, calls)
    try:
        module.train(train)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _Ops():
            output = module(*args, **kwargs)
        del output
    finally:
        for handle in handles:
            handle.remove()
        for m, training in was:
            m.training = training
    rows = tuple(SavedAt(*row) for row in calls.rows if row[4] or not row[3])
    return rows, sum(t.untyped_storage().nbytes() for t in kept)


def stream_input_requires_grad(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """The inputs with the first floating-point one (the stream, x) requiring grad, as it does inside a
    network being trained; side inputs (rotary tables, masks) do not."""
    import torch
    from torch.utils._pytree import tree_flatten, tree_unflatten

    leaves, spec = tree_flatten((args, kwargs))
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            leaves[i] = leaf.detach().requires_grad_()
            break
    return tree_unflatten(leaves, spec)


def inference_peak(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> int:
    """The most bytes of the forward's own storages alive at once, under no_grad (the memory guard's
    count of a real run's activations)."""
    return _inference(module, args, kwargs)[0]


def _inference(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[int, int]:
    """The peak of the live bytes of the forward's own storages, and the bytes of the keys and
    values its attention calls took."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    weights = weight_keys(module) | {
        storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
    }
    born: dict[int, int] = {}
    last: dict[int, int] = {}
    size: dict[int, int] = {}
    kept: list[torch.Tensor] = []
    kv = [0]
    clock = [0]

    class _Lives(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, d_args=(), d_kwargs=None):
            out = func(*d_args, **(d_kwargs or {}))
            clock[0] += 1
            for t in tree_leaves((d_args, d_kwargs)):
                if isinstance(t, torch.Tensor) and storage_key(t) in born:
                    last[storage_key(t)] = clock[0]
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and (key := storage_key(t)) not in weights and key not in born:
                    born[key] = last[key] = clock[0]
                    size[key] = t.untyped_storage().nbytes()
                    kept.append(t)
            return out

    class _Attention(TorchFunctionMode):
        def __torch_function__(self, func, types, f_args=(), f_kwargs=None):
            if func is F.scaled_dot_product_attention:
                named = {**dict(zip(("query", "key", "value"), f_args, strict=False)), **(f_kwargs or {})}
                kv[0] += sum(named[n].numel() * named[n].element_size() for n in ("key", "value"))
            return as_on_cpu(func, f_args, f_kwargs or {})

    was = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad(), _Attention(), _Lives():
            output = module(*args, **kwargs)
    finally:
        for m, training in was:
            m.training = training
    end = clock[0] + 1
    for t in tree_leaves(output):
        if isinstance(t, torch.Tensor) and storage_key(t) in born:
            last[storage_key(t)] = end
    return peak_of(born, last, size, end), kv[0]


def peak_of(born: dict[int, int], last: dict[int, int], size: dict[int, int], end: int) -> int:
    """The most bytes alive at once, a storage alive from its birth to its last use, both included."""
    change = [0] * (end + 2)
    for key, start in born.items():
        change[start] += size[key]
        change[last[key] + 1] -= size[key]
    peak = alive = 0
    for step in change:
        alive += step
        peak = max(peak, alive)
    return peak
