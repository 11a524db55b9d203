"""A user's own model (`--module FILE.py:NAME` or `package.module:NAME`): the model seam for code
blocktrace did not write. It imports and runs that code.

NAME is an nn.Module class, built with `--kwargs` and called with tensors of the `--input` shapes
(its shapes are shown as numbers), or a function whose parameters are the sizes, each with an int
default, returning the module and its inputs: then its parameter names are the size symbols, and the
probes call it at prime sizes to name every dimension, as for the built-in Block. Where a size must
divide another (C by H for the head dim, as the code's own views show), the probes keep it so, and
the quotient is named "C/H".
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import count, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocktrace.errors import ConfigError, TraceError, error_line
from blocktrace.models.block.config import MAX_ELEMENTS
from blocktrace.models.divisors import with_divisors
from blocktrace.models.spec import Dtype
from blocktrace.sizes.symbols import Composite, Symbol, SymbolSet

if TYPE_CHECKING:
    from torch import nn


# --input dtypes, by the names people write
INPUT_DTYPES = {
    "float": "float32", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "half": "float16",
    "long": "int64", "int64": "int64", "int": "int32", "int32": "int32", "bool": "bool",
}  # fmt: skip
_NO_SYMBOLS = SymbolSet(())
_SIZE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_target(target: str) -> Any:
    """The object NAME of `FILE.py:NAME` or `package.module:NAME`; one-line errors, exit 2 for what
    is not there, exit 1 for the user's code failing as it is imported."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise ConfigError(f"--module {target}: expected FILE.py:NAME or package.module:NAME")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where), target)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as error:
            if error.name and where.startswith(error.name):
                raise ConfigError(f"--module {target}: no module named {where}") from error
            raise TraceError(f"--module {target}: importing {where} failed: {error}") from error
        except BaseException as error:  # SystemExit and GeneratorExit too: only Ctrl-C stops us
            if isinstance(error, KeyboardInterrupt):
                raise
            raise TraceError(
                f"--module {target}: importing {where} failed: {error_line(error, named=True)}"
            ) from error
    if not hasattr(module, name):
        public = [n for n in vars(module) if not n.startswith("_")]
        hint = f" (it has: {', '.join(public[:8])}{', …' if len(public) > 8 else ''})" if public else ""
        raise ConfigError(f"--module {target}: no {name} in {where}{hint}")
    return getattr(module, name)


