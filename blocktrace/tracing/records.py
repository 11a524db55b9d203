"""Frozen records and their JSON, read from their fields: what lets trace.py declare its data and no codec.

A record is a frozen dataclass of plain values: int, float, str, bool, None, tuples, read-only mappings
and other records. Nothing in one can change, all the way down: a mapping given to a record is stored
as a FrozenDict, its lists as tuples. `from_dict` is driven by the record's fields and their types and
builds it by keyword, so a field that a document lacks is an error, never a value in the wrong place;
`map_leaves` and `leaves` reach every value of one record type inside a record (or any frozen
dataclass of such values, as the data-flow graph is), in field order.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, NamedTuple, TypeVar

R = TypeVar("R", bound="Record")
L = TypeVar("L")
_Plan = tuple[tuple[str, str, "_Plan"], ...]  # see _plan


class FrozenDict(Mapping[str, Any]):
    """A dict that cannot change, nor can its values: equal to a dict of the same items, and hashable."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._items = {k: frozen(v) for k, v in dict(items).items()}

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return self._items == (other._items if isinstance(other, FrozenDict) else other)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenDict({self._items!r})"


def frozen(value: Any) -> Any:
    """value as a record holds it: mappings as FrozenDicts, lists as tuples, all the way down."""
    if isinstance(value, (str, int, float, FrozenDict)) or value is None:
        return value
    if isinstance(value, Mapping):
        return FrozenDict(value)
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    return value


def plain(value: Any) -> Any:
    """value as JSON holds it: mappings as dicts, tuples as lists, all the way down."""
    if isinstance(value, (str, int, float)) or value is None:
        return value
    if isinstance(value, Mapping):
        items = value._items if isinstance(value, FrozenDict) else value  # not Mapping's slower items()
        return {k: plain(v) for k, v in items.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Record:
    """The base of a frozen dataclass of plain data, its from_dict read from its fields. A record with a
    Mapping field calls freeze_mappings in its __post_init__ (not every record: a trace has thousands)."""

    def freeze_mappings(self) -> None:
        """Store each Mapping field as a FrozenDict: what a caller gave may be a dict it goes on changing."""
        for name in _mappings(type(self)):
            value = getattr(self, name)
            if not isinstance(value, FrozenDict):
                object.__setattr__(self, name, FrozenDict(value))

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any]) -> R:
        """The record a to_dict() made, built by keyword. A key may be missing only where the field's
        default is None (to_dict leaves such a field out when it is None); keys not fields are not read."""
        as_is, decoded, optional = _codec(cls)
        values = {name: d[name] for name in as_is}
        for name, decode in decoded:
            values[name] = decode(d[name])
        for name, decode in optional:
            value = d.get(name)
            values[name] = None if value is None else decode(value)
        return cls(**values)


def leaves(record: Record, leaf: type[L]) -> list[L]:
    """Every value of type leaf inside record, depth first in field order."""
    found: list[L] = []
    _collect(record, _plan(type(record), leaf), found)
    return found


def map_leaves(record: R, leaf: type[L], fn: Callable[[L], L]) -> R:
    """record with every value t of type leaf inside it replaced by fn(t), every other field carried."""
    return _map(record, _plan(type(record), leaf), fn)


def _collect(record: Any, plan: _Plan, found: list[Any]) -> None:
    for name, how, inner in plan:
        value = getattr(record, name)
        if how == "one" or (how == "maybe one" and value is not None):
            found.append(value)
        elif how == "tuple":
            found.extend(value)
        elif how == "record" or (how == "maybe record" and value is not None):
            _collect(value, inner, found)
        elif how == "records":
            for r in value:
                _collect(r, inner, found)


def _map(record: R, plan: _Plan, fn: Callable[[Any], Any]) -> R:
    changes: dict[str, Any] = {}
    for name, how, inner in plan:
        value = getattr(record, name)
        if how == "one" or (how == "maybe one" and value is not None):
            changes[name] = fn(value)
        elif how == "tuple":
            changes[name] = tuple(map(fn, value))
        elif how == "record" or (how == "maybe record" and value is not None):
            changes[name] = _map(value, inner, fn)
        elif how == "records":
            changes[name] = tuple(_map(r, inner, fn) for r in value)
    return evolve(record, **changes)


