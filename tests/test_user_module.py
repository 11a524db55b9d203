"""`--module` with factories written here: what blocktrace does where its probes cannot run the code."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import torch

from blocktrace.models.user_module import module_spec
from blocktrace.tracing.trace import Trace
from tests.harness import invoke
from tests.hooks import hooked_calls, symbols_of, traced_calls

GQA = """
import torch
from torch import nn

class KProj(nn.Module):
    def __init__(self, C, H, Hkv):
        super().__init__()
        if H % Hkv or C % H:
            raise ValueError("heads must divide")
        self.k = nn.Linear(C, Hkv * (C // H))

    def forward(self, x):
        return self.k(x)

def layer(B=2, T=5, C=48, H=6, Hkv=2):
    return KProj(C, H, Hkv), (torch.randn(B, T, C),)

def five_tokens(B=2, T=5, C=48, H=6, Hkv=2):
    if T != 5:
        raise ValueError("this layer takes 5 tokens")
    return layer(B, T, C, H, Hkv)
"""


def test_a_real_cpu_run_needs_no_probe_to_run_the_code(tmp_path: Path) -> None:
    # the probes, at other sizes, fail; the module itself runs at its own
    (tmp_path / "gqa.py").write_text(GQA, encoding="utf-8")
    result = invoke(["table", "--module", f"{tmp_path / 'gqa.py'}:five_tokens", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "(2, 5, 48) -> (2, 5, 16)" in result.stdout


def test_sizes_that_must_divide_each_other_are_named_even_where_two_are_equal(tmp_path: Path) -> None:
    # B = Hkv = 2: C divides by H and H by Hkv, not by B; the probes keep both, and name the rest
    (tmp_path / "gqa.py").write_text(GQA, encoding="utf-8")
    result = invoke(["table", "--module", f"{tmp_path / 'gqa.py'}:layer"])
    assert result.exit_code == 0, result.stderr
    assert "(B, T, C) -> (B, T, C/H*Hkv)" in result.stdout


# --- a nanoGPT block and a ViT block, as factories and as classes, against forward hooks ------------

NANOGPT = """
import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(0.1)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def block(B=2, T=5, C=48, H=6):
    return Block(C, H), (torch.randn(B, T, C),)


def mlp(B=2, T=5, C=12):
    return MLP(C), (torch.randn(B, T, C),)
"""

VIT = """
import torch
from torch import nn
from torch.nn import functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class ViTBlock(nn.Module):
    def __init__(self, image=16, patch=4, channels=3, dim=48, heads=6):
        super().__init__()
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, images):
        x = self.patch_embed(images.float())
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def vit(B=2, G=4, P=4, C=48, H=6):
    return ViTBlock(G * P, P, 3, C, H), (torch.randn(B, 3, G * P, G * P),)
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    return path


def _imported(path: Path) -> ModuleType:
    """The file imported on its own, apart from blocktrace's import of it."""
    spec = importlib.util.spec_from_file_location(f"test_user_module_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _json_trace(args: list[str]) -> Trace:
    result = invoke(["diagram", *args, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert all(line.startswith("blocktrace: note: ") for line in result.stderr.splitlines())
    return Trace.from_dict(json.loads(result.stdout))


def _op_symbols(trace: Trace, name: str) -> list[tuple[str, ...] | None]:
    return [op.outputs[0].symbols for op in trace.ops if op.name == name]


def test_a_nanogpt_factory_is_named_from_its_parameters(tmp_path: Path) -> None:
    path = _write(tmp_path, "nanogpt", NANOGPT)
    assert module_spec(f"{path}:block").divides == {"C": ("H",)}
    traced = _json_trace(["--module", f"{path}:block"])
    assert traced.symbols == {"B": 2, "T": 5, "C": 48, "H": 6, "C/H": 8}
    assert symbols_of(traced, "attn.c_attn") == ("B", "T", "3C")
    assert symbols_of(traced, "mlp.c_fc") == ("B", "T", "4C")
    assert _op_symbols(traced, "view")[:3] == [("B", "T", "H", "C/H")] * 3
    assert _op_symbols(traced, "transpose")[:3] == [("B", "H", "T", "C/H")] * 3
    assert _op_symbols(traced, "scaled_dot_product_attention") == [("B", "H", "T", "C/H")]
    module, args = _imported(path).block()
    assert traced_calls(traced) == hooked_calls(module, args)


def test_a_dim_in_place_of_a_default_changes_the_sizes_not_the_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "nanogpt", NANOGPT)
    traced = _json_trace(["--module", f"{path}:block", "--dim", "T=7", "--dim", "H=4"])
    assert traced.symbols == {"B": 2, "T": 7, "C": 48, "H": 4, "C/H": 12}
    call = next(c for c in traced.calls if c.path == "attn.c_attn")
    assert call.outputs[0].shape == (2, 7, 144) and call.outputs[0].symbols == ("B", "T", "3C")
    module, args = _imported(path).block(T=7, H=4)
    assert traced_calls(traced) == hooked_calls(module, args)


def test_a_factory_whose_sizes_are_independent_keeps_no_divisors(tmp_path: Path) -> None:
    # C = 12 is a multiple of B = 2, but nothing splits C by B: no relation is needed
    path = _write(tmp_path, "nanogpt", NANOGPT)
    assert module_spec(f"{path}:mlp").divides == {}
    traced = _json_trace(["--module", f"{path}:mlp"])
    assert traced.symbols == {"B": 2, "T": 5, "C": 12}
    assert symbols_of(traced, "c_fc") == ("B", "T", "4C")
    module, args = _imported(path).mlp()
    assert traced_calls(traced) == hooked_calls(module, args)


def test_a_nanogpt_class_is_traced_in_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, "nanogpt", NANOGPT)
    kwargs = '{"n_embd": 48, "n_head": 4}'
    traced = _json_trace(["--module", f"{path}:Block", "--kwargs", kwargs, "--input", "3,7,48"])
    assert traced.symbols == {}
    assert all(t.symbols is None for t in traced.tensors())
    block = _imported(path).Block(n_embd=48, n_head=4)
    assert traced_calls(traced) == hooked_calls(block, (torch.randn(3, 7, 48),))
    assert next(c for c in traced.calls if c.path == "attn.c_attn").outputs[0].shape == (3, 7, 144)


def test_a_vit_factory_has_the_shapes_forward_hooks_see(tmp_path: Path) -> None:
    path = _write(tmp_path, "vit", VIT)
    traced = _json_trace(["--module", f"{path}:vit", "--dim", "G=3", "--dim", "B=5"])
    module, args = _imported(path).vit(G=3, B=5)
    assert traced_calls(traced) == hooked_calls(module, args)
    assert traced.outputs[0].shape == (5, 3 * 3 + 1, 48)  # the cls token and a 3 x 3 grid of patches


def test_a_vit_factory_names_the_sizes_its_cls_token_leaves_alone(tmp_path: Path) -> None:
    path = _write(tmp_path, "vit", VIT)
    traced = _json_trace(["--module", f"{path}:vit"])
    assert symbols_of(traced, "patch_embed") == ("B", "C", "G", "G")


def test_a_vit_class_counts_its_parameters_not_its_buffer(tmp_path: Path) -> None:
    path = _write(tmp_path, "vit", VIT)
    args = ["--module", f"{path}:ViTBlock", "--kwargs", '{"image": 12, "dim": 24, "heads": 4}']
    traced = _json_trace([*args, "--input", "2,3,12,12"])
    block = _imported(path).ViTBlock(image=12, dim=24, heads=4)
    assert traced_calls(traced) == hooked_calls(block, (torch.randn(2, 3, 12, 12),))
    root = traced.calls[0]
    assert root.params == sum(p.numel() for p in block.parameters())
    assert [w.name for w in root.weights] == ["cls_token"]  # pos_embed is a buffer
    # x.float() on a float tensor returns that very tensor: the convolution reads the input itself
    cast = next(op for op in traced.ops if op.name == "float")
    assert cast.outputs[0].id == cast.inputs[0].id == traced.inputs[0].id
    assert next(c for c in traced.calls if c.path == "patch_embed").inputs[0].id == traced.inputs[0].id


BIG = """
import torch
from torch import nn

def big(N=3):
    return nn.Identity(), (torch.zeros(N**14),)  # 4.8 million elements at N = 3
"""


def test_a_probe_too_big_to_be_cheap_is_not_run(tmp_path: Path) -> None:
    from blocktrace.models.divisors import _probe_fit

    spec = module_spec(f"{_write(tmp_path, 'big', BIG)}:big")
    assert _probe_fit(spec) is None
