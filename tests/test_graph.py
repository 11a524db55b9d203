"""The data-flow graph against models nobody here wrote (transformers' and torch's own layers) and
blocks written in the tests in the styles people write them. Every expectation was written down by
reading the model's code: which adds are residuals, what each branch runs, what each step reads
beside the stream."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from blocktrace.models.block.config import BlockConfig
from blocktrace.pipeline import trace_config
from blocktrace.tracing.graph.build import build_graph
from blocktrace.tracing.graph.model import Graph, Level
from blocktrace.tracing.trace import Trace
from blocktrace.tracing.tracer import trace

transformers = pytest.importorskip("transformers")


def traced(module: nn.Module, *args: torch.Tensor, **kwargs: torch.Tensor) -> tuple[Trace, Graph]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = trace(module.eval(), args, kwargs)
    return t, build_graph(t)


def branches(trace: Trace, graph: Graph) -> list[list[list[str]]]:
    """For every residual, in order: the names of the steps on each of its branches."""
    found = []
    for level in graph.levels:
        for r in level.residuals:
            if r.adds:  # a join call's residual is its inner level's add
                found.append([[level.steps[i].name for i in b.steps] for b in r.branches])
    return found


def level_of(trace: Trace, graph: Graph, path: str) -> Level:
    call = next(c.index for c in trace.calls if c.path == path)
    level = graph.level(call)
    assert level is not None, f"{path} is not opened"
    return level


def sources(level: Level, step: str) -> set[str]:
    """Where the side inputs of the step named `step` came from."""
    return {s.source for s in level.side_inputs if level.steps[s.step].name == step}


IDS = torch.randint(0, 60, (2, 7))


def test_the_built_in_block_has_its_two_residuals_and_rotary_tables_beside_the_stream() -> None:
    t = trace_config(BlockConfig(n_embd=32, n_head=4, n_kv_head=2, seq=6, batch=2), "meta")
    g = build_graph(t)
    assert branches(t, g) == [[["norm", "attn"]], [["norm", "mlp"]]]
    assert sources(g.root, "attn") == {
        "cos_sin[0]",
        "cos_sin[1]",
    }  # cos and sin, as forward(x, cos_sin) names them


def test_an_eager_attention_mask_add_is_no_residual() -> None:
    """Llama's eager attention adds the mask inside self_attn; 3 layers have 6 residuals, not 8."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, attn_implementation="eager",
    )  # fmt: skip
    t, g = traced(transformers.LlamaModel(config), IDS)
    assert len(t.residual_adds) == 6  # the trace records what the graph finds
    assert branches(t, g) == [[["input_layernorm", "self_attn"]], [["post_attention_layernorm", "mlp"]]] * 3
    layer = level_of(t, g, "layers.2")
    assert "rotary_emb" in sources(layer, "self_attn")
    assert len(g.root.segments) == 5  # embed_tokens, the 3 layers, norm


def test_sandwich_norms_are_on_their_branches() -> None:
    """Gemma2 normalises each sub-layer's output before its add."""
    config = transformers.Gemma2Config(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, attn_implementation="eager",
    )  # fmt: skip
    t, g = traced(transformers.Gemma2Model(config), IDS)
    assert (
        branches(t, g)
        == [
            [["input_layernorm", "self_attn", "post_attention_layernorm"]],
            [["pre_feedforward_layernorm", "mlp", "post_feedforward_layernorm"]],
        ]
        * 4
    )


def test_bert_adds_inside_its_output_modules() -> None:
    """BertSelfOutput(attn(x), x) and BertOutput(intermediate(a), a) sum inside: 2 per layer."""
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4
    )
    t, g = traced(transformers.BertModel(config), IDS)
    assert branches(t, g) == [[["dense", "dropout"]]] * 4
    attention = level_of(t, g, "encoder.layer.0.attention")
    (r,) = attention.residuals
    assert attention.steps[r.join].name == "output" and r.skip.id == attention.main_input.id  # type: ignore[union-attr]
    assert [[attention.steps[i].name for i in b.steps] for b in r.branches] == [["self"]]


