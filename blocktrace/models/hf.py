"""A Hugging Face model built from its config alone (`--hf CONFIG`): the model seam for transformers.

The config comes from transformers' own loading (a folder with a config.json, or a Hub id), with
remote code off. The model is built from it, never from weights: on the meta device at full size,
or at probe sizes on the CPU, where the config's sizes are set to the probe's. Its size symbols are
the config's: C = hidden size, H and Hkv heads, D head dim, F intermediate size, V vocabulary,
P positions, L layers, and B, T the token ids fed to it. No torch or transformers at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocktrace.errors import ConfigError, error_line
from blocktrace.models.block.config import MAX_ELEMENTS, MAX_LAYERS
from blocktrace.models.hf_hub import check_hub
from blocktrace.models.hf_inputs import MainInput, concrete_class, main_input
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
_ODD_PRIMES = (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73)
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
_DECODER_POSITIONS = "max_target_positions"  # Whisper's decoder: its P, where it has no other
_LAYERS = "num_hidden_layers"
_PARTIAL = ("rotary_pct", "partial_rotary_factor")
_ROPE = "rope_parameters"  # where transformers 5 keeps partial_rotary_factor (phi-2)
_ROTARY_DIM = "rotary_dim"  # GPT-J's: the dims of each head rotary turns
_START = "decoder_start_token_id"
_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id")
# GPT-2 calls it n_inner (None there means 4C); BART and Whisper encoder_ffn_dim, T5 d_ff
_INNER = ("intermediate_size", "n_inner", "encoder_ffn_dim", "d_ff")
_ENCODER, _DECODER = "encoder_", "decoder_"
_WINDOW = "sliding_window"  # Mistral's, Gemma2's: attention to the last W positions only
_EAGER = "eager"  # transformers' attention of matmuls and a softmax, which any device runs
_BATCHED_EXPERTS = "batched_mm"  # transformers' experts implementation of gathered weights and bmm
_DECODER_LAYERS = ("decoder_layers", "num_decoder_layers")  # BART's, T5's


def load_config(source: str, data: bytes | None = None) -> Any:
    """transformers' config for a folder holding config.json, or a Hub id; one-line errors. `data`:
    the folder's config.json as already read for the cache's key, so that the config traced is the one
    hashed even where the file is replaced meanwhile."""
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise ConfigError(f"--hf {source}: no config.json in that folder")
    if not path.exists() and (path.is_absolute() or source.startswith((".", "~"))):
        raise ConfigError(f"--hf {source}: no such folder")  # a path, not a Hub id
    # read and checked before transformers sees it, whose words for a bad field are its own
    raw = read_config_json(source, path / "config.json", data) if path.is_dir() else None
    try:
        from transformers import AutoConfig
    except ImportError as error:
        raise ConfigError("--hf needs transformers: pip install 'blocktrace-cli[hf]'") from error
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging

    logging.set_verbosity_error()  # its advice is for training and generation; blocktrace speaks for itself
    hub_logging.set_verbosity_error()  # a line per retry of a Hub it cannot reach: the error says it once
    if raw is None:
        check_hub(source)
    try:
        config = (
            AutoConfig.from_pretrained(source, trust_remote_code=False)
            if raw is None
            else _from_fields(source, raw)
        )
    except ConfigError as error:
        raise ConfigError(f"--hf {source}: {error}") from error
    except Exception as error:  # OSError, ValueError, KeyError: transformers' words for what is wrong
        raise ConfigError(f"--hf {source}: {' '.join(str(error).split()) or error_line(error)}") from error
    check_fields(source, config.to_dict())  # a Hub id's config too, and transformers' own defaults
    return config


def _from_fields(source: str, raw: dict[str, Any]) -> Any:
    """The config a folder's config.json holds, from its fields as read, of the class its model_type
    names, as AutoConfig chooses it (a config class of remote code is never loaded)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        auto_map = raw.get("auto_map")
        if isinstance(auto_map, dict) and "AutoConfig" in auto_map:
            raise ConfigError("its config class is remote code, which blocktrace never runs")
        if model_type is None:
            raise ConfigError("config.json names no model_type")
        raise ConfigError(
            f"model type {model_type!r} is not one this transformers knows (pip install -U transformers)"
        )
    return CONFIG_MAPPING[model_type].from_dict(dict(raw), name_or_path=source)