def evolve(record: R, **changes: Any) -> R:
    """dataclasses.replace(record, **changes) for values already frozen (tuples, FrozenDicts,
    records): replace would run __init__ and __post_init__ again, for each of a trace's thousands
    of records; this copies the fields instead."""
    made = object.__new__(type(record))
    state, names = record.__dict__, _field_names(type(record))
    if len(state) == len(names):  # its fields alone: no index or graph kept with it to leave behind
        made.__dict__.update(state, **changes)
    else:
        made.__dict__.update({name: state[name] for name in names}, **changes)
    return made


def _find_field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


_field_names: Callable[[type], tuple[str, ...]] = functools.cache(_find_field_names)


def _find_mappings(cls: type) -> tuple[str, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in fields(cls) if typing.get_origin(hints[f.name]) is Mapping)


# each cache typed as it is called: asked if type[X] is Hashable, mypy reads the __hash__ of X's instances
_mappings: Callable[[type], tuple[str, ...]] = functools.cache(_find_mappings)


class _Codec(NamedTuple):
    as_is: tuple[str, ...]  # the fields whose JSON value is their value
    decoded: tuple[tuple[str, Callable[[Any], Any]], ...]  # the others, each with what decodes its value
    optional: tuple[tuple[str, Callable[[Any], Any]], ...]  # those defaulting to None: to_dict may omit them


def _make_codec(cls: type) -> _Codec:
    hints = typing.get_type_hints(cls)
    as_is, decoded, optional = [], [], []
    for f in fields(cls):
        if f.default is None:
            optional.append((f.name, _decoder(_not_none(hints[f.name]))))
        elif (decode := _decoder(hints[f.name])) is _same:
            as_is.append(f.name)
        else:
            decoded.append((f.name, decode))
    return _Codec(tuple(as_is), tuple(decoded), tuple(optional))


_codec: Callable[[type], _Codec] = functools.cache(_make_codec)


def _same(value: Any) -> Any:
    return value


def _not_none(tp: Any) -> Any:
    """X for the type X | None; tp itself for any other."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return tp


def _decoder(tp: Any) -> Callable[[Any], Any]:
    """What turns a JSON value into a value of type tp."""
    inner = _not_none(tp)
    if inner is not tp:
        decode = _decoder(inner)
        return _same if decode is _same else lambda v: None if v is None else decode(v)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _decoder(args[0])
        return tuple if item is _same else lambda v: tuple(map(item, v))
    if origin is Mapping:
        return FrozenDict
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict
    if tp in (int, float, str, bool):
        return _same
    raise TypeError(f"a record field of type {tp} has no JSON form here")


def _make_plan(cls: type, leaf: type) -> _Plan:
    """The fields of cls that hold values of type leaf, each with how: "one", a "tuple" of them, a
    "record" holding some, or a tuple of such "records", and that record type's own plan; "maybe
    one" and "maybe record" where the field may be None instead."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, *how) for f in fields(cls) if (how := _reach(hints[f.name], leaf)))


_plan: Callable[[type, type], _Plan] = functools.cache(_make_plan)


def _reach(tp: Any, leaf: type) -> tuple[str, _Plan] | None:
    if tp is leaf:
        return "one", ()
    if isinstance(tp, type) and is_dataclass(tp):
        inner = _plan(tp, leaf)
        return ("record", inner) if inner else None
    if (present := _not_none(tp)) is not tp:
        item = _reach(present, leaf)
        return None if item is None or item[0] not in ("one", "record") else (f"maybe {item[0]}", item[1])
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _reach(args[0], leaf)
        if item is None:
            return None
        if item[0] in ("one", "record"):
            return ("tuple" if item[0] == "one" else "records"), item[1]
    if any(_reach(a, leaf) for a in args):
        raise TypeError(f"a record field of type {tp} holds a {leaf.__name__} that map_leaves cannot reach")
    return None
