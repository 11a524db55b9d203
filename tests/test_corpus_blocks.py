"""The corpus's hand-written half: torch's own nn.TransformerEncoderLayer and nn.TransformerDecoderLayer
in both norm orders, and the blocks of tests/corpus_blocks.py, written in the styles of timm, nanoGPT
and nanochat, with a context, a dict, a tuple, a mask keyword and a top-k MoE. Each draws with
`blocktrace diagram --module` (or refuses in one line naming the flag that works, and that flag
draws it); every module call's output shapes equal plain forward hooks, the parameter total equals
sum(p.numel()), and each residual (its skip, its branches) and each step's side inputs are those
written down below from the code's lines, which the comments cite."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from blocktrace.tracing.graph.model import Graph
from blocktrace.tracing.trace import Trace
from blocktrace.views.stats import totals
from tests import corpus_blocks as cb
from tests.corpus_graph import Residual, ids, residuals, side_inputs, stream_formulas, traced
from tests.harness import formulas_of, invoke
from tests.hooks import hooked_calls, traced_calls

BLOCKS = "tests/corpus_blocks.py"
TORCH_LAYER = {"d_model": 16, "nhead": 4, "dim_feedforward": 32, "batch_first": True}


def x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    args: tuple[torch.Tensor, ...]
    cli: tuple[str, ...]  # `diagram --module ...` that draws it
    residuals: list[Residual]
    side: set[tuple[str, str]]  # the root level's side inputs: (step, where it came from)
    kwargs: dict[str, Any] = field(default_factory=dict)
    side_outputs: list[tuple[int, ...]] = field(default_factory=list)
    inner_side: tuple[str, set[tuple[str, str]]] | None = None  # a nested level's: (path, side inputs)
    some_side: bool = False  # `side` names some of them, not all (the smear's slices are the rest)


def torch_layer(kind: str, norm_first: bool) -> tuple[Callable[[], nn.Module], tuple[str, ...]]:
    kwargs = {**TORCH_LAYER, "norm_first": norm_first}
    cls = getattr(nn, kind)
    inputs = ("--input", "2,6,16") + (("--input", "2,5,16") if kind == "TransformerDecoderLayer" else ())
    return (lambda: cls(**kwargs)), ("--module", f"torch.nn:{kind}", "--kwargs", json.dumps(kwargs), *inputs)


def own(name: str, *inputs: str) -> tuple[str, ...]:
    return ("--module", f"{BLOCKS}:{name}", *(a for i in inputs for a in ("--input", i)))


ENC_POST, ENC_POST_CLI = torch_layer("TransformerEncoderLayer", False)
ENC_PRE, ENC_PRE_CLI = torch_layer("TransformerEncoderLayer", True)
DEC_POST, DEC_POST_CLI = torch_layer("TransformerDecoderLayer", False)
DEC_PRE, DEC_PRE_CLI = torch_layer("TransformerDecoderLayer", True)
MEMORY = x(2, 5, 16)

CORPUS: dict[str, Case] = {
    # torch/nn/modules/transformer.py, TransformerEncoderLayer.forward: norm1(x + _sa_block(x, ...)),
    # norm2(x + _ff_block(x)) (post-norm); x + _sa_block(norm1(x), ...), x + _ff_block(norm2(x))
    "torch encoder layer, post-norm": Case(
        ENC_POST, (x(2, 6, 16),), ENC_POST_CLI,
        [("", "input", (("_sa_block",),)), ("", "norm1", (("_ff_block",),))], set(),
    ),
    "torch encoder layer, pre-norm": Case(
        ENC_PRE, (x(2, 6, 16),), ENC_PRE_CLI,
        [("", "input", (("norm1", "_sa_block"),)), ("", "add", (("norm2", "_ff_block"),))], set(),
    ),
    # TransformerDecoderLayer.forward: the same with _mha_block(x, memory, ...) between; memory is
    # the layer's second input
    "torch decoder layer, post-norm": Case(
        DEC_POST, (x(2, 6, 16), MEMORY), DEC_POST_CLI,
        [
            ("", "input", (("_sa_block",),)),
            ("", "norm1", (("_mha_block",),)),
            ("", "norm2", (("_ff_block",),)),
        ],
        {("_mha_block", "memory")},
    ),
    "torch decoder layer, pre-norm": Case(
        DEC_PRE, (x(2, 6, 16), MEMORY), DEC_PRE_CLI,
        [
            ("", "input", (("norm1", "_sa_block"),)),
            ("", "add", (("norm2", "_mha_block"),)),
            ("", "add", (("norm3", "_ff_block"),)),
        ],
        {("_mha_block", "memory")},
    ),
    # TimmBlock.forward: x + drop_path1(ls1(attn(norm1(x)))), x + drop_path2(ls2(mlp(norm2(x))))
    "timm block": Case(
        cb.TimmBlock, (x(2, 6, 16),), own("TimmBlock", "2,6,16"),
        [
            ("", "input", (("norm1", "attn", "ls1", "drop_path1"),)),
            ("", "add", (("norm2", "mlp", "ls2", "drop_path2"),)),
        ],
        set(),
    ),
    # NanoBlock.forward: x + attn(ln_1(x)), x + mlp(ln_2(x)); NanoGPT.forward: wte(idx) + wpe(pos) is
    # no residual: wpe reads the positions beside the stream, named as the line names them
    # (pos = torch.arange(0, t)), and the add reads wpe's output
    "nanoGPT": Case(
        cb.NanoGPT, (ids(2, 6),), own("NanoGPT", "2,6:long"),
        [
            (f"h.{i}", skip, branches)
            for i in range(2)
            for skip, branches in (("input", (("ln_1", "attn"),)), ("add", (("ln_2", "mlp"),)))
        ],
        {("add", "wpe"), ("wpe", "pos")},
    ),
    # ChatBlock.forward: x + attn(norm(x), ve, cos_sin, window), x + mlp(norm(x)); NanoChat.forward:
    # the smear and `resid_lambdas[i] * x + x0_lambdas[i] * x0` are no residuals; every block reads its
    # value embeddings (value_embeds[str(i)](idx)), and x0 (the smear's cat) is read again at each mix
    "nanochat": Case(
        cb.NanoChat, (ids(2, 6),), own("NanoChat", "2,6:long"),
        [
            (f"h.{i}", skip, branches)
            for i in range(2)
            for skip, branches in (("input", (("norm", "attn"),)), ("add", (("norm", "mlp"),)))
        ],
        {("h.0", "value_embeds.0"), ("h.1", "value_embeds.1"), ("mul", "cat")}
        # each mix's λs, by the parameter as the code slices it
        | {("mul", f"{name}[{i}]") for name in ("resid_lambdas", "x0_lambdas") for i in range(2)},
        # ChatBlock hands ve and cos_sin (self.cos[:, :t], self.sin[:, :t]: slices of the buffers) on
        inner_side=("h.1", {("attn", "value_embeds.1"), ("attn", "cos[…]"), ("attn", "sin[…]")}),
        some_side=True,
    ),
    # CrossAttentionBlock.forward: three sums, the second's branch reading the context (input 2)
    "cross-attention block": Case(
        cb.CrossAttentionBlock, (x(2, 6, 16), x(2, 5, 16)), own("CrossAttentionBlock", "2,6,16", "2,5,16"),
        [
            ("", "input", (("norm1", "attn"),)),
            ("", "add", (("norm2", "cross"),)),
            ("", "add", (("norm3", "mlp"),)),
        ],
        {("cross", "context")},
    ),
    # SideTermBlock.forward: x + proj(a) + ctx(context).mean(1, keepdim=True) is one sum (two adds on
    # one line): x skips the attention branch, and the context's term, made from input 2 alone, is a
    # side input of the sum; then x + out(gelu(fc(ln2(x)))). split's q, k, v all carry the stream
    "side-term block": Case(
        cb.SideTermBlock, (x(2, 6, 16), x(2, 5, 8)), own("SideTermBlock", "2,6,16", "2,5,8"),
        [
            ("", "input", (("ln1", "qkv", "split", "<genexpr>", "scaled_dot_product_attention",
                            "transpose", "reshape", "proj"),)),
            ("", "add", (("ln2", "fc", "gelu", "out"),)),
        ],
        {("ctx", "context"), ("mean", "ctx"), ("add", "mean")},
    ),
    # DictBlock.forward: two sums; {"hidden": x, "aux": aux_head(x)}: aux (B, T, 3) leaves beside
    "dict-returning block": Case(
        cb.DictBlock, (x(2, 6, 16),), own("DictBlock", "2,6,16"),
        [("", "input", (("norm1", "attn"),)), ("", "add", (("norm2", "mlp"),))], set(),
        side_outputs=[(2, 6, 3)],
    ),
    # TupleBlock.forward: y, probs = attend(norm(x)); (x + y, probs): attend is one helper step
    "tuple-returning block": Case(
        cb.TupleBlock, (x(2, 6, 16),), own("TupleBlock", "2,6,16"),
        [("", "input", (("norm", "attend"),))], set(),
        side_outputs=[(2, 4, 6, 6)],
    ),
    # CachedAttentionBlock.forward: one sum, x + proj(attention of q, k, v of norm(x)) written inline;
    # the cache's update() hands back the keys and values it took (it computes nothing on the way)
    "sliding-window cache block": Case(
        cb.CachedAttentionBlock, (x(2, 6, 16),), own("CachedAttentionBlock", "2,6,16"),
        [
            (
                "",
                "input",
                (
                    ("norm", "q", "k", "v", "heads", "heads", "heads", "scaled_dot_product_attention",
                     "transpose", "reshape", "proj"),
                ),
            )
        ],
        set(),
    ),
    # MaskedEncoderLayer.forward: norm1(x + attn(x, keep)), norm2(x + ffn(x)); keep = mask[:, None,
    # None, :] from the keyword input: the attention reads it as the line names it
    "encoder with a mask keyword": Case(
        cb.MaskedEncoderLayer, (x(2, 6, 16),), own("MaskedEncoderLayer", "2,6,16", "mask=2,6:bool"),
        [("", "input", (("attn",),)), ("", "norm1", (("ffn",),))],
        {("attn", "keep"), ("getitem", "mask")},
        kwargs={"mask": torch.ones(2, 6, dtype=torch.bool)},
    ),
    # MoEBlock.forward: x + attn(norm1(x)), x + moe(norm2(x)); the router, topk and the experts' loop
    # (index_add_ of each expert's weighted output) are inside moe
    "top-k MoE block": Case(
        cb.MoEBlock, (x(2, 6, 16),), own("MoEBlock", "2,6,16"),
        [("", "input", (("norm1", "attn"),)), ("", "add", (("norm2", "moe"),))], set(),
    ),
    # DiTBlock.forward: six parts of adaLN_modulation(c).chunk(6); x + gate.unsqueeze(1) *
    # attn(modulate(norm1(x), shift, scale)), the same for the mlp; modulate() reads shift and scale
    "DiT block": Case(
        cb.DiTBlock, (x(2, 6, 16), x(2, 16)), own("DiTBlock", "2,6,16", "2,16"),
        [
            ("", "input", (("norm1", "modulate", "attn", "mul"),)),
            ("", "add", (("norm2", "modulate", "mlp", "mul"),)),
        ],
        {("adaLN_modulation", "c"), ("chunk", "adaLN_modulation"), ("modulate", "chunk"),
         ("unsqueeze", "chunk"), ("mul", "unsqueeze")},
    ),
    # KvCrossBlock.forward: q = heads(q(norm1(x))); k, v = kv(ctx).chunk(2); SDPA(q, heads(k), heads(v));
    # x + o(...), then x + proj(gelu(fc(norm2(x)))): kv reads the context, chunk cuts it, heads cuts
    # each part into heads beside the stream, and SDPA reads both
    "kv cross-attention block": Case(
        cb.KvCrossBlock, (x(2, 5, 32), x(2, 7, 32)), own("KvCrossBlock", "2,5,32", "2,7,32"),
        [
            ("", "input",
             (("norm1", "q", "heads", "scaled_dot_product_attention", "transpose", "reshape", "o"),)),
            ("", "add", (("norm2", "fc", "gelu", "proj"),)),
        ],
        {("kv", "ctx"), ("chunk", "kv"), ("heads", "chunk"), ("scaled_dot_product_attention", "heads")},
    ),
    # QkvHelperBlock.forward: q, k, v = self.project(self.norm(x), ctx), project() calling q on the
    # first and k, v on the context; x + o(SDPA(q, k, v))
    "q/k/v helper block": Case(
        cb.QkvHelperBlock, (x(2, 5, 16), x(2, 7, 16)), own("QkvHelperBlock", "2,5,16", "2,7,16"),
        [("", "input", (("norm", "project", "scaled_dot_product_attention", "o"),))],
        {("project", "ctx"), ("scaled_dot_product_attention", "project")},
    ),
}  # fmt: skip


def draws(cli: tuple[str, ...]) -> None:
    """`diagram` draws it, or refuses in one line naming --device cpu, which then draws it."""
    result = invoke(["diagram", *cli])
    assert "Traceback" not in result.stderr
    if result.exit_code != 0:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("blocktrace: error: "), result.stderr
        assert "--device cpu" in lines[0], lines[0]
        result = invoke(["diagram", *cli, "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "output" in result.stdout and "residual add" in result.stdout


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_block_draws_or_refuses_in_one_line_naming_the_flag_that_works(name: str) -> None:
    draws(CORPUS[name].cli)


@pytest.fixture(scope="module")
def built() -> Callable[[str], tuple[nn.Module, Trace, Graph]]:
    """Each block built and traced once for the module's tests: the block, its trace, its graph."""
    found: dict[str, tuple[nn.Module, Trace, Graph]] = {}

    def get(name: str) -> tuple[nn.Module, Trace, Graph]:
        if name not in found:
            case = CORPUS[name]
            torch.manual_seed(0)
            module = case.build().eval()
            found[name] = (module, *traced(module, case.args, case.kwargs))
        return found[name]

    return get


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_block_s_shapes_parameters_residuals_and_side_inputs_are_the_code_s(
    name: str, built: Callable[[str], tuple[nn.Module, Trace, Graph]]
) -> None:
    case = CORPUS[name]
    module, t, g = built(name)
    assert traced_calls(t) == hooked_calls(module, case.args, case.kwargs)
    assert totals(t).params == sum(p.numel() for p in module.parameters())
    assert residuals(t, g) == case.residuals
    assert len(t.residual_adds) == len(case.residuals)
    side = side_inputs(t, g, "")
    assert (side >= case.side) if case.some_side else (side == case.side)
    assert [o.shape for o in g.root.side_outputs] == case.side_outputs
    if case.inner_side is not None:
        assert side_inputs(t, g, case.inner_side[0]) == case.inner_side[1]


