"""The drawing and the formulas against the data-flow graph, on models nobody here wrote
(transformers' BART, T5, Llama and Mixtral, torch's decoder layer and MultiheadAttention) and
blocks written here in the styles people write them. Every expectation was written down by reading
the model's code: what each box reads beside the stream and from where, what leaves the model
beside its main output, what each helper takes and returns."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

from blocktrace.tracing.trace import Trace
from blocktrace.tracing.tracer import trace
from blocktrace.views.diagram.layout import layout, left_out
from blocktrace.views.diagram.render import render, to_text
from blocktrace.views.shapes import Shapes
from blocktrace.views.steps import StepTree
from tests.harness import formulas_of

transformers = pytest.importorskip("transformers")

IDS = torch.randint(0, 60, (2, 7))


def traced(module: nn.Module, *args: torch.Tensor, **kwargs: torch.Tensor) -> Trace:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trace(module.eval(), args, kwargs)


def drawn(t: Trace) -> str:
    return to_text(render(layout(StepTree(t), Shapes.concrete)))


def arrows(text: str) -> dict[str, list[str]]:
    """Box name -> the side inputs drawn as arrows into it ("encoder (2, 7, 32)"), from the text."""
    found: dict[str, list[str]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "┌" not in line:
            continue
        start = line.index("┌")
        end = line.index("┐", start)
        body = []
        for below in lines[i + 1 :]:
            if below[start] != "│":
                break
            body.append(below)
        name = body[-1][start + 1 : end].strip()
        found[name] = [m[1] for b in body if (m := re.match(r"◄─ (.*?)(?:  |$)", b[end + 1 :]))]
    return found


class Cross(nn.Module):
    """Pre-norm cross-attention to a context, then an MLP: torch's MultiheadAttention(h, c, c)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, 2, batch_first=True)
        self.mlp = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), context, context)[0]
        return x + self.mlp(self.ln2(x))


def test_cross_attention_reads_its_context_once_and_its_helper_note_lists_what_it_read() -> None:
    text = drawn(traced(Cross(), torch.randn(2, 5, 8), torch.randn(2, 7, 8)))
    assert arrows(text) == {"ln1": [], "attn": ["context (2, 7, 8)"], "ln2": [], "mlp": []}
    # torch's MultiheadAttention, key is value: query, key = (x.transpose(1, 0) for x in (query, key))
    assert "<genexpr>()         (2, 5, 8), (2, 7, 8) -> (5, 2, 8), (7, 2, 8)" in text


def test_torch_decoder_layer_draws_the_memory_into_its_cross_attention_block() -> None:
    """x = norm2(x + self._mha_block(x, memory, ...)): only _mha_block reads the memory."""
    layer = nn.TransformerDecoderLayer(12, 2, 16)
    text = drawn(traced(layer, torch.randn(7, 2, 12), torch.randn(5, 2, 12)))
    assert arrows(text) == {
        "_sa_block()": [],
        "norm1": [],
        "_mha_block()": ["memory (5, 2, 12)"],
        "norm2": [],
        "_ff_block()": [],
        "norm3": [],
    }


