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
from typing import Any

from blocktrace.errors import ConfigError
from blocktrace.models.block.config import MAX_ELEMENTS

# the sizes a config may give (transformers' names and their aliases in the families blocktrace reads);
# each, where it is set, a whole number of at least 1 (n_inner and head_dim may be null: derived)
SIZES = (
    "hidden_size", "n_embd", "d_model",
    "num_attention_heads", "n_head", "num_key_value_heads",
    "head_dim", "intermediate_size", "n_inner",
    "vocab_size", "max_position_embeddings", "n_positions", "num_hidden_layers", "n_layer",
)  # fmt: skip
_NULLABLE = frozenset({"head_dim", "n_inner", "num_key_value_heads", "intermediate_size"})
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
    for key in (*NUMBERS, *_FRACTIONS):
        value = fields.get(key)
        if value is None:
            continue
        if not _number(value) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"--hf {source}: {key} must be a number above 0, not {_shown(value)}")
        if key in _FRACTIONS and value > 1:
            raise ConfigError(f"--hf {source}: {key} must be at most 1, not {value}")
    _check_weights(source, fields)


def _check_weights(source: str, fields: Mapping[str, Any]) -> None:
    """Every weight matrix (hidden x hidden, hidden x intermediate, vocabulary x hidden) within
    torch's limit of elements: a hidden_size of 2**40 is refused here, not by a meta kernel."""
    width = next((fields[k] for k in ("hidden_size", "n_embd", "d_model") if _whole(fields.get(k))), None)
    if width is None:
        return
    for key in ("hidden_size", "intermediate_size", "n_inner", "vocab_size", "max_position_embeddings"):
        other = fields.get(key)
        if _whole(other) and width * other > MAX_ELEMENTS:
            raise ConfigError(
                f"--hf {source}: a weight of {width} x {other} ({key}) is over torch's limit of elements"
            )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: object) -> str:
    text = json.dumps(value) if value is None or isinstance(value, str | bool | int | float) else None
    return text[:40] if text is not None else _json_type(value)


def _json_type(value: object) -> str:
    names = {type(None): "null", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if _number(value) else type(value).__name__)