def test_a_cache_update_returns_what_it_was_given_not_the_window_it_keeps() -> None:
    """SlidingWindowCache.update() keeps keys[:, :, -3:] and returns keys, values: 2x(B, H, T, D)."""
    _, g = traced(cb.CachedAttentionBlock().eval(), CORPUS["sliding-window cache block"].args)
    (update,) = [s for s in g.root.steps if s.name == "update"]
    assert [o.shape for o in update.outputs] == [(2, 4, 6, 4)] * 2
    assert [o.id for o in update.outputs] == [i.id for i in update.inputs]


def test_the_moe_block_routes_through_topk_and_its_experts_loop() -> None:
    """The MoE's own inside, read from TopKMoE.forward: the router runs once, topk picks the experts,
    and each chosen expert runs on its tokens, once."""
    torch.manual_seed(0)
    module = cb.MoEBlock().eval()
    t, _ = traced(module, CORPUS["top-k MoE block"].args)
    moe = next(c.index for c in t.calls if c.path == "moe")
    inside = [c.path for c in t.calls if c.parent == moe]
    assert inside[0] == "moe.router" and inside.count("moe.router") == 1
    experts = inside[1:]
    assert (
        experts and all(p.startswith("moe.experts.") for p in experts) and len(set(experts)) == len(experts)
    )
    assert any(o.name == "topk" for o in t.ops) and any(o.name == "index_add" for o in t.ops)