class WithAux(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.mlp = nn.Linear(c, c)
        self.aux_head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = x + self.mlp(x)
        return {"hidden": h, "aux": self.aux_head(h)}


class WithTuple(nn.Module):
    """Returns the stream and a router's logits, computed from the normed input (Mixtral's style)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.router = nn.Linear(c, 4)
        self.mlp = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(x)
        return x + self.mlp(h), self.router(h)


def test_a_dict_s_second_output_branches_off_the_stream_after_the_add() -> None:
    text = drawn(traced(WithAux(), torch.randn(2, 5, 8)))
    lines = text.splitlines()
    branch = next(i for i, line in enumerate(lines) if "►" in line)
    assert lines[branch].strip() == "├──► aux_head -> (2, 5, 3), output 2"
    assert "(+)" in lines[branch - 3] and lines[-1].strip() == "output (2, 5, 8)"
    assert "aux_head" not in arrows(text)  # no box on the stream


def test_a_tuple_s_second_output_branches_off_where_it_was_computed() -> None:
    text = drawn(traced(WithTuple(), torch.randn(2, 5, 8)))
    lines = text.splitlines()
    branch = next(i for i, line in enumerate(lines) if "►" in line)
    assert re.findall(r"├──► .*?(?=  |$)", lines[branch]) == ["├──► router -> (2, 5, 4), output 2"]
    assert "norm" in lines[branch - 3]  # off the norm's output, before the mlp
    assert list(arrows(text)) == ["norm", "mlp"]


def bart() -> Trace:
    config = transformers.BartConfig(
        vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
    )  # fmt: skip
    return traced(transformers.BartModel(config), IDS, decoder_input_ids=IDS[:, :5])


def test_bart_draws_the_encoder_then_the_decoder_with_the_encoder_entering_its_cross_attention() -> None:
    """BartModel.forward: encoder_outputs = self.encoder(input_ids), then self.decoder(
    decoder_input_ids, encoder_hidden_states=encoder_outputs[0]); BartDecoderLayer: self_attn(hidden),
    then encoder_attn(hidden, key_value_states=encoder's)."""
    t = bart()
    text = drawn(t)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "input  (2, 7)"  # the encoder's input_ids first
    assert "[encoder: BartEncoder]" in text and "reads input" not in text  # its own input is its stream
    end = lines.index("encoder output (2, 7, 32): output 2, read below as encoder")
    assert lines[end + 2] == "decoder_input_ids  (2, 5)"  # then the decoder's, by its parameter
    row = {
        label: next(i for i, line in enumerate(lines) if label in line)
        for label in ("[encoder.", "[decoder:")
    }
    assert row["[encoder."] < end < row["[decoder:"]
    boxes = arrows(text)
    assert boxes["encoder_attn"] == ["encoder (2, 7, 32)"] and boxes["self_attn"] == []
    assert "reads encoder (2, 7, 32)" in text
    assert left_out(StepTree(t), Shapes.concrete) == []  # the encoder and its output are drawn


def test_t5_cross_attention_reads_the_encoder() -> None:
    config = transformers.T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_decoder_layers=1, num_heads=4
    )
    text = drawn(traced(transformers.T5Model(config), IDS, decoder_input_ids=IDS[:, :5]))
    boxes = arrows(text)
    assert boxes["EncDecAttention"] == ["encoder (2, 7, 32)"] and boxes["SelfAttention"] == []


def llama_like(cls: type, config: object) -> str:
    return drawn(traced(cls(config), IDS))


def test_llama_attention_reads_the_rotary_tables_and_its_helpers_return_what_they_return() -> None:
    """apply_rotary_pos_emb(q, k, cos, sin) returns q_embed, k_embed; the cache's update() returns
    the layer's keys and values; position_embeddings = self.rotary_emb(...) is (cos, sin)."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    text = llama_like(transformers.LlamaModel, config)
    assert "rotary_emb 2×(1, 7, 8)" in arrows(text)["self_attn"]
    rotary = re.search(r"apply_rotary_pos_emb\(\)\s+(.*?) -> (.*?)\s+│", text, re.DOTALL)
    assert rotary is not None and rotary[2] == "(2, 4, 7, 8), (2, 2, 7, 8)"
    assert re.search(r"update\(\)\s+2×\(2, 2, 7, 8\) -> 2×\(2, 2, 7, 8\)", text)


def test_mixtral_s_router_note_lists_all_it_returned() -> None:
    """MixtralTopKRouter returns router_logits, router_scores, router_indices; the experts take the
    tokens, the indices and the weights."""
    config = transformers.MixtralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
    )  # fmt: skip
    text = llama_like(transformers.MixtralModel, config)
    assert "gate                (14, 32) -> (14, 4), 2×(14, 2)" in text
    assert "experts, reshape    (14, 32), 2×(14, 2) -> (2, 7, 32)" in text


def test_cross_attention_s_formula_writes_its_context() -> None:
    lines = formulas_of(traced(Cross(), torch.randn(2, 5, 8), torch.randn(2, 7, 8)))
    assert lines[:3] == [
        "x_mid = x + MultiheadAttention(LayerNorm(x), context)",
        "x_out = x_mid + Linear(LayerNorm(x_mid))",
        "context: input 2, (2, 7, 8)",
    ]


def test_torch_decoder_layer_s_formula_writes_the_memory_into_the_cross_attention_block() -> None:
    """Post-norm: x = norm1(x + _sa_block(x)); x = norm2(x + _mha_block(x, memory)); x = norm3(...)."""
    lines = formulas_of(
        traced(nn.TransformerDecoderLayer(12, 2, 16), torch.randn(7, 2, 12), torch.randn(5, 2, 12))
    )
    assert lines[:4] == [
        "x_1 = LayerNorm(x + _sa_block(x))",
        "x_2 = LayerNorm(x_1 + _mha_block(x_1, memory))",
        "x_out = LayerNorm(x_2 + _ff_block(x_2))",
        "memory: input 2, (5, 2, 12)",
    ]


def test_bart_s_decoder_reads_the_encoder_s_output_as_its_cross_input() -> None:
    """BartDecoderLayer (post-norm): h = self_attn_layer_norm(h + dropout(self_attn(h))), then
    h = encoder_attn_layer_norm(h + dropout(encoder_attn(h, encoder_hidden_states)))."""
    lines = formulas_of(bart())
    assert "x_3 = LayerNorm(x_2 + dropout(BartAttention(x_2, encoder)))" in lines
    assert "x_2 = LayerNorm(x_1 + dropout(BartAttention(x_1)))" in lines


def test_weighted_residuals_keep_their_operands() -> None:
    """nanochat's x = resid_lambdas[i] * x + x0_lambdas[i] * x0, x0 the normed embedding, read
    before every block: named once; each block adds its own residual."""
    from tests.test_graph import ValueEmbedded

    lines = formulas_of(traced(ValueEmbedded(), IDS))
    assert lines[:4] == [
        "h = RMSNorm(Embedding(x))",
        "x_1 = add(mul(resid_lambdas[0], h), mul(x0_lambdas[0], h))",
        "x_2 = add(mul(resid_lambdas[1], x_1 + Linear(add(x_1, value_embeds.0))), mul(x0_lambdas[1], h))",
        "x_out = x_2 + Linear(add(x_2, value_embeds.1))",
    ]


SIDE_INPUT_MODELS = {
    "cross": lambda: traced(Cross(), torch.randn(2, 5, 8), torch.randn(2, 7, 8)),
    "decoder": lambda: traced(
        nn.TransformerDecoderLayer(12, 2, 16), torch.randn(7, 2, 12), torch.randn(5, 2, 12)
    ),
    "bart": bart,
}


@pytest.mark.parametrize("name", list(SIDE_INPUT_MODELS))
def test_every_side_input_of_a_stream_step_is_in_its_formula(name: str) -> None:
    """A formula that drops an operand is a bug: each box on the stream that reads something beside
    it is written with it, by its name (a model input's, as its forward names it, or where it came
    from)."""
    t = SIDE_INPUT_MODELS[name]()
    tree = StepTree(t)
    text = "\n".join(formulas_of(t))
    inputs = {v.id: t.input_name(k) for k, v in enumerate(t.inputs) if k}
    checked = 0
    for step in tree.stream:
        for source, values in tree.reads(step) if step.kind.value in ("call", "helper") else ():
            name = inputs.get(values[0].id, source)
            assert re.search(rf"{re.escape(step.title)}\([^=]*\b{re.escape(name)}\b", text), (
                step.label,
                name,
            )
            checked += 1
    assert checked


def test_side_outputs_are_written_from_what_made_them_not_as_the_stream_s_end() -> None:
    """h = x + mlp(x), aux = aux_head(h); and (x + mlp(norm(x)), router(norm(x)))."""
    assert formulas_of(traced(WithAux(), torch.randn(2, 5, 8)))[:2] == [
        "x_out = x + Linear(x)",
        "output 2 = Linear(x_out)",
    ]
    assert formulas_of(traced(WithTuple(), torch.randn(2, 5, 8)))[:2] == [
        "x_out = x + Linear(LayerNorm(x))",
        "output 2 = Linear(LayerNorm(x))",
    ]


def test_a_generator_over_one_split_is_a_helper_whose_values_are_named_as_the_code_unpacks_them() -> None:
    """SideTermBlock.forward: q, k, v = self.qkv(self.ln1(x)).split(C, dim=2), then
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v)) and SDPA(q, k, v): split's
    three values all carry the stream (none is read beside it), and the generator yields q, k, v."""
    from tests.corpus_blocks import SideTermBlock

    t = traced(SideTermBlock(), torch.randn(2, 6, 16), torch.randn(2, 5, 8))
    boxes = arrows(drawn(t))
    assert list(boxes)[:5] == ["ln1", "qkv", "split", "<genexpr>()", "scaled_dot_product_attention"]
    assert all(reads == [] for reads in boxes.values())
    assert formulas_of(t)[:4] == [
        "q, k, v = <genexpr>(split(Linear(LayerNorm(x))))",
        "x_mid = x + Linear(reshape(transpose(SDPA(q, k, v)))) + mean(Linear(context))",
        "x_out = x_mid + Linear(GELU(Linear(LayerNorm(x_mid))))",
        "context: input 2, (2, 5, 8)",
    ]


class Unpacked(nn.Module):
    """The generator's values kept in one name, then unpacked into SDPA: no line names them apart."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = tuple(t.view(2, 5, 2, 4).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        y = nn.functional.scaled_dot_product_attention(*heads)
        return x + self.proj(y.transpose(1, 2).reshape(2, 5, 8))


