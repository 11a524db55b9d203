"""The data-flow graph of every transformers architecture of the corpus (tests/test_corpus_configs.py)
against what its modeling file says: how many residual adds, which value each one adds back (the
skip), what each branch runs and which step made its term, and what each layer's steps read beside
the stream, by where it came from. Every expectation below was written down from the lines of
transformers' `models/<name>/modeling_<name>.py` (transformers 5) that the comments cite; none is
blocktrace's output pasted back."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from blocktrace.tracing.graph.model import Graph
from blocktrace.tracing.trace import Trace
from tests.corpus_graph import Residual, residuals, side_inputs, stream_formulas, traced
from tests.test_corpus_configs import CORPUS

DECODER_IDS = torch.randint(0, 90, (2, 5), generator=torch.Generator().manual_seed(1))  # not input_ids


def layers(prefix: str, n: int, *per_layer: tuple[str, tuple[tuple[str, ...], ...]]) -> list[Residual]:
    """`per_layer` (skip, branches) for each of n layers at `prefix`.i."""
    return [(f"{prefix}.{i}", skip, branches) for i in range(n) for skip, branches in per_layer]


# residual = hidden_states; h = input_layernorm(h); h = self_attn(h, ...); h = residual + h (the first
# add, whose value is the next `residual`); h = post_attention_layernorm(h); h = mlp(h); h = residual + h
PRE_NORM = (
    ("input", (("input_layernorm", "self_attn"),)),
    ("add", (("post_attention_layernorm", "mlp"),)),
)
# Gemma2/3: a norm after each sub-layer too, before its add
SANDWICH = (
    ("input", (("input_layernorm", "self_attn", "post_attention_layernorm"),)),
    ("add", (("pre_feedforward_layernorm", "mlp", "post_feedforward_layernorm"),)),
)
# the decoder layer's self_attn gets position_embeddings=(cos, sin) from model.rotary_emb and
# position_ids, named as the line that makes it names it: `position_ids = position_ids.unsqueeze(0)`
# (modeling_llama.py:380, LlamaModel.forward; modeling_gptj.py:324, modeling_falcon.py:751 alike)
ROTARY = {("self_attn", "rotary_emb"), ("self_attn", "position_ids")}

RESIDUALS: dict[str, list[Residual]] = {
    "llama": layers("model.layers", 2, *PRE_NORM),  # modeling_llama.py:308, :314
    "mistral": layers("model.layers", 2, *PRE_NORM),  # modeling_mistral.py:235, :241
    "qwen2": layers("model.layers", 2, *PRE_NORM),  # modeling_qwen2.py:285, :291
    "qwen3": layers("model.layers", 2, *PRE_NORM),  # modeling_qwen3.py:310, :316
    "gemma2": layers("model.layers", 3, *SANDWICH),  # modeling_gemma2.py:321, :327
    "gemma3": layers("model.layers", 2, *SANDWICH),  # modeling_gemma3.py:395, :401
    # one parallel residual: attn_outputs + feed_forward_hidden_states + residual (modeling_phi.py:288);
    # both branches read the one input_layernorm(h); eval dropout hands back its input, so the mlp's
    # term is what mlp made
    "phi": layers(
        "model.layers", 2, ("input", (("input_layernorm", "self_attn", "resid_dropout"), ("mlp",)))
    ),
    "gptj": layers("transformer.h", 2, ("input", (("ln_1", "attn"), ("mlp",)))),  # modeling_gptj.py:239
    # mlp_output += attention_output; dropout_add(mlp_output, residual) (modeling_falcon.py:619, :621):
    # one term, made by the in-place add from both sub-layers, of the one input_layernorm(h)
    "falcon": layers("transformer.h", 2, ("input", (("input_layernorm", "self_attention", "mlp", "add"),))),
    # OLMo2 normalises each sub-layer's output, no norm before it (modeling_olmo2.py:310, :316)
    "olmo2": layers(
        "model.layers",
        2,
        ("input", (("self_attn", "post_attention_layernorm"),)),
        ("add", (("mlp", "post_feedforward_layernorm"),)),
    ),
    "mixtral": layers("model.layers", 2, *PRE_NORM),  # modeling_mixtral.py:362, :366 (mlp: the MoE block)
    "qwen2_moe": layers("model.layers", 2, *PRE_NORM),  # modeling_qwen2_moe.py:391, :397
    "deepseek_v3": layers("model.layers", 2, *PRE_NORM),  # modeling_deepseek_v3.py:524, :530
    # BertSelfOutput: LayerNorm(dropout(dense(h)) + input_tensor) (modeling_bert.py:293), called as
    # output(self(h), h); BertOutput likewise with intermediate(a) and a (:352): each sums inside
    "bert": [
        (path, skip, branches)
        for i in range(2)
        for path, skip, branches in (
            (f"encoder.layer.{i}.attention.output", "skip input", (("dense", "dropout"),)),
            (f"encoder.layer.{i}.output", "skip input", (("dense", "dropout"),)),
        )
    ],
    # post-norm: sa_layer_norm(attention_output + hidden_states), output_layer_norm(ffn_output +
    # attention_output) (modeling_distilbert.py:252, :256)
    "distilbert": layers(
        "transformer.layer", 2, ("input", (("attention",),)), ("sa_layer_norm", (("ffn",),))
    ),
    # h = h + attn_output; h = h + mlp(mlp_norm(h)) (modeling_modernbert.py:319, :320); the first
    # layer's attn_norm is nn.Identity
    "modernbert": layers("layers", 3, ("input", (("attn_norm", "attn"),)), ("add", (("mlp_norm", "mlp"),))),
    # the decoder is the stream; each T5LayerX: h + dropout(X(layer_norm(h))) (modeling_t5.py:141, :403,
    # :435); the encoder's two are beside it
    "t5": [
        ("decoder.block.0.layer.0", "input", (("layer_norm", "SelfAttention", "dropout"),)),
        ("decoder.block.0.layer.1", "input", (("layer_norm", "EncDecAttention", "dropout"),)),
        ("decoder.block.0.layer.2", "input", (("layer_norm", "DenseReluDense", "dropout"),)),
        # the encoder's T5Block: T5LayerSelfAttention and T5LayerFF, no cross-attention
        ("encoder.block.0.layer.0", "input", (("layer_norm", "SelfAttention", "dropout"),)),
        ("encoder.block.0.layer.1", "input", (("layer_norm", "DenseReluDense", "dropout"),)),
    ],
    # post-norm decoder layer: residual + dropout(self_attn(h)), then self_attn_layer_norm; the same
    # for encoder_attn and for fc2(activation_fn(fc1(h))) (modeling_bart.py:364, :379, :388);
    # nn.functional.dropout is the op "dropout"
    "bart": [
        ("decoder.layers.0", "input", (("self_attn", "dropout"),)),
        ("decoder.layers.0", "self_attn_layer_norm", (("encoder_attn", "dropout"),)),
        (
            "decoder.layers.0",
            "encoder_attn_layer_norm",
            (("fc1", "activation_fn", "dropout", "fc2", "dropout"),),
        ),
        # BartEncoderLayer: residual + dropout(self_attn(h)), self_attn_layer_norm; residual +
        # dropout(fc2(dropout(activation_fn(fc1(h))))), final_layer_norm (modeling_bart.py:286-301)
        ("encoder.layers.0", "input", (("self_attn", "dropout"),)),
        (
            "encoder.layers.0",
            "self_attn_layer_norm",
            (("fc1", "activation_fn", "dropout", "fc2", "dropout"),),
        ),
    ],
    # h = dropout(attention(layernorm_before(h))) + residual (modeling_vit.py:277, :284)
    "vit": [
        ("layers.0", "input", (("layernorm_before", "attention", "dropout"),)),
        ("layers.0", "add", (("layernorm_after", "mlp", "dropout"),)),
    ],
    # pre-norm decoder layer, three sums (modeling_whisper.py:485, :499, :508)
    "whisper": [
        ("decoder.layers.0", "input", (("self_attn_layer_norm", "self_attn", "dropout"),)),
        ("decoder.layers.0", "add", (("encoder_attn_layer_norm", "encoder_attn", "dropout"),)),
        (
            "decoder.layers.0",
            "add",
            (("final_layer_norm", "fc1", "activation_fn", "dropout", "fc2", "dropout"),),
        ),
        # WhisperEncoderLayer, pre-norm, two sums (modeling_whisper.py:403, :411)
        ("encoder.layers.0", "input", (("self_attn_layer_norm", "self_attn", "dropout"),)),
        (
            "encoder.layers.0",
            "add",
            (("final_layer_norm", "fc1", "activation_fn", "dropout", "fc2", "dropout"),),
        ),
    ],
}

# the calls beside the stream holding residual adds of their own, and how many: an encoder-decoder's
# encoder, whose residuals are among the model's above
BESIDE = {
    "t5": [("encoder", 2)],  # T5LayerSelfAttention, T5LayerFF (modeling_t5.py:403, :141)
    "bart": [("encoder", 2)],  # modeling_bart.py:293, :301
    "whisper": [("encoder", 2)],  # modeling_whisper.py:403, :411
}

# (a layer's path, the side inputs of its steps, by where they came from)
SIDE: dict[str, tuple[str, set[tuple[str, str]]]] = {
    "llama": ("model.layers.1", ROTARY),
    # a sliding window: create_sliding_window_causal_mask's sdpa_mask (modeling_mistral.py)
    "mistral": ("model.layers.1", ROTARY | {("self_attn", "sdpa_mask")}),
    "qwen2": ("model.layers.1", ROTARY),
    "qwen3": ("model.layers.1", ROTARY),
    "gemma2": ("model.layers.1", ROTARY | {("self_attn", "eager_mask")}),  # eager attention, its mask
    "gemma3": ("model.layers.1", ROTARY | {("self_attn", "sdpa_mask")}),
    "phi": ("model.layers.1", ROTARY),  # the mlp reads the layer's own norm: no side input
    "gptj": ("transformer.h.1", {("attn", "rotary_emb"), ("attn", "position_ids")}),
    "falcon": (
        "transformer.h.1",
        {("self_attention", name) for name in ("rotary_emb", "position_ids", "sdpa_mask")},
    ),
    "olmo2": ("model.layers.1", ROTARY),
    "mixtral": ("model.layers.1", ROTARY),
    "qwen2_moe": ("model.layers.1", ROTARY),
    "deepseek_v3": ("model.layers.1", ROTARY),
    "bert": ("encoder.layer.1", set()),  # no mask: nothing beside the stream
    "distilbert": ("transformer.layer.1", set()),
    "modernbert": ("layers.1", {("attn", "rotary_emb")}),  # position_embeddings from self.rotary_emb
    # the decoder reads the encoder's output: encoder_hidden_states=encoder_outputs[0]
    "t5": ("decoder.block.0.layer.1", {("EncDecAttention", "encoder")}),
    "bart": ("decoder.layers.0", {("encoder_attn", "encoder")}),  # modeling_bart.py:774
    "vit": ("layers.0", set()),
    "whisper": ("decoder.layers.0", {("encoder_attn", "encoder")}),
}


# The formulas of each model's stream, written from its modeling file's forward (transformers 5):
# each line a value the code names or reads twice, every operand written, side inputs by where
# they came from (rotary_emb, the sdpa/eager mask, the encoder) or as the ops that made them
# (position_ids = cache_position.unsqueeze(0), cache_position an arange); a layer's inputs as its
# forward names them, bound to the call decoder_layer(hidden_states, attention_mask=...,
# position_embeddings=..., position_ids=...): position_embeddings[0] and [1] are its (cos, sin)
FORMULAS: dict[str, list[str]] = {
    # embed_tokens; each layer residual + self_attn(input_layernorm(h), position_ids, (cos, sin)),
    # residual + mlp(post_attention_layernorm(h)); position_ids = cache_position.unsqueeze(0);
    # lm_head(norm(h)[:, slice_indices, :])
    "llama": [
        "x_1 = Embedding(x)",
        "x_2 = LlamaDecoderLayer×2(x_1, rotary_emb, unsqueeze(add(arange())))",
        "x_out = Linear(getitem(LlamaRMSNorm(x_2)))",
        "each of model.layers.0 … model.layers.1 (LlamaDecoderLayer × 2):",
        "x_mid = x + LlamaAttention(LlamaRMSNorm(x), position_ids, position_embeddings[0], "
        "position_embeddings[1])",
        "x_out = x_mid + LlamaMLP(LlamaRMSNorm(x_mid))",
        "position_ids: input 4, (1, 6)",
        "position_embeddings[0]: input 2, (1, 6, 8)",
        "position_embeddings[1]: input 3, (1, 6, 8)",
    ],
    "mistral": [
        "x_1 = Embedding(x)",
        "x_2 = MistralDecoderLayer×2(x_1, sdpa_mask, unsqueeze(add(arange())), rotary_emb)",
        "x_out = Linear(getitem(MistralRMSNorm(x_2)))",
        "each of model.layers.0 … model.layers.1 (MistralDecoderLayer × 2):",
        "x_mid = x + MistralAttention(MistralRMSNorm(x), attention_mask, position_ids, "
        "position_embeddings[0], position_embeddings[1])",
        "x_out = x_mid + MistralMLP(MistralRMSNorm(x_mid))",
        "attention_mask: input 2, (2, 1, 6, 6)",
        "position_ids: input 3, (1, 6)",
        "position_embeddings[0]: input 4, (1, 6, 8)",
        "position_embeddings[1]: input 5, (1, 6, 8)",
    ],
    "qwen3": [
        "x_1 = Embedding(x)",
        "x_2 = Qwen3DecoderLayer×2(x_1, rotary_emb, unsqueeze(add(arange())))",
        "x_out = Linear(getitem(Qwen3RMSNorm(x_2)))",
        "each of model.layers.0 … model.layers.1 (Qwen3DecoderLayer × 2):",
        "x_mid = x + Qwen3Attention(Qwen3RMSNorm(x), position_ids, position_embeddings[0], "
        "position_embeddings[1])",
        "x_out = x_mid + Qwen3MLP(Qwen3RMSNorm(x_mid))",
        "position_ids: input 4, (1, 6)",
        "position_embeddings[0]: input 2, (1, 6, 8)",
        "position_embeddings[1]: input 3, (1, 6, 8)",
    ],
    "qwen2": [
        "x_1 = Embedding(x)",
        "x_2 = Qwen2DecoderLayer×2(x_1, rotary_emb, unsqueeze(add(arange())))",
        "x_out = Linear(getitem(Qwen2RMSNorm(x_2)))",
        "each of model.layers.0 … model.layers.1 (Qwen2DecoderLayer × 2):",
        "x_mid = x + Qwen2Attention(Qwen2RMSNorm(x), position_ids, position_embeddings[0], "
        "position_embeddings[1])",
        "x_out = x_mid + Qwen2MLP(Qwen2RMSNorm(x_mid))",
        "position_ids: input 4, (1, 6)",
        "position_embeddings[0]: input 2, (1, 6, 8)",
        "position_embeddings[1]: input 3, (1, 6, 8)",
    ],
    "gemma3": [
        "x_1 = Gemma3TextScaledWordEmbedding(x)",
        "x_2 = Gemma3DecoderLayer×2(x_1, sdpa_mask, rotary_emb, unsqueeze(add(arange())))",
        "x_out = Linear(getitem(Gemma3RMSNorm(x_2)))",
        "each of model.layers.0 … model.layers.1 (Gemma3DecoderLayer × 2):",
        "x_mid = x + Gemma3RMSNorm(Gemma3Attention(Gemma3RMSNorm(x), position_embeddings[0], "
        "position_embeddings[1], attention_mask, position_ids))",
        "x_out = x_mid + Gemma3RMSNorm(Gemma3MLP(Gemma3RMSNorm(x_mid)))",
        "position_embeddings[0]: input 3, (1, 6, 8)",
        "position_embeddings[1]: input 4, (1, 6, 8)",
        "attention_mask: input 2, (2, 1, 6, 6)",
        "position_ids: input 5, (1, 6)",
    ],
    # sandwich norms; logits = tanh(logits / final_logit_softcapping) * final_logit_softcapping
    "gemma2": [
        "x_1 = Gemma2TextScaledWordEmbedding(x)",
        "x_2 = Gemma2DecoderLayer×3(x_1, eager_mask, rotary_emb, unsqueeze(add(arange())))",
        "x_out = mul(tanh(div(Linear(getitem(Gemma2RMSNorm(x_2))))))",
        "each of model.layers.0 … model.layers.2 (Gemma2DecoderLayer × 3):",
        "x_mid = x + Gemma2RMSNorm(Gemma2Attention(Gemma2RMSNorm(x), position_embeddings[0], "
        "position_embeddings[1], attention_mask, position_ids))",
        "x_out = x_mid + Gemma2RMSNorm(Gemma2MLP(Gemma2RMSNorm(x_mid)))",
        "position_embeddings[0]: input 3, (1, 6, 8)",
        "position_embeddings[1]: input 4, (1, 6, 8)",
        "attention_mask: input 2, (2, 1, 6, 6)",
        "position_ids: input 5, (1, 6)",
    ],
    # attn_outputs + feed_forward_hidden_states + residual, both from the one input_layernorm(h),
    # each through resid_dropout
    "phi": [
        "x_1 = Dropout(Embedding(x))",
        "x_2 = PhiDecoderLayer×2(x_1, unsqueeze(add(arange())), rotary_emb)",
        "x_out = Linear(getitem(LayerNorm(x_2)))",
        "each of model.layers.0 … model.layers.1 (PhiDecoderLayer × 2):",
        "h = LayerNorm(x)",
        "x_out = x + Dropout(PhiAttention(h, position_ids, position_embeddings[0], "
        "position_embeddings[1])) + Dropout(PhiMLP(h))",
        "position_ids: input 2, (1, 6)",
        "position_embeddings[0]: input 3, (1, 6, 4)",
        "position_embeddings[1]: input 4, (1, 6, 4)",
    ],
    # attn_output + feed_forward_hidden_states + residual, both from ln_1(h)
    "gptj": [
        "x_1 = Dropout(Embedding(x))",
        "x_2 = GPTJBlock×2(x_1, unsqueeze(add(arange())), rotary_emb)",
        "x_out = Linear(getitem(LayerNorm(x_2)))",
        "each of transformer.h.0 … transformer.h.1 (GPTJBlock × 2):",
        "h = LayerNorm(x)",
        "x_out = x + GPTJAttention(h, position_embeddings[0], position_embeddings[1], "
        "position_ids) + GPTJMLP(h)",
        "position_embeddings[0]: input 3, (1, 6, 2)",
        "position_embeddings[1]: input 4, (1, 6, 2)",
        "position_ids: input 2, (1, 6)",
    ],
    # mlp_output += attention_output; dropout_add(mlp_output, residual)
    "falcon": [
        "x_1 = Embedding(x)",
        "x_2 = FalconDecoderLayer×2(x_1, sdpa_mask, unsqueeze(add(arange())), rotary_emb)",
        "x_out = Linear(getitem(LayerNorm(x_2)))",
        "each of transformer.h.0 … transformer.h.1 (FalconDecoderLayer × 2):",
        "h = LayerNorm(x)",
        "x_out = x + add(FalconMLP(h), FalconAttention(h, attention_mask, position_ids, "
        "position_embeddings[0], position_embeddings[1]))",
        "attention_mask: input 2, (2, 1, 6, 6)",
        "position_ids: input 3, (1, 6)",
        "position_embeddings[0]: input 4, (1, 6, 8)",
        "position_embeddings[1]: input 5, (1, 6, 8)",
    ],
    # residual + post_attention_layernorm(self_attn(h)), residual + post_feedforward_layernorm(mlp(h))
    "olmo2": [
        "x_1 = Embedding(x)",
        "x_2 = Olmo2DecoderLayer×2(x_1, rotary_emb, unsqueeze(add(arange())))",
        "x_out = Linear(getitem(Olmo2RMSNorm(x_2)))",
        "each of model.layers.0 … model.layers.1 (Olmo2DecoderLayer × 2):",
        "x_mid = x + Olmo2RMSNorm(Olmo2Attention(x, position_ids, position_embeddings[0], "
        "position_embeddings[1]))",
        "x_out = x_mid + Olmo2RMSNorm(Olmo2MLP(x_mid))",
        "position_ids: input 4, (1, 6)",
        "position_embeddings[0]: input 2, (1, 6, 8)",
        "position_embeddings[1]: input 3, (1, 6, 8)",
    ],
    "mixtral": [
        "x_1 = Embedding(x)",
        "x_2 = MixtralDecoderLayer×2(x_1, unsqueeze(add(arange())), rotary_emb)",
        "x_out = Linear(getitem(MixtralRMSNorm(x_2)))",
        "each of model.layers.0 … model.layers.1 (MixtralDecoderLayer × 2):",
        "x_mid = x + MixtralAttention(MixtralRMSNorm(x), position_embeddings[0], position_embeddings[1], "
        "position_ids)",
        "x_out = x_mid + MixtralSparseMoeBlock(MixtralRMSNorm(x_mid))",
        "position_embeddings[0]: input 3, (1, 6, 8)",
        "position_embeddings[1]: input 4, (1, 6, 8)",
        "position_ids: input 2, (1, 6)",
    ],
    "qwen2_moe": [
        "x_1 = Embedding(x)",
        "x_2 = Qwen2MoeDecoderLayer×2(x_1, unsqueeze(add(arange())), rotary_emb)",
        "x_out = Linear(getitem(Qwen2MoeRMSNorm(x_2)))",
        "each of model.layers.0 … model.layers.1 (Qwen2MoeDecoderLayer × 2):",
        "x_mid = x + Qwen2MoeAttention(Qwen2MoeRMSNorm(x), position_ids, position_embeddings[0], "
        "position_embeddings[1])",
        "x_out = x_mid + Qwen2MoeSparseMoeBlock(Qwen2MoeRMSNorm(x_mid))",
        "position_ids: input 2, (1, 6)",
        "position_embeddings[0]: input 3, (1, 6, 8)",
        "position_embeddings[1]: input 4, (1, 6, 8)",
    ],
    # layer 0 dense (DeepseekV3MLP), layer 1 routed (DeepseekV3MoE): not one run
    "deepseek_v3": [
        "x_1 = Embedding(x)",
        "x_2 = x_1 + DeepseekV3Attention(DeepseekV3RMSNorm(x_1), unsqueeze(add(arange())), rotary_emb)",
        "x_3 = x_2 + DeepseekV3MLP(DeepseekV3RMSNorm(x_2))",
        "x_4 = x_3 + DeepseekV3Attention(DeepseekV3RMSNorm(x_3), unsqueeze(add(arange())), rotary_emb)",
        "x_out = Linear(getitem(DeepseekV3RMSNorm(x_4 + DeepseekV3MoE(DeepseekV3RMSNorm(x_4)))))",
    ],
    # BertSelfOutput: LayerNorm(dropout(dense(h)) + input_tensor); BertOutput likewise, inside
    # apply_chunking_to_forward
    "bert": [
        "x_mid = BertEmbeddings(x)",
        "x_out = BertLayer×2(x_mid)",
        "output 2 = BertPooler(x_out)",
        "each of encoder.layer.0 … encoder.layer.1 (BertLayer × 2):",
        "x_mid = LayerNorm(x + Dropout(Linear(BertSelfAttention(x))))",
        "x_out = LayerNorm(x_mid + Dropout(Linear(BertIntermediate(x_mid))))",
    ],
    # sa_layer_norm(attention_output + h), output_layer_norm(ffn_output + attention_output)
    "distilbert": [
        "x_mid = Embeddings(x)",
        "x_out = TransformerBlock×2(x_mid)",
        "each of transformer.layer.0 … transformer.layer.1 (TransformerBlock × 2):",
        "x_mid = LayerNorm(x + DistilBertSelfAttention(x))",
        "x_out = LayerNorm(x_mid + FFN(x_mid))",
    ],
    # layer 0's attn_norm is nn.Identity (its value is x_1 itself); layers 1 and 2 alike
    "modernbert": [
        # layer 0's attn_norm is nn.Identity (modeling_modernbert.py:298), read inside the branch:
        # attn_outputs = self.attn(self.attn_norm(hidden_states), ...); hidden_states + attn_output
        "x_1 = ModernBertEmbeddings(x)",
        "x_2 = x_1 + ModernBertAttention(Identity(x_1), rotary_emb)",
        "x_3 = x_2 + ModernBertMLP(LayerNorm(x_2))",
        "x_4 = ModernBertEncoderLayer×2(x_3, rotary_emb)",
        "x_out = LayerNorm(x_4)",
        "each of layers.1 … layers.2 (ModernBertEncoderLayer × 2):",
        "x_mid = x + ModernBertAttention(LayerNorm(x), position_embeddings[0], position_embeddings[1])",
        "x_out = x_mid + ModernBertMLP(LayerNorm(x_mid))",
        "position_embeddings[0]: input 2, (1, 6, 8)",
        "position_embeddings[1]: input 3, (1, 6, 8)",
    ],
    # each stack: dropout(embed_tokens(ids)), then h + dropout(X(layer_norm(h))) for self-attention,
    # (the decoder's) EncDecAttention(encoder's output), DenseReluDense; final_layer_norm, dropout
    "t5": [
        "encoder (T5Stack):",
        "x_1 = Dropout(Embedding(x))",
        "x_2 = x_1 + Dropout(T5Attention(T5LayerNorm(x_1)))",
        "x_out = Dropout(T5LayerNorm(x_2 + Dropout(T5DenseActDense(T5LayerNorm(x_2)))))",
        "decoder:",
        "x_1 = Dropout(Embedding(x))",
        "x_2 = x_1 + Dropout(T5Attention(T5LayerNorm(x_1)))",
        "x_3 = x_2 + Dropout(T5Attention(T5LayerNorm(x_2), encoder))",
        "x_out = Dropout(T5LayerNorm(x_3 + Dropout(T5DenseActDense(T5LayerNorm(x_3)))))",
    ],
    # post-norm layers; embed_tokens(ids) * scale + embed_positions, layernorm_embedding, dropout; the
    # encoder's embed_positions reads inputs_embeds[:, :, -1] (modeling_bart.py, BartEncoder.forward),
    # so its embedding, read twice, is named
    "bart": [
        "encoder (BartEncoder):",
        "h = BartScaledWordEmbedding(x)",
        "x_1 = dropout(LayerNorm(add(h, embed_positions)))",
        "x_2 = LayerNorm(x_1 + dropout(BartAttention(x_1)))",
        "x_out = LayerNorm(x_2 + dropout(Linear(dropout(GELUActivation(Linear(x_2))))))",
        "decoder:",
        "x_1 = dropout(LayerNorm(add(BartScaledWordEmbedding(x), embed_positions)))",
        "x_2 = LayerNorm(x_1 + dropout(BartAttention(x_1)))",
        "x_3 = LayerNorm(x_2 + dropout(BartAttention(x_2, encoder)))",
        "x_out = LayerNorm(x_3 + dropout(Linear(dropout(GELUActivation(Linear(x_3))))))",
    ],
    # dropout(attention(layernorm_before(h))) + h; mlp's output + h; then layernorm, pooler beside
    "vit": [
        "x_1 = ViTEmbeddings(x)",
        "x_2 = x_1 + Dropout(ViTAttention(LayerNorm(x_1)))",
        "x_out = LayerNorm(x_2 + Dropout(ViTMLP(LayerNorm(x_2))))",
        "output 2 = ViTPooler(x_out)",
    ],
    # pre-norm layers: self_attn, (the decoder's) encoder_attn(encoder's output), fc2(act(fc1(h)));
    # layer_norm; the encoder starts gelu(conv2(gelu(conv1(features)))).permute + embed_positions
    "whisper": [
        "encoder (WhisperEncoder):",
        "x_1 = dropout(add(permute(GELU(Conv1d(GELU(Conv1d(x))))), embed_positions))",
        "x_2 = x_1 + dropout(WhisperAttention(LayerNorm(x_1)))",
        "x_out = LayerNorm(x_2 + dropout(Linear(dropout(GELUActivation(Linear(LayerNorm(x_2)))))))",
        "decoder:",
        "x_1 = dropout(add(Embedding(x), embed_positions))",
        "x_2 = x_1 + dropout(WhisperAttention(LayerNorm(x_1)))",
        "x_3 = x_2 + dropout(WhisperAttention(LayerNorm(x_2), encoder))",
        "x_out = LayerNorm(x_3 + dropout(Linear(dropout(GELUActivation(Linear(LayerNorm(x_3)))))))",
    ],
}


def _model_and_inputs(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    config, causal, inputs = CORPUS[name]
    model = (AutoModelForCausalLM if causal else AutoModel).from_config(config())
    # the decoder's ids are not the encoder's: one tensor for both would be one value in the graph
    return model, {k: DECODER_IDS if k == "decoder_input_ids" else v for k, v in inputs.items()}


@pytest.fixture(scope="module")
def built() -> Callable[[str], tuple[Trace, Graph]]:
    """Each model built and traced once for the module's tests: its trace and its graph."""
    found: dict[str, tuple[Trace, Graph]] = {}

    def get(name: str) -> tuple[Trace, Graph]:
        if name not in found:
            torch.manual_seed(0)
            model, inputs = _model_and_inputs(name)
            found[name] = traced(model, (), inputs)
        return found[name]

    return get


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_residual_its_skip_and_branches_and_each_layer_s_side_inputs_are_the_code_s(
    name: str, built: Callable[[str], tuple[Trace, Graph]]
) -> None:
    t, g = built(name)
    assert residuals(t, g) == RESIDUALS[name]
    assert [(t.calls[c].path, n) for c, n in g.beside] == BESIDE.get(name, [])
    assert len(t.residual_adds) == len(RESIDUALS[name])  # what the drawing counts: every stream's
    path, side = SIDE[name]
    assert side_inputs(t, g, path) == side


@pytest.mark.parametrize("name", list(CORPUS))
def test_each_model_s_formulas_are_its_code_s(name: str, built: Callable[[str], tuple[Trace, Graph]]) -> None:
    assert stream_formulas(built(name)[0]) == FORMULAS[name]


def test_every_model_of_the_corpus_has_its_expectations() -> None:
    assert set(RESIDUALS) == set(SIDE) == set(FORMULAS) == set(CORPUS)
