"""The trace's codec and immutability, on hand-built records (no torch): every field of every record
round-trips through JSON, a field added to a record is carried or an error, and nothing inside a
trace can change after it is made."""

from __future__ import annotations

import itertools
import json
import typing
from collections.abc import Iterator, Mapping
from dataclasses import FrozenInstanceError, dataclass, fields, replace
from typing import Any

import pytest

from blocktrace.tracing.records import FrozenDict, Record, evolve, leaves, map_leaves
from blocktrace.tracing.trace import Branch, ResidualAdd, Site, TensorMeta, Trace


def _example(tp: Any, n: Iterator[int]) -> Any:
    """A value of type tp that is no field's default: numbers from n, so no two are alike."""
    args = typing.get_args(tp)
    if type(None) in args:
        return _example(next(a for a in args if a is not type(None)), n)
    if typing.get_origin(tp) is tuple:
        return (_example(args[0], n), _example(args[0], n))
    if typing.get_origin(tp) is Mapping:
        value = args[1]
        return {f"k{next(n)}": [next(n), {"deep": next(n)}] if value is Any else _example(value, n)}
    if isinstance(tp, type) and issubclass(tp, Record):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _example(hints[f.name], n) for f in fields(tp)})
    return {
        int: lambda: next(n),
        float: lambda: next(n) + 0.5,
        str: lambda: f"s{next(n)}",
        bool: lambda: True,
    }[tp]()


