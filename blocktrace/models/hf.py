"""A Hugging Face model built from its config alone (`--hf CONFIG`): the model seam for transformers.

The config comes from transformers' own loading (a folder with a config.json, or a Hub id), with
remote code off. The model is built from it, never from weights: on the meta device at full size,
or at probe sizes on the CPU, where the config's sizes are set to the probe's. Its size symbols are
the config's: C = hidden size, H and Hkv heads, D head dim, F intermediate size, V vocabulary,
P positions, L layers, and B, T the token ids fed to it. No torch or transformers at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocktrace.errors import ConfigError, error_line
from blocktrace.models.block.config import MAX_ELEMENTS, MAX_LAYERS
from blocktrace.models.spec import Dtype
from blocktrace.models.validate import check_fields, read_config_json
from blocktrace.sizes.symbols import Composite, Symbol, SymbolSet

if TYPE_CHECKING:
    from torch import nn

# Every probe size grows from the first probe to the second, so no product of sizes is equal in
# both. D is even, for rotary embeddings, and a multiple of 8 where rotary turns only a share of
# each head (GPT-NeoX's quarter), so that the share is still even.
_B = Symbol("B", "batch", (11, 13))
_T = Symbol("T", "sequence length", (13, 17))
_HKV = Symbol("Hkv", "num_key_value_heads", (3, 5))
_G = Symbol("G", "num_attention_heads / num_key_value_heads", (5, 7))
_H = Symbol("H", "num_attention_heads", (3, 5))
_D = Symbol("D", "head_dim", (7, 11), step=2)
_D_PARTIAL = Symbol("D", "head_dim", (7, 11), step=8)  # where rotary turns a share of each head
_C = Symbol("C", "hidden_size", (29, 31))  # only where hidden_size is not H * head_dim
_F = Symbol("F", "intermediate_size", (17, 19))
_V = Symbol("V", "vocab_size", (19, 23))
_P = Symbol("P", "max_position_embeddings", (23, 29))
_ORDER = ("B", "T", "C", "F", "H", "Hkv", "G", "D", "V", "P")

# the config's own name for each size (transformers' standard names: attribute_map translates them)
_KEYS = {
    "C": "hidden_size",
    "H": "num_attention_heads",
    "Hkv": "num_key_value_heads",
    "D": "head_dim",
    "V": "vocab_size",
    "P": "max_position_embeddings",
}
_LAYERS = "num_hidden_layers"
_PARTIAL = ("rotary_pct", "partial_rotary_factor")
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id")
_INNER = ("intermediate_size", "n_inner")  # GPT-2 calls it n_inner, and None there means 4C


def load_config(source: str) -> Any:
    """transformers' config for a folder holding config.json, or a Hub id; one-line errors."""
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise ConfigError(f"--hf {source}: no config.json in that folder")
    if not path.exists() and (path.is_absolute() or source.startswith((".", "~"))):
        raise ConfigError(f"--hf {source}: no such folder")  # a path, not a Hub id
    if path.is_dir():  # checked before transformers reads it, whose words for a bad field are its own
        read_config_json(source, path / "config.json")
    try:
        from transformers import AutoConfig
    except ImportError as error:
        raise ConfigError("--hf needs transformers: pip install 'blocktrace[hf]'") from error
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging

    logging.set_verbosity_error()  # its advice is for training and generation; blocktrace speaks for itself
    hub_logging.set_verbosity_error()  # a line per retry of a Hub it cannot reach: the error says it once
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except Exception as error:  # OSError, ValueError, KeyError: transformers' words for what is wrong
        raise ConfigError(f"--hf {source}: {' '.join(str(error).split()) or error_line(error)}") from error
    check_fields(source, config.to_dict())  # a Hub id's config too, and transformers' own defaults
    return config