def _import_file(path: Path, target: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"--module {target}: no such file {path}")
    module_name = f"blocktrace_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--module {target}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent.resolve()))  # so it imports its neighbours as when run there
    try:
        spec.loader.exec_module(module)
    except BaseException as error:  # sys.exit(0) at import is no success: only Ctrl-C stops us
        if isinstance(error, KeyboardInterrupt):
            raise
        raise TraceError(
            f"--module {target}: importing {path} failed: {error_line(error, named=True)}"
        ) from error
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def parse_input(text: str) -> tuple[str | None, tuple[int, ...], str | None]:
    """'8,1024,768' -> (None, (8, 1024, 768), None); 'mask=8,1024:bool' -> ('mask', (8, 1024), 'bool')."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    elif not _SIZE_NAME.fullmatch(name.strip()):
        raise ConfigError(f"--input {text}: expected SHAPE or NAME=SHAPE, with NAME a keyword of forward")
    shape_text, sep, dtype_text = rest.partition(":")
    dtype = None
    if sep:
        dtype = INPUT_DTYPES.get(dtype_text.strip())
        if dtype is None:
            raise ConfigError(
                f"--input {text}: unknown dtype {dtype_text!r} (one of {', '.join(INPUT_DTYPES)})"
            )
    pieces = [n.strip() for n in shape_text.split(",")]
    if not all(n.isascii() and n.isdigit() for n in pieces):
        raise ConfigError(f"--input {text}: expected sizes separated by commas, e.g. 8,1024,768")
    shape = tuple(int(n) for n in pieces)
    if math.prod(shape) > MAX_ELEMENTS:
        raise ConfigError(f"--input {text}: more elements than torch can index")
    return name.strip() or None, shape, dtype


def parse_kwargs(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"--kwargs: not JSON ({error})") from None
    except RecursionError:
        raise ConfigError("--kwargs: nested too deep to read") from None
    if not isinstance(value, dict):
        raise ConfigError("--kwargs: expected a JSON object, e.g. '{\"n_embd\": 768}'")
    return value


def parse_dims(texts: tuple[str, ...]) -> dict[str, int]:
    found = {}
    for text in texts:
        name, sep, value = text.partition("=")
        try:
            number = int(value)
        except ValueError:
            number = -1
        if not sep or not _SIZE_NAME.fullmatch(name.strip()) or not 0 < number <= MAX_ELEMENTS:
            raise ConfigError(f"--dim {text}: expected NAME=SIZE with a positive size, e.g. T=4096")
        found[name.strip()] = number
    return found


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _built(make: Callable[[], Any], what: str) -> Any:
    try:
        return make()
    except (ConfigError, TraceError, KeyboardInterrupt):
        raise
    except BaseException as error:  # SystemExit and GeneratorExit from the user's code too
        raise TraceError(f"{what} failed: {error_line(error, named=True)}") from error


def _initialised(module: Any, target: str) -> Any:
    """`module`, refused where its class's __init__ never called nn.Module's: nothing of it works."""
    if "_modules" not in vars(module):
        name = type(module).__name__
        raise ConfigError(f"--module {target}: {name}.__init__ does not call super().__init__()")
    return module


@dataclass(frozen=True)
class ModuleClassSpec:
    """An nn.Module class, built with keyword arguments and fed tensors of given shapes. It has no
    size symbols: its shapes are shown as numbers."""

    target: str
    cls: Any = field(compare=False)
    kwargs: dict[str, Any] = field(default_factory=dict, compare=False)
    shapes: tuple[tuple[str | None, tuple[int, ...], str | None], ...] = ()  # a name: a keyword input
    dtype: Dtype = Dtype.float32
    layers: int = 1
    full_size_trace = True

    @property
    def symbols(self) -> SymbolSet:
        return _NO_SYMBOLS

    @property
    def sizes(self) -> dict[str, int]:
        return {}

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ConfigError(f"--module {self.target}: a module class needs its inputs: --input 8,1024,768")

    def build(self, sizes: dict[str, int], device: str, layers: int) -> nn.Module:
        import torch

        def make() -> nn.Module:
            with torch.device(device):
                return self.cls(**self.kwargs)

        module = _built(make, f"building {self.target}({_kwargs_text(self.kwargs)})")
        return _initialised(module, self.target).to(_torch_dtype(self.dtype)).eval()

    def inputs(self, sizes: dict[str, int], device: str) -> tuple[tuple, dict[str, Any]]:
        import torch

        tensors, keywords = [], {}
        for name, shape, dtype in self.shapes:
            kind = _torch_dtype(dtype or self.dtype)
            maker = torch.randn if kind.is_floating_point else torch.zeros
            tensor = maker(shape, dtype=kind, device=device)
            if name is None:
                tensors.append(tensor)
            else:
                keywords[name] = tensor
        return tuple(tensors), keywords

    def describe(self) -> dict[str, Any]:
        return {
            "module": self.target,
            "kwargs": self.kwargs,
            "inputs": [_input_record(name, shape, dtype or self.dtype) for name, shape, dtype in self.shapes],
            "dtype": self.dtype,
        }


def _input_record(name: str | None, shape: tuple[int, ...], dtype: str) -> list[Any]:
    """[shape, dtype], and the keyword's name where the input is one."""
    return [list(shape), dtype, *([name] if name else [])]


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


