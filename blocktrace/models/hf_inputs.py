"""What a transformers model's forward takes, built from its config: the model class's
`main_input_name` says which input it is (token ids, an image's pixels, audio features), and an
encoder-decoder is fed `decoder_input_ids` beside it. Each input's dims are size symbols, scaled in
the probes through the config's own names. No torch or transformers at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocktrace.sizes.symbols import Composite, Symbol

# The probe primes here are placeholders: the spec gives each the smallest ones its basis leaves free.
_GRID = Symbol("N", "image_size / patch_size: patches a side", (5, 7))
_PATCH = Symbol("Pz", "patch_size", (19, 23))
_CHANNELS = Symbol("Ch", "num_channels", (13, 17))
_MELS = Symbol("M", "num_mel_bins", (5, 7))
_SOURCE = Symbol("S", "max_source_positions: audio frames / 2", (29, 31))
# an encoder-decoder's source tokens: --seq at full size, as the target's, but sizes of their own in
# the probes, so that what the encoder made (B, S, C) is told apart from the decoder's (B, T, C)
_SOURCE_TOKENS = Symbol("S", "source length: the encoder's tokens (--seq)", (29, 31))
_IMAGE = Composite("I", "image_size", (("N", 1), ("Pz", 1)))
# Whisper's two convolutions, the second of stride 2, turn 2S frames into S positions
_FRAMES_PER_POSITION = 2


@dataclass(frozen=True)
class MainInput:
    """The model's main input: its name, the size symbols of its dims, and their config names."""

    name: str  # "input_ids", "pixel_values", "input_features"
    encoder_decoder: bool  # fed decoder_input_ids too

    @property
    def tokens(self) -> bool:
        """Whether token ids of B x T go in somewhere (the input, or the decoder's)."""
        return self.name == "input_ids" or self.encoder_decoder

    @property
    def basis(self) -> tuple[Symbol, ...]:
        if self.name == "pixel_values":
            return (_GRID, _PATCH, _CHANNELS)
        if self.name == "input_features":
            return (_MELS, _SOURCE)
        return (_SOURCE_TOKENS,) if self.encoder_decoder else ()

    @property
    def composites(self) -> tuple[Composite, ...]:
        return (_IMAGE,) if self.name == "pixel_values" else ()

    def values(self, config: Any, seq: int) -> dict[str, int]:
        """The config's sizes of this input's symbols (an encoder-decoder's source tokens: `seq`)."""
        if self.name == "pixel_values":
            side, patch = _square(config.image_size), _square(config.patch_size)
            return {"N": side // patch, "Pz": patch, "Ch": config.num_channels}
        if self.name == "input_features":
            return {"M": config.num_mel_bins, "S": config.max_source_positions}
        return {"S": seq} if self.encoder_decoder else {}

    def settings(self, values: dict[str, int]) -> dict[str, Any]:
        """The config entries that set this input's sizes to `values` (every symbol's value)."""
        if self.name == "pixel_values":
            return {"image_size": values["I"], "patch_size": values["Pz"], "num_channels": values["Ch"]}
        if self.name == "input_features":
            return {"num_mel_bins": values["M"], "max_source_positions": values["S"]}
        return {}

    def tensors(self, sizes: dict[str, int], device: str, dtype: Any) -> tuple[tuple, dict[str, Any]]:
        """The forward's inputs at basis `sizes`: the main one first, its first parameter in every
        model class; floats at `dtype`, token ids as int64."""
        import torch

        found: dict[str, Any] = {}
        b = sizes["B"]
        if self.name == "pixel_values":
            side = sizes["N"] * sizes["Pz"]
            found[self.name] = torch.zeros(b, sizes["Ch"], side, side, dtype=dtype, device=device)
        elif self.name == "input_features":
            frames = _FRAMES_PER_POSITION * sizes["S"]
            found[self.name] = torch.zeros(b, sizes["M"], frames, dtype=dtype, device=device)
        else:
            tokens = sizes["S"] if self.encoder_decoder else sizes["T"]
            found[self.name] = torch.zeros(b, tokens, dtype=torch.long, device=device)
        if self.encoder_decoder:
            found["decoder_input_ids"] = torch.zeros(b, sizes["T"], dtype=torch.long, device=device)
        return (found.pop(self.name),), found


def concrete_class(config: Any, model_class: Any) -> Any:
    """The class the auto class `model_class` builds for `config`, or None where it names none."""
    try:
        return model_class._model_mapping[type(config)]
    except (KeyError, AttributeError):
        return None


def main_input(config: Any, model_class: Any) -> MainInput | None:
    """The main input of the concrete class the auto class `model_class` builds for `config`; None
    where it is none blocktrace can build."""
    name = getattr(concrete_class(config, model_class), "main_input_name", "input_ids")
    if name not in ("input_ids", "pixel_values", "input_features"):
        return None
    return MainInput(name, bool(getattr(config, "is_encoder_decoder", False)))


def _square(size: Any) -> int:
    """An image or patch size given as one side, or as (height, width) of a square."""
    return int(size[0] if isinstance(size, list | tuple) else size)