def _records(value: Any) -> Iterator[Record]:
    if isinstance(value, Record):
        yield value
        for f in fields(value):
            yield from _records(getattr(value, f.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _records(item)


def _full_trace() -> Trace:
    """A trace with every field of every record in it set, none to its default."""
    t = _example(Trace, itertools.count(1))
    # a residual add's to_dict names its branches' calls by path: they must be calls of the trace
    adds = tuple(
        replace(r, branches=tuple(replace(b, calls=(0, 1)) for b in r.branches)) for r in t.residual_adds
    )
    return replace(t, residual_adds=adds)


def test_every_field_of_every_record_round_trips_through_json() -> None:
    t = _full_trace()
    kinds = set()
    for record in _records(t):
        kinds.add(type(record))
        for f in fields(record):
            assert getattr(record, f.name) != f.default, f"{type(record).__name__}.{f.name} at its default"
    assert {c.__name__ for c in kinds} == {
        "Trace", "TensorMeta", "TensorStats", "ModuleCall", "Weight", "Site", "OpCall", "ResidualAdd",
        "Branch", "Frame", "ParameterRead",
    }  # fmt: skip
    back = Trace.from_json(t.to_json())
    assert back == t
    for mine, theirs in zip(_records(t), _records(back), strict=True):
        assert type(mine) is type(theirs) and mine == theirs


def test_to_dict_is_plain_json_data_as_it_was_given() -> None:
    config = {"module": "m.py:Net", "kwargs": {"n": 3, "sizes": [1, 2]}, "inputs": [[[2, 5], "float32"]]}
    t = replace(_full_trace(), config=config)
    assert t.to_dict()["config"] == config  # lists and dicts again, not the tuples the trace keeps
    assert json.loads(t.to_json()) == t.to_dict()
    assert Trace.from_json(t.to_json()).config == t.config


def test_nothing_inside_a_trace_can_change() -> None:
    given = {"kwargs": {"n": 3}, "inputs": [[2, 5]]}
    attrs = {"is_causal": True}
    t = _full_trace()
    op = replace(t.ops[0], attrs=attrs)
    t = replace(t, config=given, ops=(op, *t.ops[1:]))
    given["kwargs"]["n"] = 4
    given["inputs"].append([1])
    attrs["is_causal"] = False
    assert t.config == {"kwargs": {"n": 3}, "inputs": ((2, 5),)}
    assert t.ops[0].attrs == {"is_causal": True}
    for mapping in (t.config, t.config["kwargs"], t.symbols, t.meanings, t.ops[0].attrs):
        assert isinstance(mapping, FrozenDict)
        with pytest.raises(TypeError):
            mapping["x"] = 1  # type: ignore[index]  # the mutation under test
    with pytest.raises(FrozenInstanceError):
        t.ops[0].name = "relu"  # type: ignore[misc]  # the mutation under test
    assert hash(t) == hash(Trace.from_json(t.to_json()))


def test_every_mapping_field_of_every_record_is_frozen() -> None:
    for record in _records(_full_trace()):
        hints = typing.get_type_hints(type(record))
        for f in fields(record):
            if typing.get_origin(hints[f.name]) is Mapping:
                assert isinstance(getattr(record, f.name), FrozenDict), f"{type(record).__name__}.{f.name}"


def test_a_frozen_dict_reads_and_compares_as_a_dict() -> None:
    frozen = FrozenDict({"a": 1, "b": [2, {"c": 3}]})
    same = {"a": 1, "b": (2, {"c": 3})}
    assert frozen == same and same == frozen  # a dict on either side
    assert frozen != {"a": 1} and list(frozen) == ["a", "b"] and len(frozen) == 2
    assert frozen.get("z") is None and dict(frozen)["a"] == 1
    assert hash(frozen) == hash(FrozenDict({"b": (2, FrozenDict({"c": 3})), "a": 1}))


def test_map_tensors_reaches_every_tensor_and_carries_every_other_field() -> None:
    t = _full_trace()
    seen: list[TensorMeta] = []

    def shift(m: TensorMeta) -> TensorMeta:
        seen.append(m)
        return replace(m, id=m.id + 10_000)

    mapped = t.map_tensors(shift)
    assert seen == t.tensors() and len(seen) == len({id(m) for m in seen})  # each place once, in order
    assert [m.id for m in mapped.tensors()] == [m.id + 10_000 for m in t.tensors()]
    assert mapped.map_tensors(lambda m: replace(m, id=m.id - 10_000)) == t  # nothing else changed


def test_evolve_carries_every_field_and_nothing_kept_beside_them() -> None:
    t = _full_trace()
    call = t.calls[1]
    moved = evolve(call, index=7)
    assert moved == replace(call, index=7) and call.index != 7  # every other field as it was
    t.children(None)  # an index kept with the trace (a cached_property), as its graph is
    assert "_children" in t.__dict__
    fewer = evolve(t, calls=t.calls[:1])
    assert fewer == replace(t, calls=t.calls[:1])
    assert "_children" not in fewer.__dict__  # the index of the calls it had would be wrong
    assert fewer.children(None) == [c for c in fewer.calls if c.parent is None]


# copies of trace records, each with a field added: what a new field does to the codec


@dataclass(frozen=True)
class _SiteWithColumn(Record):
    file: str
    function: str
    column: int  # added in the middle: built by position, every field after it would shift
    first_line: int
    line: int
    frame: int


@dataclass(frozen=True)
class _BranchWithGate(Record):
    output: TensorMeta
    calls: tuple[int, ...]
    gate: TensorMeta  # added: a tensor the tensor walk must reach
    ops: tuple[int, ...]


@dataclass(frozen=True)
class _BranchWithMaybe(Record):
    output: TensorMeta
    maybe: TensorMeta | None  # added: a tensor, or none


@dataclass(frozen=True)
class _BranchWithList(Record):
    output: TensorMeta
    more: tuple[TensorMeta | None, ...]  # added: a tensor where the walk has no way in


@dataclass(frozen=True)
class _SiteWithSet(Record):
    file: str
    tags: frozenset[str]  # added: a type with no JSON form


def test_a_field_added_to_a_record_is_read_by_name_or_missed_loudly() -> None:
    site = Site("m.py", "forward", 10, 12, 3)
    with pytest.raises(KeyError, match="column"):
        _SiteWithColumn.from_dict(site.to_dict())  # its to_dict not written yet: an error, not a shift
    read = _SiteWithColumn.from_dict({**site.to_dict(), "column": 7})
    assert (read.file, read.function, read.column, read.first_line, read.line, read.frame) == (
        "m.py", "forward", 7, 10, 12, 3,
    )  # fmt: skip
    with pytest.raises(TypeError, match="frozenset"):
        _SiteWithSet.from_dict({"file": "m.py", "tags": []})


def test_a_tensor_field_added_to_a_record_is_mapped_or_refused() -> None:
    a, b = TensorMeta(1, (2, 3), "float32"), TensorMeta(2, (2, 3), "float32")
    gated = _BranchWithGate(a, (0,), b, ())
    assert leaves(gated, TensorMeta) == [a, b]
    mapped = map_leaves(gated, TensorMeta, lambda m: replace(m, id=-m.id))
    assert (mapped.output.id, mapped.gate.id, mapped.calls) == (-1, -2, (0,))
    assert leaves(_BranchWithMaybe(a, b), TensorMeta) == [a, b]
    assert leaves(_BranchWithMaybe(a, None), TensorMeta) == [a]
    assert map_leaves(_BranchWithMaybe(a, None), TensorMeta, lambda m: replace(m, id=-m.id)).maybe is None
    assert map_leaves(_BranchWithMaybe(a, b), TensorMeta, lambda m: replace(m, id=-m.id)).maybe == replace(
        b, id=-2
    )
    with pytest.raises(TypeError, match="cannot reach"):
        leaves(_BranchWithList(a, (b,)), TensorMeta)
    assert leaves(Branch(a, (), ()), TensorMeta) == [a]


def test_a_document_without_a_field_is_refused_unless_the_field_defaults_to_none() -> None:
    t = _full_trace()
    first = {type(r): r for r in reversed(list(_records(t)))}
    for cls, record in first.items():
        doc = record.to_dict(t) if isinstance(record, ResidualAdd) else record.to_dict()
        for f in fields(record):
            partial = {k: v for k, v in doc.items() if k != f.name}
            if f.default is None:  # to_dict leaves it out when it is None
                assert getattr(cls.from_dict(partial), f.name) is None
            else:
                with pytest.raises(KeyError, match=f.name):
                    cls.from_dict(partial)