@dataclass(frozen=True)
class FactorySpec:
    """A function whose int parameters are the sizes, returning (module, args) or (module, args,
    kwargs). `divides`: for a size, the sizes it must be a multiple of (C: H), which the probes keep."""

    target: str
    factory: Callable[..., Any] = field(compare=False)
    defaults: dict[str, int] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    dtype: Dtype = Dtype.float32
    divides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    step: int = 1  # every probe size a multiple of it: 2 where the code wants even sizes (rotary)
    layers: int = 1
    full_size_trace = True
    notes: tuple[str, ...] = field(default=(), compare=False)  # what the sizes could not name, and why
    _made: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def meaning(self) -> str:
        return f"parameter of {getattr(self.factory, '__name__', 'the factory')}()"

    @property
    def requested(self) -> dict[str, int]:
        return {**self.defaults, **self.dims}

    @cached_property
    def _parts(self) -> dict[str, tuple[str, ...]]:
        """Each size -> the basis symbols it is the product of: its own part, and its divisors' parts."""
        parts: dict[str, tuple[str, ...]] = {}

        def of(name: str) -> tuple[str, ...]:
            if name not in parts:
                inner = dict.fromkeys(p for d in self.divides.get(name, ()) for p in of(d))
                parts[name] = (*inner, _own_part(name, self.divides.get(name, ())))
            return parts[name]

        for name in self.defaults:
            of(name)
        return parts

    @cached_property
    def symbols(self) -> SymbolSet:
        # the parts most sizes are made of take the smallest primes, so that the probes stay small
        # (ordered by requested size first, a ViT's probes ran 30 times longer); among equals, the
        # order of their requested sizes, so that a size the code divides by a smaller one stays the
        # bigger (a floored quotient is checked by a third probe all the same). In the second probe
        # each part takes the next prime up, so every product of sizes grows
        owns = [self._parts[name][-1] for name in self.defaults]
        requested = self._requested_parts()
        shared = sorted(
            owns,
            key=lambda own: (-sum(own in parts for parts in self._parts.values()), requested.get(own, 0)),
        )
        primes = list(islice(_primes(), len(owns) + 1))
        pair = {own: (primes[i], primes[i + 1]) for i, own in enumerate(shared)}
        basis = []
        for name, own in zip(self.defaults, owns, strict=True):
            divisors = self.divides.get(name, ())
            meaning = f"{name} / {' * '.join(divisors)}" if divisors else self.meaning
            basis.append(Symbol(own, meaning, pair[own], self.step))
        composites = sorted(
            (
                Composite(name, self.meaning, tuple((p, 1) for p in parts))
                for name, parts in self._parts.items()
                if len(parts) > 1
            ),
            key=lambda c: -len(c.parts),
        )
        return SymbolSet(tuple(basis), tuple(composites), tuple(self.defaults), floors=True)

    @property
    def sizes(self) -> dict[str, int]:
        """The basis sizes at the requested sizes: each own part is the size over its divisors'."""
        found = self._requested_parts()
        if len(found) < len(self.defaults):
            name = next(n for n in self.defaults if self._parts[n][-1] not in found)
            below = math.prod(found.get(p, 1) for p in self._parts[name][:-1])
            raise ConfigError(
                f"--module {self.target}: {name} = {self.requested[name]} must be a multiple of "
                f"{' * '.join(self.divides[name])} = {below}"
            )
        return found

    def _requested_parts(self) -> dict[str, int]:
        """Each own part's size at the requested sizes, for the sizes whose divisors divide them."""
        requested = self.requested
        found: dict[str, int] = {}
        for name in sorted(self.defaults, key=lambda n: len(self._parts[n])):  # divisors first
            *inner, own = self._parts[name]
            if any(p not in found for p in inner):
                continue
            below = math.prod(found[p] for p in inner)
            if requested[name] % below == 0:
                found[own] = requested[name] // below
        return found

    def values(self, sizes: dict[str, int]) -> dict[str, int]:
        """The factory's arguments at basis sizes `sizes`."""
        return {name: math.prod(sizes[p] for p in self._parts[name]) for name in self.defaults}

    def _call(self, sizes: dict[str, int], device: str) -> tuple[nn.Module, tuple, dict[str, Any]]:
        key = (tuple(sorted(sizes.items())), device)
        if key not in self._made:
            self._made.clear()  # one at a time: a probe's module is not kept past its trace
            self._made[key] = self._make(sizes, device)
        return self._made[key]

    def _make(self, sizes: dict[str, int], device: str) -> tuple[nn.Module, tuple, dict[str, Any]]:
        import torch
        from torch import nn

        arguments = self.values(sizes)

        def make() -> Any:
            with torch.device(device):
                return self.factory(**arguments)

        made = _built(make, f"{self.target}({_kwargs_text(arguments)})")
        if not isinstance(made, tuple) or len(made) not in (2, 3) or not isinstance(made[0], nn.Module):
            raise ConfigError(
                f"--module {self.target}: returned {type(made).__name__}; expected (module, args) or "
                "(module, args, kwargs)"
            )
        module, args = _initialised(made[0], self.target), made[1]
        kwargs = made[2] if len(made) == 3 else {}
        if not isinstance(args, torch.Tensor | tuple | list):
            raise ConfigError(
                f"--module {self.target}: the args it returned are {type(args).__name__}; expected a tensor, "
                "or a tuple or list of inputs"
            )
        args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
        if not isinstance(kwargs, dict):
            raise ConfigError(f"--module {self.target}: the kwargs it returned are not a dict")
        dtype = _torch_dtype(self.dtype)
        if dtype != torch.float32:
            module = module.to(dtype)
            args = tuple(
                a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
            )
        return module.eval(), args, kwargs

    def build(self, sizes: dict[str, int], device: str, layers: int) -> nn.Module:
        return self._call(sizes, device)[0]

    def inputs(self, sizes: dict[str, int], device: str) -> tuple[tuple, dict[str, Any]]:
        _, args, kwargs = self._call(sizes, device)
        return args, kwargs

    def describe(self) -> dict[str, Any]:
        return {"module": self.target, "dims": self.requested, "dtype": self.dtype}