def test_every_block_of_the_corpus_has_its_formulas() -> None:
    assert set(FORMULAS) == set(CORPUS)


def test_the_corpus_holds_at_least_thirty_models_nobody_here_wrote() -> None:
    from tests.test_corpus_configs import CORPUS as CONFIGS

    assert len(CONFIGS) + len(CORPUS) >= 30


def test_a_sum_with_a_side_term_is_one_residual_whose_skip_is_drawn_as_a_highway() -> None:
    """x = x + self.proj(a) + self.ctx(context).mean(1, keepdim=True): one residual of two adds, its
    branch the attention, its side term the context's mean; the header counts the code's two sums,
    and x leaves the stream at the input, not after the attention."""
    from blocktrace.views.captions import header
    from blocktrace.views.diagram.layout import layout
    from blocktrace.views.diagram.render import render, to_text
    from blocktrace.views.shapes import Shapes
    from blocktrace.views.steps import StepTree

    case = CORPUS["side-term block"]
    torch.manual_seed(0)
    t, _ = traced(case.build().eval(), case.args)
    first, second = t.residual_adds
    (mean,) = [o for o in t.ops if o.name == "mean"]
    assert len(first.adds) == 2 and first.stream.id == t.inputs[0].id
    assert [s.id for s in first.sides] == [mean.outputs[0].id] and second.sides == ()
    assert [[t.calls[c].path for c in b.calls] for b in first.branches] == [["ln1", "qkv", "proj"]]
    lines = to_text(render(layout(StepTree(t), Shapes.concrete))).splitlines()
    assert "2 residual adds" in header(t)
    joins = [i for i, line in enumerate(lines) if line.strip().startswith("(+)◄")]
    forks = [i for i, line in enumerate(lines) if line.strip().startswith("├─")]
    assert len(joins) == 2 and forks == [2, joins[0] + 3]  # x leaves at the input, then at the first sum
    assert lines[joins[0] + 1].strip() == (
        "│ x + proj(reshape(transpose(scaled_dot_product_attention(<genexpr>(split(qkv(ln1(x))))))))"
        " + mean(ctx(context))"
    )