@pytest.mark.parametrize("norm_first", [False, True])
def test_torch_encoder_layer_helpers_are_one_step_each(norm_first: bool) -> None:
    """_sa_block and _ff_block call modules: each is one step, never a chain through them."""
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=norm_first)
    t, g = traced(layer, torch.randn(2, 7, 32))
    if norm_first:
        assert branches(t, g) == [[["norm1", "_sa_block"]], [["norm2", "_ff_block"]]]
    else:
        assert branches(t, g) == [[["_sa_block"]], [["_ff_block"]]]
        assert [g.root.steps[s.steps[0]].name for s in g.root.segments if s.residual is None] == [
            "norm1",
            "norm2",
        ]
    ff = next(s for s in g.root.steps if s.name == "_ff_block")
    assert [t.calls[c].path for c in ff.calls] == [
        "linear1",
        "dropout",
        "linear2",
        "dropout2",
    ]  # relu: F.relu


def test_torch_decoder_layer_reads_the_memory_beside_the_stream() -> None:
    layer = nn.TransformerDecoderLayer(32, 4, 64, batch_first=True)
    t, g = traced(layer, torch.randn(2, 7, 32), torch.randn(2, 5, 32))
    assert branches(t, g) == [[["_sa_block"]], [["_mha_block"]], [["_ff_block"]]]
    assert sources(g.root, "_mha_block") == {"memory"}
    assert g.root.main_output is not None and g.root.main_output.shape == (2, 7, 32)


def test_an_encoder_decoder_draws_the_decoder_with_the_encoder_as_its_cross_input() -> None:
    config = transformers.BartConfig(
        vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
    )  # fmt: skip
    t, g = traced(transformers.BartModel(config), IDS, decoder_input_ids=IDS[:, :5])
    assert g.root.main_input is not None and g.root.main_input.shape == (2, 5)
    fc = ["fc1", "activation_fn", "dropout", "fc2", "dropout"]
    # the decoder's three sums per layer, then the encoder's two (BartEncoderLayer: self_attn, then fc)
    decoder = [[["self_attn", "dropout"]], [["encoder_attn", "dropout"]], [fc]] * 2
    assert branches(t, g) == decoder + [[["self_attn", "dropout"]], [fc]] * 2
    assert sources(level_of(t, g, "decoder.layers.1"), "encoder_attn") == {"encoder"}
    assert [(t.calls[c].path, n) for c, n in g.beside] == [("encoder", 4)]


class Attention(nn.Module):
    """q, k and v are three projections of one x, made in a helper method."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(c, c) for _ in range(4))

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        return self.o(torch.softmax(q @ k.transpose(-2, -1) + mask, dim=-1) @ v)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.norm(x), mask)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x, x.shape[-1:])


def test_a_helper_that_calls_modules_is_one_step_taking_all_it_read() -> None:
    t, g = traced(Attention(8), torch.randn(2, 5, 8), torch.zeros(5, 5))
    assert branches(t, g) == [[["norm", "attention"]]]
    helper = next(s for s in g.root.steps if s.name == "attention")
    assert [t.calls[c].path for c in helper.calls] == ["q", "k", "v", "o"]
    assert [x.shape for x in helper.inputs] == [(2, 5, 8), (5, 5)]
    assert sources(g.root, "attention") == {"mask"}  # the mask; the mask add is the helper's own


class ValueEmbedded(nn.Module):
    """nanochat's latest GPT in small: value embeddings read the token ids, x0 is mixed back in
    before every block (x = λ·x + λ0·x0), and each block sums its own residual."""

    def __init__(self, v: int = 60, c: int = 8, layers: int = 2) -> None:
        super().__init__()
        self.wte = nn.Embedding(v, c)
        self.value_embeds = nn.ModuleList(nn.Embedding(v, c) for _ in range(layers))
        self.blocks = nn.ModuleList(Mixer(c) for _ in range(layers))
        self.resid_lambdas = nn.Parameter(torch.ones(layers))
        self.x0_lambdas = nn.Parameter(torch.zeros(layers))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = nn.functional.rms_norm(self.wte(idx), (8,))
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            x = block(x, self.value_embeds[i](idx))
        return x


class Mixer(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, ve: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x + ve)


def test_value_embeddings_and_x0_are_side_inputs_and_only_the_blocks_have_residuals() -> None:
    t, g = traced(ValueEmbedded(), IDS)
    assert branches(t, g) == [[["add", "proj"]]] * 2
    assert sources(g.root, "blocks.0") == {"value_embeds.0"}
    mixes = [i for i, s in enumerate(g.root.steps) if s.name == "add"]
    assert len(mixes) == 2 and all(g.root.steps[i].inputs for i in mixes)
    x0 = {s.value.id for s in g.root.side_inputs if s.source == "rms_norm"}
    assert len(x0) == 1  # x0: one value, read again before each block
    chain = ["wte", "rms_norm", "mul", "add", "blocks.0", "mul", "add", "blocks.1"]
    assert [g.root.steps[s.steps[0]].name for s in g.root.segments] == chain


class Gate(nn.Module):
    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return x * m


class NamedMask(nn.Module):
    """A mask made beside the stream twice: once on a line of its own, once inside the call's line."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.inline = Gate(), Gate()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1)
        x = x + self.gate(x, keep)
        x = x + self.inline(x, mask.unsqueeze(-1))
        return x