def _own_part(name: str, divisors: tuple[str, ...]) -> str:
    if not divisors:
        return name
    below = divisors[0] if len(divisors) == 1 else f"({'*'.join(divisors)})"
    return f"{name}/{below}"


def _primes(after: int = 2) -> Any:
    """Odd primes above `after`, in order."""
    for n in count(after + 1):
        if n > 2 and all(n % p for p in range(2, int(n**0.5) + 1)):
            yield n


def factory_defaults(target: str, factory: Callable[..., Any]) -> dict[str, int]:
    """The factory's parameters, each of which must have an int default: they are its sizes."""
    found = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not isinstance(p.default, int) or isinstance(p.default, bool) or p.default <= 0:
            raise ConfigError(
                f"--module {target}: parameter {p.name} needs a positive int default (its size)"
            )
        if not _SIZE_NAME.fullmatch(p.name):
            raise ConfigError(f"--module {target}: parameter {p.name} cannot name a size")
        found[p.name] = p.default
    return found


def module_spec(
    target: str,
    kwargs: str | None = None,
    inputs: tuple[str, ...] = (),
    dims: tuple[str, ...] = (),
    dtype: Dtype = Dtype.float32,
) -> ModuleClassSpec | FactorySpec:
    """The spec of `--module TARGET` with its flags; its code is imported here."""
    import torch  # noqa: F401  (imported before the user's code, which usually imports it too)
    from torch import nn

    obj = load_target(target)
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        if dims:
            raise ConfigError(f"--dim names a factory's sizes; {target} is a module class (use --kwargs)")
        return ModuleClassSpec(target, obj, parse_kwargs(kwargs), tuple(map(parse_input, inputs)), dtype)
    if not callable(obj) or isinstance(obj, type):
        raise ConfigError(
            f"--module {target}: {type(obj).__name__} is neither an nn.Module class nor a function "
            "returning (module, inputs)"
        )
    if kwargs is not None or inputs:
        raise ConfigError(f"--kwargs and --input are for a module class; {target} is a factory (use --dim)")
    return factory_spec(target, obj, parse_dims(dims), dtype)


def factory_spec(
    target: str, factory: Callable[..., Any], requested: dict[str, int], dtype: Dtype = Dtype.float32
) -> FactorySpec:
    """The spec of a function of sizes, at the sizes `requested` in place of its defaults."""
    defaults = factory_defaults(target, factory)
    unknown = sorted(set(requested) - set(defaults))
    if unknown:
        raise ConfigError(f"--dim {unknown[0]}: not a parameter of {target} (it has: {', '.join(defaults)})")
    return with_divisors(FactorySpec(target, factory, defaults, requested, dtype))