# The formulas of each block's stream, written from its forward (and, for torch's layers, from
# torch/nn/modules/transformer.py): each line a value the code names or reads twice, every operand
# of each step written, side inputs by name or as the ops that made them
FORMULAS: dict[str, list[str]] = {
    "torch encoder layer, post-norm": [
        "x_mid = LayerNorm(x + _sa_block(x))",  # x = self.norm1(x + self._sa_block(x, ...))
        "x_out = LayerNorm(x_mid + _ff_block(x_mid))",  # x = self.norm2(x + self._ff_block(x))
    ],
    "torch encoder layer, pre-norm": [
        "x_mid = x + _sa_block(LayerNorm(x))",  # x = x + self._sa_block(self.norm1(x), ...)
        "x_out = x_mid + _ff_block(LayerNorm(x_mid))",
    ],
    "torch decoder layer, post-norm": [
        "x_1 = LayerNorm(x + _sa_block(x))",
        "x_2 = LayerNorm(x_1 + _mha_block(x_1, memory))",  # self._mha_block(x, memory, ...)
        "x_out = LayerNorm(x_2 + _ff_block(x_2))",
        "memory: input 2, (2, 5, 16)",
    ],
    "torch decoder layer, pre-norm": [
        "x_1 = x + _sa_block(LayerNorm(x))",
        "x_2 = x_1 + _mha_block(LayerNorm(x_1), memory)",
        "x_out = x_2 + _ff_block(LayerNorm(x_2))",
        "memory: input 2, (2, 5, 16)",
    ],
    "timm block": [  # x + drop_path1(ls1(attn(norm1(x)))), x + drop_path2(ls2(mlp(norm2(x))))
        "x_mid = x + DropPath(LayerScale(SelfAttention(LayerNorm(x))))",
        "x_out = x_mid + DropPath(LayerScale(Mlp(LayerNorm(x_mid))))",
    ],
    "nanoGPT": [  # drop(wte(idx) + wpe(pos)); the blocks; lm_head(ln_f(x))
        "x_1 = Dropout(add(Embedding(x), wpe))",
        "x_2 = NanoBlock×2(x_1)",
        "x_out = Linear(LayerNorm(x_2))",
        "each of h.0 … h.1 (NanoBlock × 2):",
        "x_mid = x + CausalSelfAttention(LayerNorm(x))",  # x + attn(ln_1(x))
        "x_out = x_mid + NanoMLP(LayerNorm(x_mid))",  # x + mlp(ln_2(x))
    ],
    "cross-attention block": [  # x + attn(norm1(x)); x + cross(norm2(x), context); x + mlp(norm3(x))
        "x_1 = x + SelfAttention(LayerNorm(x))",
        "x_2 = x_1 + CrossAttention(LayerNorm(x_1), context)",
        "x_out = x_2 + Mlp(LayerNorm(x_2))",
        "context: input 2, (2, 5, 16)",
    ],
    "side-term block": [  # q, k, v = (... for t in (q, k, v)); x + proj(a) + ctx(context).mean(...)
        "q, k, v = <genexpr>(split(Linear(LayerNorm(x))))",
        "x_mid = x + Linear(reshape(transpose(SDPA(q, k, v)))) + mean(Linear(context))",
        "x_out = x_mid + Linear(GELU(Linear(LayerNorm(x_mid))))",
        "context: input 2, (2, 5, 8)",
    ],
    "dict-returning block": [  # aux = self.aux_head(x) between the sums
        "x_mid = x + SelfAttention(LayerNorm(x))",
        "x_out = x_mid + Mlp(LayerNorm(x_mid))",
        "output 2 = Linear(x_mid)",
    ],
    "tuple-returning block": [  # y, probs = self.attend(self.norm(x)); return x + y, probs
        "y, probs = attend(LayerNorm(x))",
        "x_out = x + y",
        "output 2 = probs",
    ],
    "sliding-window cache block": [  # h = norm(x); k, v = cache.update(heads(k(h)), heads(v(h)))
        "h = LayerNorm(x)",
        "k, v = update(heads(Linear(h)), heads(Linear(h)))",
        "x_out = x + Linear(reshape(transpose(SDPA(heads(Linear(h)), k, v))))",
    ],
    "encoder with a mask keyword": [  # keep = mask[:, None, None, :]; norm1(x + attn(x, keep))
        "x_mid = LayerNorm(x + SelfAttention(x, getitem(mask)))",
        "x_out = LayerNorm(x_mid + Mlp(x_mid))",
        "mask: input 2, (2, 6)",
    ],
    "top-k MoE block": [
        "x_mid = x + SelfAttention(LayerNorm(x))",
        "x_out = x_mid + TopKMoE(LayerNorm(x_mid))",  # the router and experts are inside moe
    ],
    # shift, scale, gate (msa, then mlp) = adaLN_modulation(c).chunk(6): each part written by its index
    "kv cross-attention block": [
        "k, v = chunk(Linear(ctx))",  # k, v = self.kv(ctx).chunk(2, dim=-1)
        "x_mid = x + Linear(reshape(transpose(SDPA(heads(Linear(LayerNorm(x))), heads(k), heads(v)))))",
        "x_out = x_mid + Linear(GELU(Linear(LayerNorm(x_mid))))",
        "ctx: input 2, (2, 7, 32)",
    ],
    "q/k/v helper block": [
        "q, k, v = project(LayerNorm(x), ctx)",
        "x_out = x + Linear(SDPA(q, k, v))",
        "ctx: input 2, (2, 7, 16)",
    ],
    "DiT block": [
        "shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = chunk(Sequential(c))",
        "x_mid = x + mul(unsqueeze(gate_msa), SelfAttention(modulate(LayerNorm(x), shift_msa, scale_msa)))",
        "x_out = x_mid + mul(unsqueeze(gate_mlp), Mlp(modulate(LayerNorm(x_mid), shift_mlp, scale_mlp)))",
        "c: input 2, (2, 16)",
    ],
    # NanoChat.forward: the smear, then before each block x = resid_lambdas[i] * x + x0_lambdas[i] * x0
    # (x0 the smear's result, read again at every block); each block x + attn(norm(x), ve, cos_sin, w)
    # with ve = value_embeds[str(i)](idx), then x + mlp(norm(x)); softcap * tanh(lm_head(norm(x)) / 15)
    "nanochat": [
        "h_1 = RMSNorm(Embedding(x))",
        # gate = smear_lambda * σ(smear_gate(x[:, 1:, :4])); cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]])
        "h_2 = cat(getitem(h_1), add(getitem(h_1),"
        " mul(mul(smear_lambda, sigmoid(Linear(getitem(h_1)))), getitem(h_1))))",
        "x_1 = add(mul(resid_lambdas[0], h_2), mul(x0_lambdas[0], h_2))",
        "x_2 = x_1 + ChatAttention(RMSNorm(x_1), value_embeds.0, cos[…], sin[…])",
        "x_3 = add(mul(resid_lambdas[1], x_2 + ChatMLP(RMSNorm(x_2))), mul(x0_lambdas[1], h_2))",
        "x_4 = x_3 + ChatAttention(RMSNorm(x_3), value_embeds.1, cos[…], sin[…])",
        "x_out = mul(tanh(div(Linear(RMSNorm(x_4 + ChatMLP(RMSNorm(x_4)))))))",
    ],
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_block_s_formulas_are_its_code_s(
    name: str, built: Callable[[str], tuple[nn.Module, Trace, Graph]]
) -> None:
    assert stream_formulas(built(name)[1]) == FORMULAS[name]


def test_a_layer_scale_is_written_with_its_parameter(
    built: Callable[[str], tuple[nn.Module, Trace, Graph]],
) -> None:
    """timm's LayerScale.forward is `x * self.gamma`: a module of one op, written with the
    parameter it reads, as the code names it on the module."""
    assert "LayerScale(x) = mul(x, gamma)" in formulas_of(built("timm block")[1])


def test_a_sequential_is_written_with_its_children_by_type() -> None:
    """`mlp = nn.Sequential(nn.Linear(C, 4C), nn.GELU(), nn.Linear(4C, C))`: its children are named
    0, 1 and 2, which no code calls; the formula calls them by their types."""
    from blocktrace.tracing.tracer import trace

    class SequentialMlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(8)
            self.mlp = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.mlp(self.norm(x))

    lines = formulas_of(trace(SequentialMlp(), (torch.randn(2, 3, 8),)))
    assert "x_out = x + Sequential(LayerNorm(x))" in lines
    assert "Sequential(x) = Linear(GELU(Linear(x)))" in lines


# the (+) captions a reader writes from each block's code, the steps by their names in the code
CAPTIONS = {
    "kv cross-attention block": [
        "x + o(reshape(transpose(scaled_dot_product_attention(heads(q(norm1(x))),"
        " heads(chunk(kv(ctx))[0]), heads(chunk(kv(ctx))[1])))))",
        "x + proj(gelu(fc(norm2(x))))",
    ],
    "q/k/v helper block": ["x + o(scaled_dot_product_attention(*project(norm(x), ctx)))"],
    "cross-attention block": [
        "x + attn(norm1(x))",
        "x + cross(norm2(x), context)",
        "x + mlp(norm3(x))",
    ],
}


@pytest.mark.parametrize("name", list(CAPTIONS))
def test_each_caption_writes_every_operand_of_its_branch(
    name: str, built: Callable[[str], tuple[nn.Module, Trace, Graph]]
) -> None:
    from blocktrace.views.diagram.expression import expression
    from blocktrace.views.steps import StepTree

    t = built(name)[1]
    tree = StepTree(t)
    assert [expression(tree, r) for r in t.residual_adds] == CAPTIONS[name]


def test_the_arrow_into_sdpa_names_the_keys_and_values_by_what_made_them() -> None:
    """The kv Linear that made SDPA's k and v is in the drawing: in the arrow that brings them in."""
    result = invoke(["diagram", *CORPUS["kv cross-attention block"].cli, "--width", "200"])
    assert result.exit_code == 0, result.stderr
    assert "◄─ heads(chunk(kv(ctx))) 2×(2, 4, 7, 8)" in result.stdout


def _ancestors(t: Trace, of: int) -> set[int]:
    """Ids of every value the value `of` was computed from, through the ops the trace recorded."""
    made_from = {o.id: {i.id for i in op.inputs} for op in t.ops for o in op.outputs}
    found, todo = set(), [of]
    while todo:
        i = todo.pop()
        if i not in found:
            found.add(i)
            todo.extend(made_from.get(i, set()) - {i})
    return found


@pytest.mark.parametrize("name", list(CORPUS))
def test_no_formula_drops_an_operand(
    name: str, built: Callable[[str], tuple[nn.Module, Trace, Graph]]
) -> None:
    """Property over the corpus, from the trace's data flow alone: every model input the main output
    was computed from is written in the formulas (by its forward's name, said once under them), and
    every module called directly in the block on the way to the main output is named in the drawing.
    A dropped operand (SDPA's k and v from kv(ctx)) loses both the context and the kv Linear."""
    from tests.test_graph_drawing import drawn

    t = built(name)[1]
    needed = _ancestors(t, t.outputs[0].id)
    text = "\n".join(stream_formulas(t))
    for k, given in enumerate(t.inputs[1:], 1):
        if given.id in needed and t.residual_adds:
            assert f": input {k + 1}, " in text, (t.input_name(k), text)
    picture = drawn(t)
    root = next(c for c in t.calls if c.parent is None)
    for call in t.children(root.index):
        if {o.id for o in call.outputs} & needed:
            assert re.search(rf"\b{re.escape(call.path.rsplit('.', 1)[-1])}\b", picture), call.path
