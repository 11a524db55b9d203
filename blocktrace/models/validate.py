"""The gate of a `--hf` config: its sizes and numbers checked before transformers or torch see them,
each bad field named in one sentence (ConfigError, exit 2). A zero, a negative, a string or a size
torch cannot allocate would otherwise end in a ZeroDivisionError, a meta kernel's words or a torch
UserWarning. No torch or transformers at import.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from blocktrace.errors import ConfigError
from blocktrace.models.block.config import MAX_ELEMENTS, MAX_LAYERS

# the sizes a config may give (transformers' names and their aliases in the families blocktrace reads,
# encoder-decoders' included); each, where it is set, a whole number of at least 1 (null where the
# config derives it: n_inner, head_dim, T5's num_decoder_layers)
LAYERS = (
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "num_decoder_layers",
    "encoder_layers",
    "decoder_layers",
)
SIZES = (
    "hidden_size", "n_embd", "d_model",
    "num_attention_heads", "n_head", "num_heads", "num_key_value_heads",
    "encoder_attention_heads", "decoder_attention_heads",
    "head_dim", "d_kv", "intermediate_size", "n_inner", "d_ff", "encoder_ffn_dim", "decoder_ffn_dim",
    "vocab_size", "type_vocab_size", "max_position_embeddings", "n_positions",
    "relative_attention_num_buckets", "relative_attention_max_distance", "pretraining_tp",
    *LAYERS,
)  # fmt: skip
_NULLABLE = frozenset(
    {"head_dim", "n_inner", "num_key_value_heads", "intermediate_size", "num_decoder_layers"}
)
# special tokens: null, a token id (eos_token_id may be a list of them); the padding row is an
# embedding's row, so it is within the vocabulary (counted from its end where negative, as torch's)
TOKENS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "cls_token_id",
    "decoder_start_token_id",
)
_PAD = "pad_token_id"
_CHUNK = "chunk_size_feed_forward"  # 0: the MLP in one piece; else the tokens it takes at a time
# numbers a forward divides by or raises to a power; each, where set, finite and above 0
NUMBERS = ("rope_theta", "layer_norm_eps", "rms_norm_eps", "layer_norm_epsilon", "rotary_emb_base")
_FRACTIONS = ("partial_rotary_factor", "rotary_pct")  # in (0, 1]
_MAX_CONFIG_BYTES = 16 * 2**20  # a config.json is a few KiB


def read_config_json(source: str, path: Path, data: bytes | None = None) -> dict[str, Any]:
    """The JSON object in `path`, checked; refused in one sentence where it is not one (null, a list).
    `data`: the file's bytes as already read (and hashed for the cache's key), parsed in its place."""
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_CONFIG_BYTES + 1)
        except OSError as error:
            raise ConfigError(f"--hf {source}: cannot read config.json: {error.strerror or error}") from error
    if len(data) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"--hf {source}: config.json is over {_MAX_CONFIG_BYTES // 2**20} MiB")
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise ConfigError(f"--hf {source}: config.json is not JSON ({type(error).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--hf {source}: config.json must hold a JSON object, not {_json_type(raw)}")
    check_fields(source, raw)
    return raw


def check_fields(source: str, fields: Mapping[str, Any]) -> None:
    """Refuse the first field of `fields` that no model could be built from, naming it."""
    for key in SIZES:
        if key not in fields or (fields[key] is None and key in _NULLABLE):
            continue
        value = fields[key]
        if not _whole(value):
            raise ConfigError(f"--hf {source}: {key} must be a whole number, not {_shown(value)}")
        if value < 1:
            raise ConfigError(f"--hf {source}: {key} must be at least 1, not {value}")
        if value > MAX_ELEMENTS:
            raise ConfigError(f"--hf {source}: {key} ({value}) is over torch's limit of elements")
        if key in LAYERS and value > MAX_LAYERS:
            raise ConfigError(
                f"--hf {source}: {key} ({value}) is over the {MAX_LAYERS} layers blocktrace traces"
            )
    _check_tokens(source, fields)
    for key in (*NUMBERS, *_FRACTIONS):
        value = fields.get(key)
        if value is None:
            continue
        if not _number(value) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"--hf {source}: {key} must be a number above 0, not {_shown(value)}")
        if key in _FRACTIONS and value > 1:
            raise ConfigError(f"--hf {source}: {key} must be at most 1, not {value}")
    _check_weights(source, fields)


def _check_tokens(source: str, fields: Mapping[str, Any]) -> None:
    for key in TOKENS:
        value = fields.get(key)
        ids = value if isinstance(value, list) and key == "eos_token_id" else [value]
        if value is not None and not all(_whole(i) for i in ids):
            raise ConfigError(
                f"--hf {source}: {key} must be a token id (a whole number) or null, not {_shown(value)}"
            )
    vocab, pad = fields.get("vocab_size"), fields.get(_PAD)
    if _whole(vocab) and _whole(pad) and not -vocab <= pad < vocab:
        raise ConfigError(f"--hf {source}: {_PAD} ({pad}) is not a row of the vocabulary of {vocab}")
    chunk = fields.get(_CHUNK, 0)
    if not _whole(chunk) or chunk < 0:
        raise ConfigError(
            f"--hf {source}: {_CHUNK} must be a whole number of at least 0, not {_shown(chunk)}"
        )


def check_chunks(source: str, fields: Mapping[str, Any], seq: int) -> None:
    """Refuse a feed-forward chunk size that does not divide the sequence (transformers' chunking
    asserts it in the forward)."""
    chunk = fields.get(_CHUNK)
    if _whole(chunk) and chunk > 0 and seq % chunk:
        raise ConfigError(f"--hf {source}: {_CHUNK} ({chunk}) must divide --seq ({seq})")


_WIDE = (  # the sizes a weight matrix has as its other side, hidden_size the one
    "intermediate_size", "n_inner", "d_ff", "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size",
    "type_vocab_size", "max_position_embeddings", "n_positions",
)  # fmt: skip


def _check_weights(source: str, fields: Mapping[str, Any]) -> None:
    """Every weight matrix (hidden x hidden, hidden x intermediate, vocabulary x hidden) within
    torch's limit of elements: a hidden_size of 2**40 is refused here, not by a meta kernel."""
    width = next((fields[k] for k in ("hidden_size", "n_embd", "d_model") if _whole(fields.get(k))), None)
    if width is None:
        return
    for key in ("hidden_size", *_WIDE):
        other = fields.get(key)
        if _whole(other) and width * other > MAX_ELEMENTS:
            raise ConfigError(
                f"--hf {source}: a weight of {width} x {other} ({key}) is over torch's limit of elements"
            )
    heads, per_head = fields.get("num_heads"), fields.get("d_kv")  # T5's attention is heads x d_kv wide
    if _whole(heads) and _whole(per_head) and width * heads * per_head > MAX_ELEMENTS:
        raise ConfigError(
            f"--hf {source}: a weight of {width} x {heads} x {per_head} (num_heads x d_kv) is over torch's "
            "limit of elements"
        )


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: object) -> str:
    text = json.dumps(value) if value is None or isinstance(value, str | bool | int | float) else None
    return text[:40] if text is not None else _json_type(value)


def _json_type(value: object) -> str:
    names = {type(None): "null", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if _number(value) else type(value).__name__)