@dataclass(frozen=True)
class HFSpec:
    """A transformers model from its config, fed `batch` x `seq` token ids."""

    source: str
    config: Any = field(compare=False)  # a transformers PretrainedConfig
    batch: int = 8
    seq: int = 1024
    dtype: Dtype = Dtype.float32
    dtype_source: str = "--dtype"  # where the dtype came from, as the header says it (config_dtype)
    attention: str | None = None  # the attn_implementation it is built with; None: transformers' default
    # D = hidden_size / num_attention_heads, as the code divides, in place of a head_dim it does not read
    heads_divide: bool = False
    source_seq: int | None = None  # an encoder-decoder's source tokens at full size; None: seq

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
    def from_config(
        cls, source: str, config: Any, batch: int, seq: int | None, dtype: Dtype | None
    ) -> HFSpec:
        """`seq` None: 1024 tokens, or fewer where the model has fewer positions; `dtype` None (no
        --dtype): the config's."""
        if seq is None:
            positions = getattr(config, _KEYS["P"], None) or getattr(config, _DECODER_POSITIONS, None)
            seq = min(1024, positions) if isinstance(positions, int) and positions > 0 else 1024
        if dtype is None:
            return cls(source, config, batch, seq, *config_dtype(config))
        return cls(source, config, batch, seq, dtype)

    @cached_property
    def main(self) -> MainInput:
        """What its forward is fed."""
        found = main_input(self.config, self.model_class())
        if found is None:
            raise ConfigError(
                f"--hf {self.source}: its forward takes an input blocktrace cannot build from a config "
                "(it builds token ids, pixel values and audio features); --module FILE.py:NAME traces a "
                "factory that builds it"
            )
        return found

    @cached_property
    def _values(self) -> dict[str, int]:
        """The config's sizes, by symbol."""
        found = {"B": self.batch, **({"T": self.seq} if self.main.tokens else {})}
        for symbol, key in _KEYS.items():
            value = getattr(self.config, key, None)
            if symbol == "P" and value is None:
                value = getattr(self.config, _DECODER_POSITIONS, None)
            if isinstance(value, int) and not isinstance(value, bool):
                found[symbol] = value
        if found.get("Hkv") == found.get("H"):
            del found["Hkv"]  # every head its own keys and values: no grouping for the probes to add
        found.update(self.main.values(self.config, self.seq if self.source_seq is None else self.source_seq))
        inner = next((k for k in _INNER if isinstance(getattr(self.config, k, None), int)), None)
        if inner is not None:
            found["F"] = getattr(self.config, inner)
        if "C" not in found or "H" not in found or found["H"] <= 0 or found["C"] % found["H"]:
            raise ConfigError(f"--hf {self.source}: no hidden_size and num_attention_heads that divide it")
        found.setdefault("D", found["C"] // found["H"])
        if self.heads_divide:
            found["D"] = found["C"] // found["H"]
        if "Hkv" in found and (found["Hkv"] <= 0 or found["H"] % found["Hkv"]):
            raise ConfigError(f"--hf {self.source}: num_attention_heads must divide by num_key_value_heads")
        return found

    @cached_property
    def symbols(self) -> SymbolSet:
        v = self._values
        heads = (_HKV, _G) if "Hkv" in v else (_H,)
        h = (("Hkv", 1), ("G", 1)) if "Hkv" in v else (("H", 1),)
        composites = []
        partial = self._rotary_share < 1
        basis = [_B, *((_T,) if "T" in v else ()), *heads, _D_PARTIAL if partial else _D]
        if v["C"] == v["H"] * v["D"]:
            composites.append(Composite("C", "hidden_size", (*h, ("D", 1))))
        else:
            basis.append(_C)
        if "Hkv" in v:
            composites.append(Composite("H", "num_attention_heads", h))
        basis += [s for s in (_F, _V, _P) if s.name in v]
        basis += _fresh_primes(self.main.basis, basis)
        composites += self.main.composites
        return SymbolSet(tuple(basis), tuple(composites), _ORDER)

    @cached_property
    def _rotary_share(self) -> Fraction:
        """The share of each head rotary embeddings turn: 1 unless the config says less."""
        rope = getattr(self.config, _ROPE, None)
        found = [getattr(self.config, k, None) for k in _PARTIAL]
        found += [rope.get(k) for k in _PARTIAL] if isinstance(rope, dict) else []
        rotary = getattr(self.config, _ROTARY_DIM, None)
        if isinstance(rotary, int) and not isinstance(rotary, bool) and 0 < rotary < self._values["D"]:
            found.append(Fraction(rotary, self._values["D"]))
        return min(
            (Fraction(f) for f in found if isinstance(f, float | Fraction) and 0 < f < 1), default=Fraction(1)
        )

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
        if "Hkv" not in self._values and isinstance(getattr(self.config, _KEYS["Hkv"], None), int):
            settings[_KEYS["Hkv"]] = values["H"]  # as many as the query heads, in every probe too
        if "P" in values and getattr(self.config, _KEYS["P"], None) is None:
            settings[_DECODER_POSITIONS] = settings.pop(_KEYS["P"])
        settings.update(self.main.settings(values))
        if isinstance(getattr(self.config, _ROTARY_DIM, None), int) and "D" in values:
            settings[_ROTARY_DIM] = int(values["D"] * self._rotary_share)  # D is a multiple of 8: whole
        if "F" in self._values:
            inner = next(k for k in _INNER if isinstance(getattr(self.config, k, None), int))
            settings[inner] = values["F"]
        raw = self.config.to_dict()
        for key, value in settings.items():
            name = self.config.attribute_map.get(key, key)
            if name not in raw and _read_only(self.config, name):
                continue  # derived by the config from what is set (Falcon's head_dim)
            twin = _DECODER + name.removeprefix(_ENCODER)
            if name.startswith(_ENCODER) and raw.get(twin) == raw.get(name):
                raw[twin] = value  # BART's, Whisper's decoder, as big as the encoder
            raw[name] = value
        for key in _DECODER_LAYERS:
            if isinstance(raw.get(key), int) and layers < self.layers:
                raw[key] = min(layers, raw[key])
        for key in _TOKEN_IDS:  # a special token past a probe's tiny vocabulary names no row: none
            if isinstance(raw.get(key), int) and raw[key] >= values.get("V", raw[key] + 1):
                raw[key] = 0 if key == _START else None  # Whisper's start token must be an int
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

    @cached_property
    def _batched_experts(self) -> bool:
        """Whether its MoE experts run transformers' batched_mm implementation: the default,
        grouped_mm, has no float32 kernel on the meta device and none at the probes' odd sizes on
        the CPU. batched_mm gathers each token's expert weights and multiplies them in one batch: the
        same shapes in and out of the experts, and the same multiply-adds."""
        cls = concrete_class(self.config, self.model_class())
        can_set = getattr(cls, "_can_set_experts_implementation", None)
        return cls is not None and can_set is not None and bool(can_set())

    @property
    def notes(self) -> tuple[str, ...]:
        """What the user is told once, beside the trace, of how the model was built."""
        found = []
        if self._batched_experts:
            found.append(
                f"the MoE experts run transformers' {_BATCHED_EXPERTS} experts implementation (its default, "
                "grouped_mm, cannot run on the meta device at these dtypes and sizes); activations count "
                "each token's gathered expert weights"
            )
        window = getattr(self.config, _WINDOW, None)
        used = getattr(self.config, "use_sliding_window", True) is not False  # Qwen2-MoE's off switch
        if isinstance(window, int) and not isinstance(window, bool) and window > 0 and used:
            # transformers' sliding-window layers mask (B, 1, T, T) and keep the last W - 1 positions
            found.append(
                f"the sliding window ({_WINDOW} = {window}) is the size of no shape, so no dim is named "
                "for it: the mask is (B, 1, T, T), the window in its values, and where T is longer the "
                f"cache keeps the last W - 1 = {window - 1} positions, shown as that number"
            )
        return tuple(found)

    def with_source(self, length: int) -> HFSpec:
        """The model on `length` source tokens (raises ConfigError where it reads none)."""
        if not (self.main.encoder_decoder and self.main.name == "input_ids"):
            raise ConfigError(
                f"--source-seq does not apply to --hf {self.source}: it is no encoder-decoder reading "
                "source tokens (--seq sets its input's length)"
            )
        if length > self.sizes.get("P", length):
            raise ConfigError(
                f"--source-seq {length} is longer than the model's max_position_embeddings "
                f"({self.sizes['P']})"
            )
        return replace(self, source_seq=length)

    def related(self) -> tuple[HFSpec, str] | None:
        """Its sizes related as code that reads no head_dim relates them (GPT-2's
        embed_dim // num_heads), and why, for where the config's head_dim is another; else None."""
        v = self._values
        if self.heads_divide or v["D"] == v["C"] // v["H"]:
            return None
        return replace(self, heads_divide=True), (
            f"the head dim is named C/H ({v['C'] // v['H']}), hidden_size / num_attention_heads, as the "
            f"model's code divides: it does not run at the probes' sizes with the config's head_dim "
            f"({v['D']})"
        )

    def meta_alternative(self) -> tuple[HFSpec, str] | None:
        """The model with transformers' eager attention, and why, for where its default attention
        cannot run on the meta device (BART's sdpa mask asks `.item()` whether it may skip the mask):
        eager runs every layer as the default does, its attention as matmuls and a softmax."""
        if self.attention is not None:
            return None
        return replace(self, attention=_EAGER), (
            f'traced with attn_implementation="{_EAGER}", which transformers offers for this model: '
            "its default attention cannot run on the meta device"
        )

    def build(self, sizes: dict[str, int], device: str, layers: int) -> nn.Module:
        import torch

        config = self.at(sizes, layers)
        experts = {"experts_implementation": _BATCHED_EXPERTS} if self._batched_experts else {}
        if self.attention is not None:
            experts["attn_implementation"] = self.attention
        try:
            with torch.device(device):
                model = self.model_class().from_config(config, dtype=self.dtype.to_torch(), **experts)
        except Exception as error:  # transformers' checks of a config, in any exception type
            raise ConfigError(f"--hf {self.source}: {error_line(error, named=True)}") from error
        return model.eval()

    def inputs(self, sizes: dict[str, int], device: str) -> tuple[tuple, dict[str, Any]]:
        return self.main.tensors(sizes, device, self.dtype.to_torch())

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
            "dtype_source": self.dtype_source,
            **({"attention": self.attention} if self.attention is not None else {}),
        }