def test_a_generator_s_values_no_line_names_are_named_h_k() -> None:
    assert formulas_of(traced(Unpacked(), torch.randn(2, 5, 8)))[:2] == [
        "h_1, h_2, h_3 = <genexpr>(chunk(Linear(x)))",
        "x_out = x + Linear(reshape(transpose(SDPA(h_1, h_2, h_3))))",
    ]


class Chunked(nn.Module):
    """split's values read apart on the stream: each made into a head before SDPA reads them."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        y = nn.functional.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1))
        return x + self.proj(y.squeeze(1))


def test_an_op_s_values_read_apart_are_named_as_the_code_unpacks_them_and_all_carry_the_stream() -> None:
    t = traced(Chunked(), torch.randn(2, 5, 8))
    assert all(reads == [] for reads in arrows(drawn(t)).values())  # k and v are no side inputs
    assert formulas_of(t)[:2] == [
        "q, k, v = chunk(Linear(x))",
        "x_out = x + Linear(squeeze(SDPA(unsqueeze(q), unsqueeze(k), unsqueeze(v))))",
    ]


def test_a_slice_of_a_buffer_is_named_by_the_buffer() -> None:
    """NanoChat.forward: cos_sin = self.cos[:, :t], self.sin[:, :t], the rotary tables registered as
    buffers, read by every block's attention: drawn and written as cos[…] and sin[…], not getitem."""
    from tests.corpus_blocks import NanoChat

    t = traced(NanoChat(), torch.randint(0, 40, (2, 6)))
    assert sorted(t.buffers.values()) == ["cos", "sin"]
    text = drawn(t)
    assert "reads cos[…] (1, 6, 1, 2)" in text and "reads sin[…] (1, 6, 1, 2)" in text
    assert "x_2 = x_1 + ChatAttention(RMSNorm(x_1), value_embeds.0, cos[…], sin[…])" in formulas_of(t)


