"""What to trace, from keywords named as the command line names its flags (`n_embd=`, `preset=`,
`hf=`, `module=`, ...): the one place a request is checked, for the API and the CLI alike. Only the
keywords given are passed: a flag the chosen model does not read is refused, not ignored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from blocktrace.errors import ConfigError
from blocktrace.models.block.config import BlockConfig
from blocktrace.models.block.families import Preset
from blocktrace.models.request import SOURCES, ModelRequest

# the Block's flags: every field of its config but what the family alone decides
BLOCK_FLAGS: tuple[str, ...] = tuple(f.name for f in fields(BlockConfig) if f.name != "norm_weights")
SOURCE_FLAGS: tuple[str, ...] = tuple(
    flag.name for source in SOURCES.values() for flag in (source.option, *source.flags)
)


def block_config(preset: str = Preset.nanochat, **flags: Any) -> BlockConfig:
    """The validated config for the Block flags (raises ConfigError): the preset, with every flag
    given in place of its choice."""
    if flags.get("mlp_hidden") is not None and flags["mlp_hidden"] <= 0:
        raise ConfigError(f"--mlp-hidden must be a positive integer, got {flags['mlp_hidden']}")
    return BlockConfig.from_preset(preset, **flags)


def model_request(given: Mapping[str, Any]) -> ModelRequest:
    """The request of the flags `given` (name -> value, those given only; raises ConfigError)."""
    unknown = sorted(set(given) - set(BLOCK_FLAGS) - set(SOURCE_FLAGS))
    if unknown:
        raise ConfigError(
            f"unknown keyword {unknown[0]!r}: a model is named by {', '.join(SOURCES)} or the Block's "
            f"flags ({', '.join(BLOCK_FLAGS)})"
        )
    chosen = [name for name in SOURCES if given.get(name) is not None]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join('--' + name for name in chosen)} name two models; give one")
    for name, source in SOURCES.items():
        used = [f.name for f in source.flags if given.get(f.name) not in (None, [], ())]
        if used and name not in chosen:
            raise ConfigError(f"--{used[0].replace('_', '-')} is for --{name}")
    block = {name: given[name] for name in BLOCK_FLAGS if name in given}
    if not chosen:
        return ModelRequest(block_config(**block))
    name, source = chosen[0], SOURCES[chosen[0]]
    extra = [flag for flag in block if flag not in source.reads]
    if extra:
        flag = "--" + extra[0].replace("_", "-")
        raise ConfigError(f"{flag} does not apply with --{name}: {source.gives} gives the model")
    # the model's own sizes are not the Block's: its flags' checks do not apply
    own = {f.name: given.get(f.name) for f in source.flags}
    read = {flag: block[flag] for flag in source.reads if flag in block}
    dtype = {"dtype": block["dtype"]} if "dtype" in block else {}
    return ModelRequest(block_config(**dtype), name, given[name], {**own, **read})