def config_dtype(config: Any) -> tuple[Dtype, str]:
    """The dtype a config says its weights are in (transformers 5 calls it `dtype`, 4 `torch_dtype`;
    read from the config's own fields, since transformers 5 warns at `config.torch_dtype`), and how
    the header says where it came from; float32 where it names none blocktrace builds at."""
    fields = vars(config)
    named = next((fields[k] for k in ("dtype", "torch_dtype") if fields.get(k) is not None), None)
    if named is None:
        return Dtype.float32, "the config names no dtype"
    name = str(named).removeprefix("torch.")
    if name in set(Dtype):
        return Dtype(name), "the config's"
    return Dtype.float32, f"not the config's {name}"


def _fresh_primes(symbols: tuple[Symbol, ...], basis: list[Symbol]) -> list[Symbol]:
    """`symbols` with probe primes that no symbol of `basis` takes in the same probe: the smallest
    free odd primes, the second probe's above the first's."""
    used = [{f for s in basis for f in (s.primes[i], *_factors(s.step))} for i in (0, 1)]
    fresh = []
    for symbol in symbols:
        first = next(p for p in _ODD_PRIMES if p not in used[0])
        second = next(p for p in _ODD_PRIMES if p > first and p not in used[1])
        used[0].add(first)
        used[1].add(second)
        fresh.append(replace(symbol, primes=(first, second)))
    return fresh


def _factors(n: int) -> tuple[int, ...]:
    return tuple(p for p in range(2, n + 1) if n % p == 0 and all(p % q for q in range(2, p)))


def _read_only(config: Any, name: str) -> bool:
    """Whether `name` is a property of the config's class that cannot be set."""
    found = getattr(type(config), name, None)
    return isinstance(found, property) and found.fset is None