def test_a_value_made_beside_the_stream_is_named_as_its_line_assigns_it() -> None:
    """`keep = mask.unsqueeze(-1)` is read as keep; `mask.unsqueeze(-1)` inside the call's line is
    assigned to nothing of its own (the line's x is the sum), so it keeps its op's name."""
    _, g = traced(NamedMask(), torch.randn(2, 5, 4), torch.ones(2, 5))
    assert sources(g.root, "gate") == {"keep"}
    assert sources(g.root, "inline") == {"unsqueeze"}


class WithAux(nn.Module):
    """A block returning its output and an auxiliary head's, by name."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.mlp = nn.Linear(c, c)
        self.aux_head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = x + self.mlp(x)
        return {"hidden": h, "aux": self.aux_head(h)}


def test_a_side_output_branches_off_and_is_not_the_stream_s_end() -> None:
    t, g = traced(WithAux(), torch.randn(2, 5, 8))
    assert branches(t, g) == [[["mlp"]]]
    assert g.root.main_output is not None and g.root.main_output.shape == (2, 5, 8)
    assert [o.shape for o in g.root.side_outputs] == [(2, 5, 3)]
    assert g.root.stream[-1].id == g.root.main_output.id


class LayerScaled(nn.Module):
    """timm's style: x + drop_path(ls(attn(norm(x)))), layer scale and drop path on the branch."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(c)
        self.attn = nn.Linear(c, c)
        self.ls1 = LayerScale(c)
        self.drop_path = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.ls1(self.attn(self.norm1(x))))


class LayerScale(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((c,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def test_layer_scale_and_drop_path_are_on_the_branch() -> None:
    t, g = traced(LayerScaled(), torch.randn(2, 5, 8))
    assert branches(t, g) == [[["norm1", "attn", "ls1", "drop_path"]]]


def test_the_drawing_shows_a_helper_that_calls_modules_as_one_step() -> None:
    """q, k, v and o are drawn inside one attention() box, not as a chain q -> attention() -> k."""
    from blocktrace.views.diagram.layout import expression
    from blocktrace.views.steps import StepKind as DrawnKind
    from blocktrace.views.steps import StepTree

    t, _ = traced(Attention(8), torch.randn(2, 5, 8), torch.zeros(5, 5))
    tree = StepTree(t)
    drawn = [(s.kind, s.label) for s in tree.stream]
    assert drawn == [(DrawnKind.helper, "norm"), (DrawnKind.helper, "attention"), (DrawnKind.residual, "+")]
    assert [c.path for c in tree.stream[1].calls] == ["q", "k", "v", "o"]
    (residual,) = t.residual_adds
    assert expression(tree, residual) == "x + attention(norm(x), mask)"  # the mask it reads