@dataclass(frozen=True)
class HFSpec:
    """A transformers model from its config, fed `batch` x `seq` token ids."""

    source: str
    config: Any = field(compare=False)  # a transformers PretrainedConfig
    batch: int = 8
    seq: int = 1024
    dtype: Dtype = Dtype.float32

    def __post_init__(self) -> None:
        layers = getattr(self.config, _LAYERS, None)
        if isinstance(layers, int) and layers > MAX_LAYERS:
            raise ConfigError(f"--hf {self.source}: {layers} layers, over the {MAX_LAYERS} blocktrace traces")
        if self.sizes.get("P", self.seq) < self.seq:
            raise ConfigError(
                f"--seq {self.seq} is longer than the model's max_position_embeddings ({self.sizes['P']})"
            )
        v = self._values
        # the largest tensors such a forward makes: the logits or the MLP's, and a mask or scores
        largest = max(
            self.batch * self.seq * max(v.get(n, 1) for n in "CFV"), self.batch * v["H"] * self.seq**2
        )
        if largest > MAX_ELEMENTS:
            raise ConfigError(
                f"--batch {self.batch} x --seq {self.seq}: this model's tensors would be over torch's int64 "
                "limit of elements"
            )

    full_size_trace = True  # transformers' code may branch on sizes the probes never take

    @classmethod
    def from_config(cls, source: str, config: Any, batch: int, seq: int | None, dtype: Dtype) -> HFSpec:
        """`seq` None: 1024 tokens, or fewer where the model has fewer positions."""
        if seq is None:
            positions = getattr(config, _KEYS["P"], None)
            seq = min(1024, positions) if isinstance(positions, int) and positions > 0 else 1024
        return cls(source, config, batch, seq, dtype)

    @cached_property
    def _values(self) -> dict[str, int]:
        """The config's sizes, by symbol."""
        found = {"B": self.batch, "T": self.seq}
        for symbol, key in _KEYS.items():
            value = getattr(self.config, key, None)
            if isinstance(value, int) and not isinstance(value, bool):
                found[symbol] = value
        inner = next((k for k in _INNER if isinstance(getattr(self.config, k, None), int)), None)
        if inner is not None:
            found["F"] = getattr(self.config, inner)
        if "C" not in found or "H" not in found or found["H"] <= 0 or found["C"] % found["H"]:
            raise ConfigError(f"--hf {self.source}: no hidden_size and num_attention_heads that divide it")
        found.setdefault("D", found["C"] // found["H"])
        if "Hkv" in found and (found["Hkv"] <= 0 or found["H"] % found["Hkv"]):
            raise ConfigError(f"--hf {self.source}: num_attention_heads must divide by num_key_value_heads")
        return found

    @cached_property
    def symbols(self) -> SymbolSet:
        v = self._values
        heads = (_HKV, _G) if "Hkv" in v else (_H,)
        h = (("Hkv", 1), ("G", 1)) if "Hkv" in v else (("H", 1),)
        composites = []
        partial = any(
            isinstance(getattr(self.config, k, None), float) and getattr(self.config, k) < 1 for k in _PARTIAL
        )
        basis = [_B, _T, *heads, _D_PARTIAL if partial else _D]
        if v["C"] == v["H"] * v["D"]:
            composites.append(Composite("C", "hidden_size", (*h, ("D", 1))))
        else:
            basis.append(_C)
        if "Hkv" in v:
            composites.append(Composite("H", "num_attention_heads", h))
        basis += [s for s in (_F, _V, _P) if s.name in v]
        return SymbolSet(tuple(basis), tuple(composites), _ORDER)

    @property
    def sizes(self) -> dict[str, int]:
        v = self._values
        derived = {"G": v["H"] // v["Hkv"]} if "Hkv" in v else {}
        return {n: derived.get(n, v.get(n, 0)) for n in self.symbols.names}

    @property
    def layers(self) -> int:
        return int(getattr(self.config, _LAYERS, 1) or 1)

    def at(self, sizes: dict[str, int], layers: int) -> Any:
        """The config with its sizes set to `sizes` and `layers` layers."""
        values = self.symbols.values(sizes)
        settings: dict[str, Any] = {_LAYERS: layers}
        for symbol, key in _KEYS.items():
            if symbol in self._values and symbol not in ("B", "T"):
                settings[key] = values[symbol]
        if "F" in self._values:
            inner = next(k for k in _INNER if isinstance(getattr(self.config, k, None), int))
            settings[inner] = values["F"]
        raw = self.config.to_dict()
        for key, value in settings.items():
            raw[self.config.attribute_map.get(key, key)] = value
        for key in _TOKEN_IDS:  # a special token past a probe's tiny vocabulary names no row: none
            if isinstance(raw.get(key), int) and raw[key] >= values.get("V", raw[key] + 1):
                raw[key] = None
        for key, value in list(raw.items()):  # one entry per layer (Qwen2's layer_types): the first ones
            if isinstance(value, list) and len(value) == self.layers and layers < self.layers:
                raw[key] = value[:layers]
        try:
            return type(self.config).from_dict(raw)
        except Exception as error:  # transformers' validation of a config changed to these sizes
            raise ConfigError(f"--hf {self.source}: {str(error).strip().splitlines()[-1].strip()}") from error

    def model_class(self) -> Any:
        """AutoModelForCausalLM where the config's architectures name one of its classes, else AutoModel."""
        from transformers import AutoModel, AutoModelForCausalLM
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(self.config.model_type)
        return AutoModelForCausalLM if causal in (self.config.architectures or ()) else AutoModel

    def build(self, sizes: dict[str, int], device: str, layers: int) -> nn.Module:
        import torch

        config = self.at(sizes, layers)
        try:
            with torch.device(device):
                model = self.model_class().from_config(config, dtype=self.dtype.to_torch())
        except Exception as error:  # transformers' checks of a config, in any exception type
            raise ConfigError(f"--hf {self.source}: {error_line(error, named=True)}") from error
        return model.eval()

    def inputs(self, sizes: dict[str, int], device: str) -> tuple[tuple, dict[str, Any]]:
        import torch

        ids = torch.zeros(sizes["B"], sizes["T"], dtype=torch.long, device=device)
        return (ids,), {}

    def describe(self) -> dict[str, Any]:
        import transformers

        return {
            "hf": self.source,
            "model_type": self.config.model_type,
            "config": self.config.to_diff_dict(),
            "transformers": transformers.__version__,
            "batch": self.batch,
            "seq": self.seq,
            "dtype": self.dtype,
        }
