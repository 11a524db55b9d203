"""What the command line asked to trace: the built-in Block from its flags, or a model from one of
the sources in SOURCES (a user's module, a Hugging Face config). Each source is one entry: its
option, its own flags, the Block flags it reads, its spec and its cache key; the CLI derives its
options and flag checks from the table. It gives the cache its key without importing torch, and the
pipeline its model spec. No torch here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from blocktrace.models.spec import Dtype, ModelSpec

if TYPE_CHECKING:
    from blocktrace.models.block.config import BlockConfig


class Keyed(Protocol):
    """What the cache keys an entry by: a model spec, or a lighter stand-in that needs no torch."""

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HFKey:
    """The cache's key for a local Hugging Face config: its config.json's bytes, transformers'
    version, and the input; a Hub id is not cached (what it names can change)."""

    folder: str
    config_digest: str
    transformers: str
    batch: int
    seq: int | None
    dtype: Dtype | None  # None: the config's (its digest covers it)
    source_seq: int | None = None  # an encoder-decoder's source length; None: --seq
    config_json: bytes = field(default=b"", compare=False, repr=False)  # the bytes hashed, traced on a miss

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "config_json"}


@dataclass(frozen=True)
class ModelRequest:
    config: BlockConfig  # the Block flags; with another source only its dtype is read
    source: str | None = None  # a key of SOURCES; None: the built-in Block
    target: str | None = None  # the source's option: FILE.py:NAME, a config folder or Hub id
    flags: Mapping[str, Any] = field(default_factory=dict)  # its own flags, and the Block flags given

    def cache_key(self) -> Keyed | None:
        """What the cache keys this request by, or None: not cached."""
        from blocktrace.models.block.spec import BlockSpec  # here: --help reads this module's SOURCES

        return BlockSpec(self.config) if self.source is None else SOURCES[self.source].cache_key(self)

    def spec(self, key: Keyed | None = None) -> ModelSpec:
        """The model spec; imports what it names (the user's code, transformers). `key`: this request's
        cache_key, so that the model traced is the one keyed by (an HFKey's config.json as hashed)."""
        from blocktrace.models.block.spec import BlockSpec

        return BlockSpec(self.config) if self.source is None else SOURCES[self.source].spec(self, key)


@dataclass(frozen=True)
class Flag:
    """A command-line flag of a source, taking a value."""

    name: str  # the parameter's name; the flag is --name
    metavar: str
    help: str
    repeatable: bool = False

    @property
    def option(self) -> str:
        """The flag as typed: --source-seq for source_seq."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Source:
    """A kind of model the command line can name instead of the built-in Block."""

    option: Flag  # the flag that chooses it and names the model
    gives: str  # what gives the sizes in the Block flags' place, for the refusal of one
    spec: Callable[[ModelRequest, Keyed | None], ModelSpec]
    cache_key: Callable[[ModelRequest], Keyed | None]
    reads: tuple[str, ...] = ("dtype",)  # the Block flags it reads
    flags: tuple[Flag, ...] = ()  # its own flags, refused without it


def _module_spec(request: ModelRequest, key: Keyed | None) -> ModelSpec:
    from blocktrace.models.user_module import module_spec

    assert request.target is not None
    flags = request.flags
    inputs, dims = tuple(flags.get("input") or ()), tuple(flags.get("dim") or ())
    return module_spec(request.target, flags.get("kwargs"), inputs, dims, request.config.dtype)


def _not_cached(request: ModelRequest) -> None:
    """A user's module is not cached: it imports torch itself, which is all a cache hit would save."""
    return None


def _hf_spec(request: ModelRequest, key: Keyed | None) -> ModelSpec:
    from blocktrace.models.hf import HFSpec, load_config
    from blocktrace.models.validate import check_chunks

    assert request.target is not None
    config = load_config(request.target, key.config_json if isinstance(key, HFKey) else None)
    batch, seq = request.flags.get("batch", 8), request.flags.get("seq")
    spec = HFSpec.from_config(request.target, config, batch, seq, request.flags.get("dtype"))
    source = source_length(request.flags.get("source_seq"))
    if source is not None:
        spec = spec.with_source(source)
    check_chunks(request.target, config.to_dict(), spec.seq)
    return spec


def _hf_key(request: ModelRequest) -> HFKey | None:
    import hashlib  # here, not at the top: --help reads this module, and these cost it time
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    config_file = Path(request.target or "") / "config.json"
    try:
        data = config_file.read_bytes()
        transformers = version("transformers")
    except (OSError, PackageNotFoundError):
        return None
    folder, digest = str(config_file.parent.resolve()), hashlib.sha256(data).hexdigest()
    batch, seq = request.flags.get("batch", 8), request.flags.get("seq")
    source = source_length(request.flags.get("source_seq"))
    return HFKey(folder, digest, transformers, batch, seq, request.flags.get("dtype"), source, data)


def source_length(value: str | int | None) -> int | None:
    """--source-seq's value (the command line's text, the API's int) as a length (raises
    ConfigError), or None where it is not given."""
    from blocktrace.errors import ConfigError

    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) <= 0:
        raise ConfigError(f"--source-seq must be a positive integer, got {value!r}")
    return int(text)


SOURCES: dict[str, Source] = {
    "module": Source(
        Flag(
            "module",
            "FILE.py:NAME",
            "Trace your own model instead of the built-in Block: NAME in FILE.py (or package.module:NAME) "
            "is an nn.Module class (give --input, and --kwargs) or a function whose int parameters are the "
            "sizes, returning (module, args). This imports and runs that code.",
        ),
        "the code",
        _module_spec,
        _not_cached,
        flags=(
            Flag(
                "kwargs",
                "JSON",
                "With --module CLASS: its constructor's arguments, e.g. '{\"n_embd\": 768}'.",
            ),
            Flag(
                "input",
                "[NAME=]SHAPE",
                "With --module CLASS: the shape of a positional input, e.g. 8,1024,768, or 8,1024:long for "
                "token ids, or NAME=SHAPE for a keyword input of forward, e.g. mask=8,1024:bool; "
                "repeatable, positional ones in order. Floats are at --dtype.",
                repeatable=True,
            ),
            Flag(
                "dim",
                "NAME=SIZE",
                "With --module FUNCTION: a size in place of its parameter's default, e.g. T=4096; "
                "repeatable.",
                repeatable=True,
            ),
        ),
    ),
    "hf": Source(
        Flag(
            "hf",
            "CONFIG",
            "Trace a Hugging Face model built from its config alone (a folder with config.json, or a Hub "
            "id; no weights, no remote code) on --batch x --seq token ids (--seq: 1024, or the model's "
            "positions if fewer). Needs pip install 'blocktrace-cli[hf]'.",
        ),
        "the config",
        _hf_spec,
        _hf_key,
        reads=("batch", "seq", "dtype"),
        flags=(
            Flag(
                "source_seq",
                "S",
                "With --hf of an encoder-decoder that reads token ids (T5, BART): the encoder's source "
                "length S at full size, --seq being the decoder's; default: --seq.",
            ),
        ),
    ),
}
