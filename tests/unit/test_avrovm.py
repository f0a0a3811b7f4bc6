"""Tests for the C extension `ticktape._avrovm` (Avro binary encode/decode VM).

Byte-for-byte compatibility is checked against fastavro's schemaless reader and writer.
The module must be importable: set TICKTAPE_NO_CEXT=1 to skip these tests on purpose
(e.g. a platform without a C compiler).
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import os
import struct
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    from ticktape import _avrovm as vm  # type: ignore[attr-defined]
except ImportError:
    if os.environ.get("TICKTAPE_NO_CEXT") == "1":
        pytest.skip("C extension disabled by TICKTAPE_NO_CEXT=1", allow_module_level=True)
    raise

NULL, BOOLEAN, INT, LONG, FLOAT, DOUBLE, BYTES, STRING, ENUM, FIXED, ARRAY, MAP, UNION, RECORD = range(14)

# --- a tiny schema -> program compiler (the real one lives in the codec) ----------------------

_PRIMS = {"null": NULL, "boolean": BOOLEAN, "int": INT, "long": LONG, "float": FLOAT,
          "double": DOUBLE, "bytes": BYTES, "string": STRING}
_PY_TYPES: dict[int, tuple[type, ...]] = {
    BOOLEAN: (bool,), INT: (int,), LONG: (int,), FLOAT: (float,), DOUBLE: (float,),
    BYTES: (bytes,), STRING: (str,), ENUM: (str,), FIXED: (bytes,), ARRAY: (list, tuple),
    MAP: (dict,),
}


class Compiled(NamedTuple):
    program: tuple[Any, ...]
    classes: dict[str, type]


def compile_schema(schema: Any) -> Compiled:
    """Avro schema (JSON form) -> (program, {record full name: NamedTuple class})."""
    named: dict[str, tuple[Any, ...]] = {}
    classes: dict[str, type] = {}

    def build(node: Any) -> tuple[Any, ...]:
        if isinstance(node, str):
            return (_PRIMS[node],) if node in _PRIMS else named[node]
        if isinstance(node, list):
            branches = tuple(build(b) for b in node)
            non_null = [i for i, b in enumerate(branches) if b[0] != NULL]
            selector: dict[type, int] | None = None
            if len(non_null) > 1:
                selector = {}
                for i in non_null:
                    b = branches[i]
                    types = (b[1],) if b[0] == RECORD else _PY_TYPES[b[0]]
                    for t in types:
                        selector.setdefault(t, i)
            return (UNION, branches, selector)
        kind = node["type"]
        if kind in _PRIMS:
            return (_PRIMS[kind],)
        if kind == "enum":
            symbols = tuple(sys.intern(s) for s in node["symbols"])
            named[node["name"]] = (ENUM, symbols, {s: i for i, s in enumerate(symbols)})
            return named[node["name"]]
        if kind == "fixed":
            named[node["name"]] = (FIXED, node["size"])
            return named[node["name"]]
        if kind == "array":
            return (ARRAY, build(node["items"]))
        if kind == "map":
            return (MAP, build(node["values"]))
        if kind == "record":
            cls = NamedTuple(node["name"], [(f["name"], Any) for f in node["fields"]])  # type: ignore[misc]
            classes[node["name"]] = cls
            prog = (RECORD, cls, tuple(build(f["type"]) for f in node["fields"]))
            named[node["name"]] = prog
            return prog
        return build(kind)

    return Compiled(build(schema), classes)


# --- converting between our values (NamedTuples, tuples) and fastavro's (dicts, lists) ---------

def _schema_walker(schema: Any) -> dict[str, Any]:
    named: dict[str, Any] = {}

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for b in node:
                visit(b)
        elif isinstance(node, dict):
            if node["type"] in ("record", "enum", "fixed"):
                named[node["name"]] = node
            if node["type"] == "record":
                for f in node["fields"]:
                    visit(f["type"])
            elif node["type"] == "array":
                visit(node["items"])
            elif node["type"] == "map":
                visit(node["values"])
            elif isinstance(node["type"], dict | list):
                visit(node["type"])

    visit(schema)
    return named


def to_fastavro(schema: Any, value: Any, named: dict[str, Any] | None = None) -> Any:
    named = _schema_walker(schema) if named is None else named
    node = named.get(schema, schema) if isinstance(schema, str) else schema
    if isinstance(node, list):
        if value is None:
            return None
        for b in node:
            bn = named.get(b, b) if isinstance(b, str) else b
            if isinstance(bn, dict) and bn["type"] == "record" and type(value).__name__ == bn["name"]:
                return (bn["name"], to_fastavro(bn, value, named))
        for b in node:
            if b != "null":
                bn = named.get(b, b) if isinstance(b, str) else b
                if not (isinstance(bn, dict) and bn["type"] == "record"):
                    return to_fastavro(b, value, named)
        raise AssertionError("no branch")
    if isinstance(node, str):
        return value
    kind = node["type"]
    if kind == "record":
        return {f["name"]: to_fastavro(f["type"], v, named) for f, v in zip(node["fields"], value, strict=True)}
    if kind == "array":
        return [to_fastavro(node["items"], v, named) for v in value]
    if kind == "map":
        return {k: to_fastavro(node["values"], v, named) for k, v in value.items()}
    if isinstance(kind, dict | list):
        return to_fastavro(kind, value, named)
    return value


def from_fastavro(schema: Any, value: Any, classes: dict[str, type],
                  named: dict[str, Any] | None = None) -> Any:
    named = _schema_walker(schema) if named is None else named
    node = named.get(schema, schema) if isinstance(schema, str) else schema
    if isinstance(node, list):
        if value is None:
            return None
        if isinstance(value, tuple):  # (record name, record) from return_record_name=True
            return from_fastavro(named[value[0]], value[1], classes, named)
        for b in node:
            bn = named.get(b, b) if isinstance(b, str) else b
            kind = bn["type"] if isinstance(bn, dict) else bn
            if (kind, type(value)) in (("array", list), ("map", dict)):
                return from_fastavro(bn, value, classes, named)
        return value
    if isinstance(node, str):
        return value
    kind = node["type"]
    if kind == "record":
        return classes[node["name"]](*(from_fastavro(f["type"], value[f["name"]], classes, named)
                                       for f in node["fields"]))
    if kind == "array":
        return tuple(from_fastavro(node["items"], v, classes, named) for v in value)
    if kind == "map":
        return {k: from_fastavro(node["values"], v, classes, named) for k, v in value.items()}
    if isinstance(kind, dict | list):
        return from_fastavro(kind, value, classes, named)
    return value


def fa_write(schema: Any, value: Any) -> bytes:
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, fastavro.parse_schema(schema), to_fastavro(schema, value))
    return bio.getvalue()


def fa_read(schema: Any, data: bytes, classes: dict[str, type]) -> Any:
    raw = fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None,
                                     return_record_name=True)
    return from_fastavro(schema, raw, classes)


def same(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN (of the same bits) and types must match."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


_COMPILED: dict[str, Compiled] = {}


def compiled_for(schema: Any) -> Compiled:
    """compile_schema, memoized so that record classes are shared between calls."""
    key = json.dumps(schema, sort_keys=True)
    if key not in _COMPILED:
        _COMPILED[key] = compile_schema(schema)
    return _COMPILED[key]


def check_compat(schema: Any, value: Any, expected: Any = None) -> bytes:
    """Our bytes == fastavro's bytes; both decoders agree; decode(encode(v)) == v."""
    compiled = compiled_for(schema)
    prog = compiled.program
    ours = vm.encode(prog, value)
    assert ours == fa_write(schema, value)
    decoded, pos = vm.decode(prog, ours)
    assert pos == len(ours)
    assert same(decoded, fa_read(schema, ours, compiled.classes))
    assert same(decoded, normalize(value) if expected is None else expected)
    return bytes(ours)