class ShiftedTerm(nn.Module):
    """adaLN's three parts of one chunk, each unsqueezed beside the stream; the shift is a term of
    the sum itself."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.norm, self.attn, self.mod = nn.LayerNorm(c), nn.Linear(c, c), nn.Linear(c, 3 * c)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.mod(c).chunk(3, -1)
        shift, scale, gate = shift.unsqueeze(1), scale.unsqueeze(1), gate.unsqueeze(1)
        return x + gate * self.attn(self.norm(x) * (1 + scale)) + shift


def test_ops_side_by_side_on_one_chunk_are_each_written_on_the_part_they_read() -> None:
    """The caption's side term is shift = chunk(...)[0] unsqueezed, not the three unsqueezes in a
    chain; the formula binds the chunk's parts once, by the names the code gives them."""
    t = traced(ShiftedTerm(), torch.randn(2, 5, 8), torch.randn(2, 8))
    assert (
        "x + mul(attn(mul(norm(x), add(unsqueeze(chunk(mod(c))[1])))), unsqueeze(chunk(mod(c))[2]))"
        " + unsqueeze(chunk(mod(c))[0])"
    ) in drawn(t)
    assert formulas_of(t)[:2] == [
        "shift, scale, gate = chunk(Linear(c))",
        "x_out = x + mul(unsqueeze(gate), Linear(mul(LayerNorm(x), add(unsqueeze(scale)))))"
        " + unsqueeze(shift)",
    ]


