"""What the command line asked to trace: a built-in Block family from flags, a user's module
(`--module`), or a Hugging Face config (`--hf`). It gives the cache its key without importing torch,
and the pipeline its model spec. No torch here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from blocktrace.models.block.config import BlockConfig
from blocktrace.models.block.spec import BlockSpec
from blocktrace.models.spec import ModelSpec


@dataclass(frozen=True)
class HFKey:
    """The cache's key for a local Hugging Face config: its config.json's bytes, transformers'
    version, and the input; a Hub id is not cached (what it names can change)."""

    folder: str
    config_digest: str
    transformers: str
    batch: int
    seq: int | None
    dtype: str

    def describe(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class ModelRequest:
    config: BlockConfig  # the Block flags; with --module or --hf only its dtype is read
    module: str | None = None
    kwargs: str | None = None
    inputs: tuple[str, ...] = ()
    dims: tuple[str, ...] = ()
    hf: str | None = None
    batch: int = 8  # with --hf: the token ids fed to it
    seq: int | None = None  # with --hf; None: 1024, or the model's positions if fewer

    def cache_key(self) -> BlockSpec | HFKey | None:
        """What the cache keys this request by, or None: not cached. A user's module is not: it
        imports torch itself, which is all a cache hit would save."""
        if self.module is not None:
            return None
        if self.hf is None:
            return BlockSpec(self.config)
        config_file = Path(self.hf) / "config.json"
        try:
            digest = hashlib.sha256(config_file.read_bytes()).hexdigest()
            transformers = version("transformers")
        except (OSError, PackageNotFoundError):
            return None
        return HFKey(
            str(config_file.parent.resolve()), digest, transformers, self.batch, self.seq, self.config.dtype
        )

    def spec(self) -> ModelSpec:
        """The model spec; imports what it names (the user's code, transformers)."""
        if self.module is not None:
            from blocktrace.models.user_module import module_spec

            return module_spec(self.module, self.kwargs, self.inputs, self.dims, self.config.dtype)
        if self.hf is not None:
            from blocktrace.models.hf import HFSpec, load_config

            config = load_config(self.hf)
            return HFSpec.from_config(self.hf, config, self.batch, self.seq, self.config.dtype)
        return BlockSpec(self.config)