def normalize(value: Any) -> Any:
    """What decoding gives back: lists become tuples (recursively), NamedTuples stay."""
    if isinstance(value, list):
        return tuple(normalize(v) for v in value)
    if isinstance(value, tuple):
        items = [normalize(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    return value


# --- schemas -----------------------------------------------------------------------------------

TRADE_SCHEMA = {
    "type": "record", "name": "Trade", "fields": [
        {"name": "venue", "type": "string"},
        {"name": "instrument", "type": "string"},
        {"name": "ts_event", "type": "long"},
        {"name": "ts_recv", "type": "long"},
        {"name": "price", "type": "double"},
        {"name": "size", "type": "double"},
        {"name": "aggressor_side", "type": {"type": "enum", "name": "Side",
                                             "symbols": ["BUY", "SELL", "NONE"]}},
        {"name": "trade_id", "type": "string"},
    ],
}

PRICE_SIZE = {"type": "record", "name": "PriceSize",
              "fields": [{"name": "price", "type": "double"}, {"name": "size", "type": "double"}]}

BOOK_SCHEMA = {
    "type": "record", "name": "MarketBook", "fields": [
        {"name": "market_id", "type": "string"},
        {"name": "ts", "type": "long"},
        {"name": "status", "type": {"type": "enum", "name": "MarketStatus",
                                     "symbols": ["OPEN", "SUSPENDED", "CLOSED"]}},
        {"name": "inplay", "type": "boolean"},
        {"name": "runners", "type": {"type": "array", "items": {
            "type": "record", "name": "Runner", "fields": [
                {"name": "selection_id", "type": "long"},
                {"name": "ltp", "type": ["null", "double"]},
                {"name": "back", "type": {"type": "array", "items": PRICE_SIZE}},
                {"name": "lay", "type": {"type": "array", "items": "PriceSize"}},
                {"name": "traded", "type": {"type": "map", "values": "double"}},
            ]}}},
        {"name": "extra", "type": ["null",
                                   {"type": "record", "name": "Note", "fields": [
                                       {"name": "text", "type": "string"}]},
                                   {"type": "record", "name": "Tick", "fields": [
                                       {"name": "n", "type": "int"},
                                       {"name": "hash", "type": {"type": "fixed", "name": "H8",
                                                                 "size": 8}}]}]},
    ],
}

ALL_SCHEMA = {
    "type": "record", "name": "All", "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "by", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "fx", "type": {"type": "fixed", "name": "F4", "size": 4}},
        {"name": "a", "type": {"type": "array", "items": "int"}},
        {"name": "m", "type": {"type": "map", "values": "string"}},
        {"name": "u1", "type": ["null", "string"]},
        {"name": "u2", "type": ["long", "null"]},
        {"name": "u3", "type": ["null", "long", "string", "double"]},
        {"name": "nested", "type": {"type": "array", "items": {
            "type": "map", "values": {"type": "array", "items": ["null", "long"]}}}},
    ],
}

TRADE = compiled_for(TRADE_SCHEMA)
BOOK = compiled_for(BOOK_SCHEMA)
ALL = compiled_for(ALL_SCHEMA)
Trade: Any = TRADE.classes["Trade"]
MarketBook, Runner, PriceSize = (BOOK.classes[n] for n in ("MarketBook", "Runner", "PriceSize"))
Note, Tick = BOOK.classes["Note"], BOOK.classes["Tick"]
All: Any = ALL.classes["All"]


def make_trade(i: int = 0) -> Any:
    return Trade("BINANCE", "BTCUSDT", 1_700_000_000_123_456_789 + i, 1_700_000_000_124_000_000 + i,
                 43125.5 + i, 0.0125, ("BUY", "SELL", "NONE")[i % 3], f"T{i:09d}")


def make_book(n_runners: int = 3, extra: Any = None) -> Any:
    runners = [
        Runner(1000 + r, None if r == 0 else 2.5 + r,
               [PriceSize(2.5 + r + k / 100, 10.0 * k) for k in range(3)],
               (PriceSize(2.6 + r, 5.0),) if r % 2 else [],
               {"2.5": 100.0, "2.52": 7.25} if r % 2 else {})
        for r in range(n_runners)
    ]
    return MarketBook("1.234567890", 1_700_000_000_000_000_000, "OPEN", True, runners, extra)


def make_all(**kw: Any) -> Any:
    base = dict(n=None, b=True, i=-5, l=2**40, f=1.5, d=-2.25, by=b"\x00\xff", s="héllo",
                e="GREEN", fx=b"abcd", a=[1, -2, 3], m={"k": "v", "ü": ""}, u1="x", u2=None,
                u3=7, nested=[{"x": [None, 1]}, {}])
    base.update(kw)
    return All(**base)


# --- basic API ----------------------------------------------------------------------------------

def test_opcode_constants() -> None:
    names = ["NULL", "BOOLEAN", "INT", "LONG", "FLOAT", "DOUBLE", "BYTES", "STRING", "ENUM",
             "FIXED", "ARRAY", "MAP", "UNION", "RECORD"]
    assert [getattr(vm, n) for n in names] == list(range(14))


def test_trade_roundtrip_and_fastavro_compat() -> None:
    for i in range(5):
        check_compat(TRADE_SCHEMA, make_trade(i))


def test_decoded_record_is_namedtuple_and_equal_to_constructor() -> None:
    t = make_trade()
    value: Any = vm.decode(TRADE.program, vm.encode(TRADE.program, t))[0]
    assert type(value) is Trade
    assert isinstance(value, Trade) and issubclass(type(value), tuple)
    assert value == Trade(*t)
    assert value.price == t.price and value._fields == Trade._fields
    assert value._replace(size=1.0).size == 1.0
    assert hash(value) == hash(Trade(*t))


def test_record_without_class_decodes_to_plain_tuple() -> None:
    prog = (RECORD, None, ((LONG,), (STRING,)))
    value, _ = vm.decode(prog, vm.encode(prog, (5, "x")))
    assert type(value) is tuple and value == (5, "x")


def test_record_class_with_dict_and_non_tuple_factories() -> None:
    class WithDict(tuple[Any, ...]):  # a tuple subclass with a __dict__: generic tuple.__new__ path
        pass

    prog = (RECORD, WithDict, ((LONG,), (STRING,)))
    value, _ = vm.decode(prog, b"\x02\x02a")
    assert type(value) is WithDict and value == (1, "a")

    def factory(a: int, b: str) -> dict[str, Any]:
        return {"a": a, "b": b}

    value, _ = vm.decode((RECORD, factory, ((LONG,), (STRING,))), b"\x02\x02a")
    assert value == {"a": 1, "b": "a"}
    with pytest.raises(TypeError, match="invalid avrovm program"):
        vm.decode((RECORD, 42, ((LONG,),)), b"\x02")


def test_enum_decode_returns_the_symbol_object() -> None:
    symbols = ("BUY", "".join(["SE", "LL"]), "NONE")  # not interned on purpose
    prog = (ENUM, symbols, {s: i for i, s in enumerate(symbols)})
    value, pos = vm.decode(prog, b"\x02")
    assert value is symbols[1] and pos == 1


@pytest.mark.parametrize(("schema", "value"), [
    ("null", None),
    ("boolean", True), ("boolean", False),
    ("int", 0), ("int", -1), ("int", 2**31 - 1), ("int", -(2**31)), ("int", 63), ("int", -64),
    ("long", 0), ("long", 1), ("long", -1), ("long", 2**63 - 1), ("long", -(2**63)),
    ("long", 1_700_000_000_123_456_789), ("long", -1_700_000_000_123_456_789),
    ("long", 2**31), ("long", 2**56), ("long", -(2**56) - 1),
    ("float", 0.0), ("float", -0.0), ("float", 1.5), ("float", float("inf")), ("float", float("-inf")),
    ("float", 3.4028234663852886e38), ("float", 1.401298464324817e-45),
    ("double", 0.0), ("double", -0.0), ("double", math.pi), ("double", 1e308), ("double", 5e-324),
    ("double", float("inf")), ("double", float("-inf")),
    ("bytes", b""), ("bytes", b"\x00\x01\xff" * 100),
    ("string", ""), ("string", "ascii"), ("string", "héllo wörld"), ("string", "日本語テキスト"),
    ("string", "emoji 🚀📈 and \x00 nul"), ("string", "x" * 5000),
    ({"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}, "C"),
    ({"type": "fixed", "name": "F", "size": 16}, bytes(range(16))),
    ({"type": "fixed", "name": "F0", "size": 0}, b""),
    ({"type": "array", "items": "long"}, []),
    ({"type": "array", "items": "long"}, [1, 2**62, -3]),
    ({"type": "array", "items": "string"}, ("a", "ü")),
    ({"type": "array", "items": "null"}, [None, None]),
    ({"type": "array", "items": {"type": "array", "items": "int"}}, [[], [1], [2, 3]]),
    ({"type": "map", "values": "long"}, {}),
    ({"type": "map", "values": "long"}, {"a": 1, "ключ": -2}),
    ({"type": "map", "values": {"type": "map", "values": "boolean"}}, {"x": {"y": True}, "z": {}}),
    (["null", "string"], None), (["null", "string"], "s"),
    (["string", "null"], None), (["string", "null"], "s"),
    (["null", "long", "string", "double"], 5), (["null", "long", "string", "double"], "x"),
    (["null", "long", "string", "double"], 2.5),
    (["null", {"type": "array", "items": "long"}], [1, 2]),
])
def test_every_opcode_matches_fastavro(schema: Any, value: Any) -> None:
    check_compat(schema, value)


def test_nan_roundtrip_matches_fastavro() -> None:
    for schema in ("double", "float"):
        data = check_compat(schema, float("nan"))
        value, _ = vm.decode(compiled_for(schema).program, data)
        assert math.isnan(value)


def test_float_rounds_to_single_precision_like_fastavro() -> None:
    data = check_compat("float", 0.1, expected=struct.unpack("<f", struct.pack("<f", 0.1))[0])
    assert data == struct.pack("<f", 0.1)


def test_int_accepted_for_float_and_double() -> None:
    assert vm.encode((DOUBLE,), 3) == struct.pack("<d", 3.0)
    assert vm.encode((FLOAT,), -2) == struct.pack("<f", -2.0)


def test_all_types_record_matches_fastavro() -> None:
    check_compat(ALL_SCHEMA, make_all())
    check_compat(ALL_SCHEMA, make_all(u1=None, u2=-(2**63), u3=None, a=[], m={}, nested=[]))
    check_compat(ALL_SCHEMA, make_all(u3="text", e="RED", b=False))
    check_compat(ALL_SCHEMA, make_all(u3=-0.5))


def test_nested_book_matches_fastavro() -> None:
    check_compat(BOOK_SCHEMA, make_book(0))
    check_compat(BOOK_SCHEMA, make_book(10))
    check_compat(BOOK_SCHEMA, make_book(2, extra=Note("hi")))
    check_compat(BOOK_SCHEMA, make_book(2, extra=Tick(-7, b"12345678")))


def test_decoded_arrays_are_tuples() -> None:
    value, _ = vm.decode(BOOK.program, vm.encode(BOOK.program, make_book(3)))
    assert type(value.runners) is tuple
    assert type(value.runners[1].back) is tuple and type(value.runners[1].back[0]) is PriceSize
    assert value.runners[0].lay == ()
    assert value == normalize(make_book(3))


def test_decoded_atomic_records_are_untracked_by_gc() -> None:
    value, _ = vm.decode(BOOK.program, vm.encode(BOOK.program, make_book(3)))
    assert not gc.is_tracked(value.runners[0].back[0])  # PriceSize(double, double)
    assert not gc.is_tracked(value.runners[0].back)
    assert gc.is_tracked(value.runners[1])  # holds a dict (traded)
    assert gc.is_tracked(value)


# --- block encoding -------------------------------------------------------------------------------

def zz(n: int) -> bytes:
    """Avro long encoding of n (reference implementation)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def test_empty_array_and_map_encode_as_single_zero() -> None:
    assert vm.encode((ARRAY, (LONG,)), []) == b"\x00"
    assert vm.encode((ARRAY, (LONG,)), ()) == b"\x00"
    assert vm.encode((MAP, (LONG,)), {}) == b"\x00"
    assert vm.decode((ARRAY, (LONG,)), b"\x00") == ((), 1)
    assert vm.decode((MAP, (LONG,)), b"\x00") == ({}, 1)


def test_array_encodes_one_block() -> None:
    assert vm.encode((ARRAY, (LONG,)), [1, 2, 3]) == zz(3) + zz(1) + zz(2) + zz(3) + b"\x00"


def test_negative_block_counts_and_multiple_blocks_decode() -> None:
    items = [zz(10), zz(-20), zz(30)]
    # block 1: count -2 then byte size, block 2: plain count 1, then end
    data = zz(-2) + zz(len(items[0] + items[1])) + items[0] + items[1] + zz(1) + items[2] + b"\x00"
    assert vm.decode((ARRAY, (LONG,)), data) == ((10, -20, 30), len(data))
    fa = fastavro.schemaless_reader(io.BytesIO(data), {"type": "array", "items": "long"}, None)
    assert fa == [10, -20, 30]

    body = zz(1) + b"a" + zz(5) + zz(1) + b"b" + zz(6)
    data = zz(-2) + zz(len(body)) + body + zz(-1) + zz(3) + zz(1) + b"c" + zz(7) + b"\x00"
    assert vm.decode((MAP, (LONG,)), data) == ({"a": 5, "b": 6, "c": 7}, len(data))

    # a negative count in the middle of a nested structure, with trailing data after it
    prog = (RECORD, None, ((ARRAY, (STRING,)), (LONG,)))
    s = zz(2) + b"hi"
    data = zz(-1) + zz(len(s)) + s + zz(0) + zz(42) + b"trailing"
    assert vm.decode(prog, data) == ((("hi",), 42), len(data) - len(b"trailing"))


def test_block_size_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="byte"):
        vm.decode((ARRAY, (LONG,)), zz(-1) + zz(-5) + zz(1) + b"\x00")


# --- unions ---------------------------------------------------------------------------------------

def test_union_selection_rules() -> None:
    nullable = (UNION, ((NULL,), (LONG,)), None)
    assert vm.encode(nullable, None) == b"\x00"
    assert vm.encode(nullable, 3) == b"\x02\x06"
    not_nullable = (UNION, ((LONG,),), None)
    assert vm.encode(not_nullable, 3) == b"\x00\x06"
    with pytest.raises(TypeError, match="null"):
        vm.encode(not_nullable, None)

    class A(NamedTuple):
        x: int

    class B(NamedTuple):
        x: int

    prog = (UNION, ((NULL,), (RECORD, A, ((LONG,),)), (RECORD, B, ((LONG,),))), {A: 1, B: 2})
    assert vm.encode(prog, B(1)) == b"\x04\x02"
    assert vm.decode(prog, b"\x04\x02") == (B(1), 2)
    assert type(vm.decode(prog, b"\x02\x02")[0]) is A
    with pytest.raises(TypeError, match="tuple"):
        vm.encode(prog, (1,))  # exact type lookup: a plain tuple is not A or B
    with pytest.raises(TypeError):
        vm.encode(prog, "x")


def test_union_bad_branch_index_on_decode() -> None:
    prog = (UNION, ((NULL,), (LONG,)), None)
    for data in (zz(2), zz(-1), zz(2**40)):
        with pytest.raises(ValueError, match=r"union branch index .* at byte 0"):
            vm.decode(prog, data)


# --- encode errors --------------------------------------------------------------------------------

def test_encode_type_errors_name_the_field() -> None:
    with pytest.raises(TypeError, match=r"^field 2 \(ts_event\): expected int, got str$"):
        vm.encode(TRADE.program, make_trade()._replace(ts_event="1"))
    with pytest.raises(TypeError, match=r"field 4 \(price\): expected float, got NoneType"):
        vm.encode(TRADE.program, make_trade()._replace(price=None))
    with pytest.raises(TypeError, match=r"field 0 \(venue\): expected str, got bytes"):
        vm.encode(TRADE.program, make_trade()._replace(venue=b"x"))
    bad = make_book(3)
    bad.runners[1].back[2] = PriceSize("2.5", 1.0)
    with pytest.raises(TypeError, match=r"field 4 \(runners\): item 1: field 2 \(back\): item 2: "
                                        r"field 0 \(price\): expected float, got str"):
        vm.encode(BOOK.program, bad)
    with pytest.raises(TypeError, match=r"^field 1: expected str, got int$"):
        vm.encode((RECORD, None, ((LONG,), (STRING,))), (1, 2))


def test_encode_value_and_overflow_errors() -> None:
    with pytest.raises(ValueError, match="8 fields, got 7"):
        vm.encode(TRADE.program, tuple(make_trade())[:7])
    with pytest.raises(TypeError):
        vm.encode(TRADE.program, make_trade()._asdict())
    with pytest.raises(ValueError, match="'HOLD'"):
        vm.encode(TRADE.program, make_trade()._replace(aggressor_side="HOLD"))
    with pytest.raises(ValueError, match="unknown enum symbol"):
        vm.encode(TRADE.program, make_trade()._replace(aggressor_side=None))
    for v in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(OverflowError):
            vm.encode((LONG,), v)
    for v in (2**31, -(2**31) - 1):
        with pytest.raises(OverflowError):
            vm.encode((INT,), v)
    with pytest.raises(OverflowError):
        vm.encode((FLOAT,), 1e300)
    with pytest.raises(OverflowError):
        vm.encode((DOUBLE,), 10**400)
    with pytest.raises(ValueError, match="exactly 4 bytes, got 3"):
        vm.encode((FIXED, 4), b"abc")


@pytest.mark.parametrize(("prog", "value", "exc"), [
    ((NULL,), 0, TypeError),
    ((BOOLEAN,), "yes", TypeError),
    ((BOOLEAN,), None, TypeError),
    ((INT,), 1.0, TypeError),
    ((LONG,), 1.5, TypeError),
    ((LONG,), True, TypeError),
    ((LONG,), "1", TypeError),
    ((DOUBLE,), "1.5", TypeError),
    ((DOUBLE,), True, TypeError),
    ((DOUBLE,), None, TypeError),
    ((BYTES,), "str", TypeError),
    ((STRING,), b"bytes", TypeError),
    ((STRING,), "\udc80", ValueError),
    ((FIXED, 2), "ab", TypeError),
    ((ARRAY, (LONG,)), "abc", TypeError),
    ((ARRAY, (LONG,)), 5, TypeError),
    ((ARRAY, (LONG,)), {"a": 1}, TypeError),
    ((MAP, (LONG,)), [("a", 1)], TypeError),
    ((MAP, (LONG,)), {1: 1}, TypeError),
    ((MAP, (LONG,)), b"ab", TypeError),
    ((MAP, (LONG,)), type("GetItemOnly", (), {"__getitem__": lambda self, k: 1})(), TypeError),
    ((MAP, (LONG,)), {"a": "x"}, TypeError),
    ((RECORD, None, ((LONG,),)), 5, TypeError),
    ((RECORD, None, ((LONG,),)), (), ValueError),
])
def test_encode_rejects_bad_values(prog: Any, value: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        vm.encode(prog, value)


def test_encode_accepts_sequences_buffers_and_int_subclasses() -> None:
    import enum

    class Level(enum.IntEnum):
        HIGH = 7

    assert vm.encode((ARRAY, (LONG,)), range(3)) == vm.encode((ARRAY, (LONG,)), [0, 1, 2])
    assert vm.encode((BYTES,), bytearray(b"ab")) == b"\x04ab"
    assert vm.encode((BYTES,), memoryview(b"xab")[1:]) == b"\x04ab"
    assert vm.encode((FIXED, 2), bytearray(b"ab")) == b"ab"
    assert vm.encode((LONG,), Level.HIGH) == zz(7)
    assert vm.encode((BOOLEAN,), 1) == b"\x01"  # ints by truthiness, like the Python engine
    from collections import OrderedDict
    from types import MappingProxyType
    assert vm.encode((MAP, (LONG,)), MappingProxyType(OrderedDict(a=1))) == b"\x02\x02a\x02\x00"


def test_mutating_a_list_during_encoding_does_not_crash() -> None:
    victim: list[Any] = []

    class Evil(str):
        def __hash__(self) -> int:
            victim.clear()
            return str.__hash__(self)

    prog = (ARRAY, (ENUM, ("A", "B"), {"A": 0, "B": 1}))
    victim.extend([Evil("A"), "B", "A"])
    with pytest.raises(RuntimeError, match="changed size"):
        vm.encode(prog, victim)


def test_invalid_programs_raise_type_error() -> None:
    for prog, value in [((), 1), ((99,), 1), ((-1,), 1), (("x",), 1), ([3], 1), (None, 1),
                        ((ENUM, ("A",)), "A"), ((RECORD, None), ()), ((RECORD, None, [(LONG,)]), (1,)),
                        ((ARRAY, "x"), [1]), ((UNION, ((LONG,), (STRING,)), None), 1),
                        ((UNION, ((LONG,),), "sel"), 1), ((2**70,), 1), ((ENUM, ("A",), ["A"]), "A"),
                        ((ENUM, ("A",), {"A": 5}), "A"), ((UNION, ((LONG,),), {int: 3}), 1)]:
        with pytest.raises(TypeError, match="invalid avrovm program"):
            vm.encode(prog, value)
    for prog in [(), (99,), (FIXED, -1), (ENUM, "AB", {}), (ARRAY, 5)]:
        with pytest.raises(TypeError, match="invalid avrovm program"):
            vm.decode(prog, b"\x02\x02\x02\x00")


def test_deeply_nested_program_raises_recursion_error() -> None:
    prog: tuple[Any, ...] = (LONG,)
    for _ in range(vm.MAX_DEPTH + 10):
        prog = (ARRAY, prog)
    value: list[Any] = [1]
    for _ in range(vm.MAX_DEPTH + 10):
        value = [value]
    with pytest.raises(RecursionError):
        vm.encode(prog, value)
    with pytest.raises(RecursionError):
        vm.decode(prog, b"\x02" * 1000)


# --- API: positions, buffers, batches -------------------------------------------------------------

def test_decode_positions_and_buffer_types() -> None:
    t = make_trade()
    one = vm.encode(TRADE.program, t)
    data = b"xyz" + one + one
    assert vm.decode(TRADE.program, data, 3) == (t, 3 + len(one))
    assert vm.decode(TRADE.program, data, pos=3 + len(one)) == (t, len(data))
    assert vm.decode(program=TRADE.program, buf=data, pos=3)[0] == t
    assert vm.decode(TRADE.program, bytearray(data), 3)[0] == t
    assert vm.decode(TRADE.program, memoryview(data)[3:])[0] == t
    with pytest.raises(ValueError, match="pos"):
        vm.decode(TRADE.program, data, len(data) + 1)
    with pytest.raises(ValueError, match="pos"):
        vm.decode(TRADE.program, data, -1)
    with pytest.raises(TypeError):
        vm.decode(TRADE.program, "not bytes")
    with pytest.raises(TypeError):
        vm.decode(TRADE.program)
    with pytest.raises(TypeError):
        vm.decode(TRADE.program, data, 0, bogus=1)
    assert vm.decode((NULL,), b"", 0) == (None, 0)


def test_encode_into_appends_and_is_atomic() -> None:
    out = bytearray(b"HDR")
    vm.encode_into(TRADE.program, make_trade(), out)
    assert bytes(out) == b"HDR" + vm.encode(TRADE.program, make_trade())
    before = bytes(out)
    with pytest.raises(TypeError):
        vm.encode_into(TRADE.program, make_trade()._replace(trade_id=5), out)
    assert bytes(out) == before
    with pytest.raises(TypeError, match="bytearray"):
        vm.encode_into(TRADE.program, make_trade(), io.BytesIO())


def test_encode_many_and_decode_many() -> None:
    trades = [make_trade(i) for i in range(1000)]
    out = bytearray(b"\xaa")
    vm.encode_many(TRADE.program, trades, out)
    assert bytes(out[1:]) == b"".join(vm.encode(TRADE.program, t) for t in trades)
    values, pos = vm.decode_many(TRADE.program, out, 1, len(trades))
    assert values == trades and pos == len(out)
    assert vm.decode_many(TRADE.program, out, 1, 0) == ([], 1)
    vm.encode_many(TRADE.program, iter(trades[:2]), out2 := bytearray())
    assert vm.decode_many(TRADE.program, out2, 0, 2)[0] == trades[:2]
    with pytest.raises(ValueError, match="value 2"):
        vm.decode_many(TRADE.program, out2, 0, 3)
    before = bytes(out2)
    with pytest.raises(TypeError, match="value 1: field 2"):
        vm.encode_many(TRADE.program, [trades[0], trades[1]._replace(ts_event=None)], out2)
    assert bytes(out2) == before
    with pytest.raises(ValueError):
        vm.decode_many(TRADE.program, out2, 0, -1)
    with pytest.raises(ValueError, match="block count"):
        vm.decode_many(TRADE.program, out2, 0, 10**12)


def test_decode_many_of_zero_width_values() -> None:
    assert vm.decode_many((NULL,), b"", 0, 5) == ([None] * 5, 0)
    with pytest.raises(ValueError, match="zero-width"):
        vm.decode_many((NULL,), b"", 0, 10**9)


# --- malformed input ------------------------------------------------------------------------------

@pytest.mark.parametrize(("prog", "data", "pattern"), [
    ((LONG,), b"", "varint at byte 0"),
    ((LONG,), b"\x80\x80", "varint at byte 0"),
    ((LONG,), b"\xff" * 11, "varint at byte 0"),
    ((LONG,), b"\xff" * 9 + b"\x02", "more than 64 bits"),
    ((INT,), zz(2**31), "32 bits"),
    ((BOOLEAN,), b"\x02", "boolean byte 0x02 at byte 0"),
    ((BOOLEAN,), b"", "boolean"),
    ((FLOAT,), b"\x00\x00\x00", "float needs 4 byte"),
    ((DOUBLE,), b"\x00" * 7, "double needs 8 byte"),
    ((STRING,), zz(-1), "negative string length"),
    ((STRING,), zz(5) + b"abc", "string length 5 at byte 0 exceeds the 3 remaining"),
    ((BYTES,), zz(2**62), "exceeds"),
    ((STRING,), zz(2) + b"\xc3\x28", "invalid UTF-8 in string at byte 0"),
    ((STRING,), zz(2) + b"\xed\xa0", "invalid UTF-8"),
    ((ENUM, ("A", "B"), {}), zz(2), "enum index 2 at byte 0"),
    ((ENUM, ("A", "B"), {}), zz(-1), "enum index -1"),
    ((FIXED, 4), b"abc", "fixed needs 4"),
    ((ARRAY, (LONG,)), zz(3) + zz(1), "block count 3 at byte 0 exceeds"),
    ((ARRAY, (LONG,)), zz(2**62), "block count"),
    ((ARRAY, (LONG,)), zz(-(2**63)), "invalid block count"),
    ((ARRAY, (NULL,)), zz(2**40), "zero-width"),
    ((ARRAY, (RECORD, None, ())), zz(2**40), "zero-width"),
    ((ARRAY, (LONG,)), zz(1) + zz(1), "^truncated data: unterminated varint at byte 2"),
    ((ARRAY, (STRING,)), zz(2) + zz(0) + zz(5) + b"a", "^item 1: truncated data: string length 5 at byte 2"),
    ((MAP, (LONG,)), zz(1) + zz(1) + b"a", "map key 'a': truncated"),
    ((MAP, (LONG,)), zz(2**40), "block count"),
])
def test_malformed_input_raises_value_error_with_position(prog: Any, data: bytes, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        vm.decode(prog, data)


def test_utf8_error_has_original_cause() -> None:
    with pytest.raises(ValueError) as info:
        vm.decode((STRING,), zz(1) + b"\xff")
    assert type(info.value) is ValueError
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_every_truncation_of_a_valid_book_raises_value_error() -> None:
    data = vm.encode(BOOK.program, make_book(4, extra=Tick(1, b"abcdefgh")))
    for cut in range(len(data)):
        with pytest.raises(ValueError, match="byte"):
            vm.decode(BOOK.program, data[:cut])
    assert vm.decode(BOOK.program, data)[1] == len(data)


# --- hypothesis ---------------------------------------------------------------------------------

def strategy_for(schema: Any, named: dict[str, Any] | None = None,
                 classes: dict[str, type] | None = None) -> st.SearchStrategy[Any]:
    named = _schema_walker(schema) if named is None else named
    assert classes is not None
    node = named.get(schema, schema) if isinstance(schema, str) else schema
    if isinstance(node, list):
        return st.one_of(*(strategy_for(b, named, classes) for b in node))
    kind = node if isinstance(node, str) else node["type"]
    simple: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
        "null": lambda: st.none(),
        "boolean": st.booleans,
        "int": lambda: st.integers(-(2**31), 2**31 - 1),
        "long": lambda: st.one_of(st.integers(-(2**63), 2**63 - 1),
                                  st.sampled_from([-(2**63), 2**63 - 1, 0, -1])),
        "float": lambda: st.floats(width=32),
        "double": lambda: st.floats(),
        "bytes": lambda: st.binary(max_size=40),
        "string": lambda: st.text(max_size=20),
    }
    if isinstance(kind, str) and kind in simple:
        return simple[kind]()
    if kind == "enum":
        return st.sampled_from(node["symbols"])
    if kind == "fixed":
        return st.binary(min_size=node["size"], max_size=node["size"])
    if kind == "array":
        items = st.lists(strategy_for(node["items"], named, classes), max_size=5)
        return st.one_of(items, items.map(tuple))
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), strategy_for(node["values"], named, classes),
                               max_size=4)
    if kind == "record":
        cls = classes[node["name"]]
        return st.tuples(*(strategy_for(f["type"], named, classes) for f in node["fields"])).map(
            lambda t: cls(*t))
    return strategy_for(kind, named, classes)


HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", ["trade", "all", "book"])
def test_property_roundtrip_and_fastavro_compat(name: str) -> None:
    schema, compiled = {"trade": (TRADE_SCHEMA, TRADE), "all": (ALL_SCHEMA, ALL),
                        "book": (BOOK_SCHEMA, BOOK)}[name]

    @HYP
    @given(strategy_for(schema, classes=compiled.classes))
    def run(value: Any) -> None:
        data = vm.encode(compiled.program, value)
        assert data == fa_write(schema, value)
        decoded, pos = vm.decode(compiled.program, data)
        assert pos == len(data)
        assert same(decoded, normalize(value))
        assert same(decoded, fa_read(schema, data, compiled.classes))
        out = bytearray(b"?")
        vm.encode_into(compiled.program, decoded, out)
        assert bytes(out) == b"?" + data

    run()


@pytest.mark.parametrize("name", ["trade", "all", "book"])
def test_fuzz_random_bytes_never_crash(name: str) -> None:
    prog = {"trade": TRADE, "all": ALL, "book": BOOK}[name].program

    @settings(max_examples=400, deadline=None)
    @given(st.binary(max_size=200), st.integers(0, 3))
    def run(data: bytes, pos: int) -> None:
        pos = min(pos, len(data))
        try:
            value, end = vm.decode(prog, data, pos)
        except ValueError as exc:
            assert "byte" in str(exc)
            return
        assert pos <= end <= len(data)
        # whatever decoded must re-encode, and re-decode to the same value
        again = vm.encode(prog, value)
        assert same(vm.decode(prog, again)[0], value)

    run()


@HYP
@given(st.data())
def test_fuzz_mutated_book_never_crashes(data: st.DataObject) -> None:
    book = data.draw(strategy_for(BOOK_SCHEMA, classes=BOOK.classes))
    raw = bytearray(vm.encode(BOOK.program, book))
    n = data.draw(st.integers(1, 4))
    for _ in range(n):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        vm.decode(BOOK.program, bytes(raw[:cut]))
    except ValueError as exc:
        assert "byte" in str(exc)
    with contextlib.suppress(ValueError):
        vm.decode_many(BOOK.program, bytes(raw), 0, data.draw(st.integers(0, 3)))


# --- reference counting / leaks --------------------------------------------------------------------

def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def test_no_refcount_leaks_on_borrowed_objects() -> None:
    t = make_trade()
    data = vm.encode(TRADE.program, t)
    book = make_book(5, extra=Note("x"))
    book_data = vm.encode(BOOK.program, book)
    symbols = TRADE.program[2][6][1]
    watched = [Trade, Runner, PriceSize, Note, TRADE.program, BOOK.program, symbols[0], symbols[1],
               data, book_data, t, book]
    # None/True/False are process-wide (not immortal before 3.12): other threads in the test
    # session (Kafka clients' I/O threads) move their counts a little. A leak per call would move
    # them by >= 20,000 here, so they get a tolerance instead of exact equality.
    singletons = [None, True, False]
    # Warm up: the decoder keeps recently decoded two-double records (ladder levels) in a
    # fixed-size cache, which holds a reference to each (and so to its class). After one round
    # the cache holds these values; further rounds must not move any count.
    vm.decode(BOOK.program, book_data)
    vm.decode_many(TRADE.program, data * 100, 0, 100)
    singletons_before = [sys.getrefcount(o) for o in singletons]
    before = [sys.getrefcount(o) for o in watched]
    for _ in range(20_000):
        vm.decode(TRADE.program, data)
        vm.encode(TRADE.program, t)
        vm.decode(BOOK.program, book_data)
        vm.encode(BOOK.program, book)
        vm.encode_into(TRADE.program, t, bytearray())
    vm.decode_many(TRADE.program, data * 100, 0, 100)
    vm.encode_many(TRADE.program, [t] * 100, bytearray())
    after = [sys.getrefcount(o) for o in watched]
    assert before == after
    drift = [abs(sys.getrefcount(o) - b) for o, b in zip(singletons, singletons_before, strict=True)]
    assert max(drift) < 2_000, f"refcount drift on None/True/False: {drift}"


def test_no_leaks_on_error_paths() -> None:
    data = vm.encode(BOOK.program, make_book(3))
    bad_book = make_book(3)
    bad_book.runners[2].back.append(PriceSize(1.0, "x"))

    def errors() -> None:
        for cut in range(0, len(data), 7):
            with pytest.raises(ValueError):
                vm.decode(BOOK.program, data[:cut])
        with pytest.raises(TypeError):
            vm.encode(BOOK.program, bad_book)
        with pytest.raises(ValueError):
            vm.decode((STRING,), zz(1) + b"\xff")
        with pytest.raises(ValueError):
            vm.encode(TRADE.program, make_trade()._replace(aggressor_side="X"))
        with pytest.raises(TypeError):
            vm.encode((UNION, ((LONG,),), None), None)

    for _ in range(50):
        errors()
    gc.collect()
    refs = [sys.getrefcount(o) for o in (Runner, PriceSize, BOOK.program, bad_book, data)]
    growth = []
    for _window in range(3):
        # The block count is the whole process's: another test's client threads (a MongoDB or Kafka
        # client's monitor) may allocate meanwhile. A leak here grows every window; noise does not.
        blocks = sys.getallocatedblocks()
        for _ in range(300):
            errors()
        gc.collect()
        growth.append(sys.getallocatedblocks() - blocks)
    assert [sys.getrefcount(o) for o in (Runner, PriceSize, BOOK.program, bad_book, data)] == refs
    assert min(growth) < 500, growth


def test_rss_stable_over_one_million_decodes() -> None:
    prog = TRADE.program
    data = vm.encode(prog, make_trade())
    book_data = vm.encode(BOOK.program, make_book(10))
    decode = vm.decode
    for _ in range(100_000):
        decode(prog, data)
    gc.collect()
    rss_before = _rss_kb()
    blocks = sys.getallocatedblocks()
    for _ in range(1_000_000):
        decode(prog, data)
    for _ in range(20_000):
        decode(BOOK.program, book_data)
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 1000
    assert _rss_kb() - rss_before < 4096  # a leak of even 8 bytes/decode would show 8 MB


def test_two_double_records_are_shared_but_equal() -> None:
    """Ladder levels (records of two doubles) come from a cache: same bytes, same value, even for
    NaN and signed zeros, and a different class or different bytes never share an entry."""
    prog = (ARRAY, (RECORD, PriceSize, ((DOUBLE,), (DOUBLE,))))
    levels = [PriceSize(1.5, 2.0), PriceSize(-0.0, 0.0), PriceSize(float("nan"), 1.0), PriceSize(1.5, 2.0)]
    data = vm.encode(prog, levels)
    first, _ = vm.decode(prog, data)
    again, _ = vm.decode(prog, data)
    assert first[0] is first[3] and again[0] is first[0]  # shared
    assert type(first[0]) is PriceSize and first[0] == PriceSize(1.5, 2.0)
    assert str(first[1].price) == "-0.0" and str(first[1].size) == "0.0"
    assert math.isnan(first[2].price)
    other = (ARRAY, (RECORD, None, ((DOUBLE,), (DOUBLE,))))
    plain, _ = vm.decode(other, data)
    assert type(plain[0]) is tuple and plain[0] == (1.5, 2.0)
    changed, _ = vm.decode(prog, vm.encode(prog, [PriceSize(1.5, 2.5)]))
    assert changed[0] == PriceSize(1.5, 2.5)
    with pytest.raises(ValueError, match="byte"):
        vm.decode(prog, data[:-3])


def test_two_double_record_arrays_encode_fast_path_like_the_general_path() -> None:
    """Arrays of two-double records (ladders) are written 16 bytes at a time when both fields are
    floats; ints, float subclasses and wrong shapes take the general path: same bytes, same errors."""

    class MyFloat(float):
        pass

    prog = (ARRAY, (RECORD, PriceSize, ((DOUBLE,), (DOUBLE,))))
    levels = [PriceSize(1.5, 2.0), PriceSize(1000, 13002), PriceSize(-0.0, float("inf")),
              (MyFloat(2.5), 1.0), PriceSize(float("nan"), 1)]
    data = vm.encode(prog, levels)
    expected = b"\x0a" + b"".join(struct.pack("<dd", float(p), float(s)) for p, s in levels) + b"\x00"
    assert data == expected
    decoded, _ = vm.decode(prog, data)
    assert [tuple(lv) for lv in decoded[:2]] == [(1.5, 2.0), (1000.0, 13002.0)]
    with pytest.raises(ValueError, match=r"item 1: record expects a tuple of 2 fields, got 3"):
        vm.encode(prog, [PriceSize(1.5, 2.0), (1.0, 2.0, 3.0)])
    with pytest.raises(TypeError, match=r"item 0: field 1 \(size\): expected float, got str"):
        vm.encode(prog, [PriceSize(1.5, "2")])