class ShiftedByHelper(ShiftedTerm):
    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.mod(c).chunk(3, -1)
        shift, scale, gate = [t.unsqueeze(1) for t in (shift, scale, gate)]  # a helper: <listcomp>
        return x + gate * self.attn(self.norm(x) * (1 + scale)) + shift


def test_the_values_of_a_helper_beside_the_stream_are_each_written_by_the_helper() -> None:
    t = traced(ShiftedByHelper(), torch.randn(2, 5, 8), torch.randn(2, 8))
    assert formulas_of(t)[:2] == [
        "shift, scale, gate = chunk(Linear(c))",
        "x_out = x + mul(<listcomp>(shift, scale, gate)[2], Linear(mul(LayerNorm(x),"
        " add(<listcomp>(shift, scale, gate)[1])))) + <listcomp>(shift, scale, gate)[0]",
    ]


def test_a_note_of_an_op_that_makes_several_tensors_lists_them_all() -> None:
    """The neox Block's fused q, k, v = query_key_value(x).split(C, dim=2): split's note says the
    three tensors it made, 3×(B, T, C), not the first alone."""
    from tests.harness import TINY, invoke

    result = invoke(["diagram", "--preset", "neox", *TINY])
    notes = [line for line in result.stdout.splitlines() if "split " in line]
    assert result.exit_code == 0 and len(notes) == 1, notes
    assert "split               (B, T, 3C) -> 3×(B, T, C)" in notes[0], notes


class Unread(nn.Module):
    """A module call beside the stream whose value nothing reads: it ran, so the drawing says so."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.norm, self.attn, self.probe = nn.LayerNorm(c), nn.Linear(c, c), nn.Linear(c, 3)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        self.last = self.probe(ctx)  # kept on the module, returned by nobody
        return x + self.attn(self.norm(x))


def test_a_module_call_beside_the_stream_that_nothing_drawn_names_is_said_in_one_line() -> None:
    text = drawn(traced(Unread(), torch.randn(2, 5, 8), torch.randn(2, 4, 8)))
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("not drawn:")]
    assert lines == ["not drawn: probe (Linear, (2, 4, 8) -> (2, 4, 3)) ran beside the stream"]
    # a call named in the drawing (the cross block's attn reads the context in its box) is not said
    assert "not drawn" not in drawn(traced(Cross(), torch.randn(2, 5, 8), torch.randn(2, 7, 8)))
