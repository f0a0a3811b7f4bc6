"""The C column decoder (`VM.decode_columns`): Avro blocks straight to Arrow, equal to the record path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_trades
from tests.strategies import strategy_for
from ticktape.codec import VM, default_codec
from ticktape.errors import DecodeError
from ticktape.events import Event, OrderFilled, Quote
from ticktape.schemas import registry
from ticktape.tape.columnar import (
    FAST_MIN_RECORDS,
    block_table,
    decode_block_table,
    entries_to_tables,
    events_to_table,
    is_flat,
    read_columnar,
)
from ticktape.tape.container import Header
from ticktape.tape.file import EntryDecoder, FileTape

pytestmark = pytest.mark.skipif(VM is None, reason="the C extension is not built")

FLAT_TYPES = [n for n in registry().names() if is_flat(n)]
NAMED = ["Trade", "Quote", "Bar", "OrderFilled", "PlaceOrder", "CustomData", "Balance"]


def decoder() -> EntryDecoder:
    codec = default_codec()
    return EntryDecoder(codec, Header(codec.registry.entry_schema(), {}, b"", 0), "test block")


DEC = decoder()


def encode_block(entries: list[tuple[str | None, Event]]) -> bytes:
    assert VM is not None
    out = bytearray()
    VM.encode_many(DEC.prog, entries, out)
    return bytes(out)


def record_path(data: bytes, count: int, first: int) -> list[tuple[str, pa.Table]]:
    """The existing path: records as Python objects, then `events_to_table` per run."""
    entries = DEC.decode(data, count, first)
    return list(entries_to_tables([(first + i, k, e) for i, (k, e) in enumerate(entries)]))


def column_path(data: bytes, count: int, first: int) -> list[tuple[str, pa.Table]]:
    fast = decode_block_table(DEC, data, count, first)
    return [fast] if fast is not None else record_path(data, count, first)


def test_the_named_types_are_flat() -> None:
    assert set(NAMED) <= set(FLAT_TYPES)


@pytest.mark.parametrize("type_name", FLAT_TYPES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_flat_blocks_decode_to_the_same_table(type_name: str, data: st.DataObject) -> None:
    events = data.draw(st.lists(strategy_for(registry().current[type_name].schema), min_size=1, max_size=40))
    keys = data.draw(st.lists(st.none() | st.text(max_size=8), min_size=len(events), max_size=len(events)))
    first = data.draw(st.integers(0, 1 << 40))
    block = encode_block(list(zip(keys, events, strict=True)))
    fast = decode_block_table(DEC, block, len(events), first)
    assert fast is not None
    name, table = fast
    assert name == type_name
    expected = events_to_table(type_name, range(first, first + len(events)), keys, events)
    assert table.schema == expected.schema
    assert table.equals(expected)
    assert record_path(block, len(events), first) == [(type_name, expected)]


def test_nullable_fields_and_keys_get_validity() -> None:
    fills = [OrderFilled("r", f"c{i}", None if i % 3 else f"v{i}", "binance", "BTCUSDT", i, i, f"f{i}", "BUY",
                         1.0, 2.0, 0.1, "MAKER", 3.0) for i in range(10)]
    keys = [None if i % 2 else "k" for i in range(10)]
    fast = decode_block_table(DEC, encode_block(list(zip(keys, fills, strict=True))), 10, 5)
    assert fast is not None
    table = fast[1]
    assert table.column("venue_order_id").to_pylist() == [f.venue_order_id for f in fills]
    assert table.column("_key").null_count == 5
    assert table.column("_offset").to_pylist() == list(range(5, 15))
    assert table.equals(events_to_table("OrderFilled", range(5, 15), keys, fills))


def test_mixed_and_nested_blocks_fall_back() -> None:
    trades = make_trades(3)
    q = Quote("binance", "BTCUSDT", 1, 1, 1.0, 1.0, 2.0, 1.0)
    mixed = [("a", trades[0]), ("a", trades[1]), ("b", q), ("a", trades[2])]
    block = encode_block(mixed)  # type: ignore[arg-type]
    assert decode_block_table(DEC, block, 4, 0) is None
    runs = column_path(block, 4, 0)
    assert [(n, t.column("_offset").to_pylist()) for n, t in runs] == [("Trade", [0, 1]), ("Quote", [2]),
                                                                       ("Trade", [3])]
    assert runs == record_path(block, 4, 0)
    assert decode_block_table(DEC, b"", 0, 0) is None


def _trade_block(n: int) -> tuple[bytes, list[Event]]:
    events: list[Event] = list(make_trades(n))
    return encode_block([(None if i % 4 == 0 else f"k{i}", e) for i, e in enumerate(events)]), events


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 10_000))
def test_truncated_blocks_raise_decode_error_like_the_record_path(cut: int) -> None:
    block, events = _trade_block(20)
    short = block[:cut % len(block)]
    with pytest.raises(DecodeError, match="corrupt block at offset 7"):
        decode_block_table(DEC, short, len(events), 7)
    with pytest.raises(DecodeError, match="corrupt block at offset 7"):
        record_path(short, len(events), 7)


def _outcome(f: Any, data: bytes, count: int) -> Any:
    try:
        return [(n, t.schema, str(t.to_pylist())) for n, t in f(data, count, 0)]  # str: NaN compares equal
    except DecodeError as exc:
        return ("DecodeError", "corrupt" in str(exc) or "stray" in str(exc))


@settings(max_examples=300, deadline=None)
@given(at=st.integers(0, 10_000), value=st.integers(0, 255), extra=st.booleans())
def test_corrupt_blocks_fail_or_succeed_the_same_way_as_the_record_path(at: int, value: int, extra: bool) -> None:
    block, events = _trade_block(12)
    corrupt = bytearray(block)
    corrupt[at % len(block)] = value
    if extra:
        corrupt += b"\x00"  # stray bytes after the records
    data = bytes(corrupt)
    assert _outcome(column_path, data, len(events)) == _outcome(record_path, data, len(events))


def test_bad_utf8_enum_index_and_record_count_are_rejected() -> None:
    block, _ = _trade_block(1)
    # ..., aggressor_side (index 1), trade_id "0", then v2's three null unions
    assert block.endswith(b"\x02" + b"\x02" + b"0" + b"\x00" * 3)
    bad_enum = block[:-6] + b"\x0a" + block[-5:]  # index 5 of 2 symbols
    with pytest.raises(DecodeError, match="enum index 5"):
        decode_block_table(DEC, bad_enum, 1, 0)
    with pytest.raises(DecodeError, match="enum index 5"):
        DEC.decode(bad_enum, 1, 0)
    name = b"BTCUSDT"
    i = block.index(name)
    bad = block[:i] + b"\xed\xa0\x80" + block[i + 3:]  # a UTF-16 surrogate: not valid UTF-8
    with pytest.raises(DecodeError, match="UTF-8"):
        decode_block_table(DEC, bad, 1, 0)
    with pytest.raises(DecodeError, match="UTF-8"):
        DEC.decode(bad, 1, 0)
    with pytest.raises(DecodeError, match="count"):
        decode_block_table(DEC, block, 10_000, 0)  # more records than bytes


def test_file_tape_columnar_read_uses_the_fast_path_and_matches(tmp_path: Path) -> None:
    tape = FileTape(tmp_path, segment_bytes=40_000)
    trades = make_trades(3_000)
    q = Quote("binance", "BTCUSDT", 1, 1, 1.0, 1.0, 2.0, 1.0)
    for i in range(0, 3_000, 500):
        tape.append("md.t", trades[i:i + 500])
    tape.append("md.t", [trades[0], q, trades[1]])  # a mixed block
    tape.append("md.t", trades[:5])  # a small block: record path, joined to the run before
    seg = tape._log("md.t", 0).segments[0]
    assert seg.blocks[0].records >= FAST_MIN_RECORDS
    assert isinstance(block_table(seg, 0), tuple)
    all_events: list[Event] = [*trades, trades[0], q, trades[1], *trades[:5]]
    for _ in range(2):  # the second read comes from the Parquet copies
        got = list(read_columnar(tape, "md.t"))
        # Runs of one type, as segments cut them: where a segment ends depends on its header (the size of
        # every schema), so the small block may start a segment of its own and then be a run of its own.
        names = [n for i, (n, _) in enumerate(got) if i == 0 or got[i - 1][0] != n]
        assert names[-3:] == ["Trade", "Quote", "Trade"]
        table = pa.concat_tables([t for n, t in got if n == "Trade"])
        trades_only = [(o, e) for o, e in enumerate(all_events) if e is not q]
        keys = [tape.codec.key_of(e) for _, e in trades_only]
        expected = events_to_table("Trade", [o for o, _ in trades_only], keys, [e for _, e in trades_only])
        assert table.equals(expected)


_TRICKY = [b"\xc0\x80", b"\xc2\x80", b"\xe0\x80\x80", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xed\xa0\x80",
           b"\xef\xbf\xbf", b"\xf0\x8f\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80",
           b"\xf5\x80\x80\x80", b"\xff", b"\x80", b"a"]


@settings(max_examples=300, deadline=None)
@given(raw=st.lists(st.sampled_from(_TRICKY) | st.binary(max_size=3), max_size=6).map(b"".join))
def test_utf8_validation_matches_python(raw: bytes) -> None:
    raw = raw[:16].ljust(16, b"a")
    trade = make_trades(1)[0]._replace(trade_id="X" * 16)
    block = encode_block([("k", trade)] * FAST_MIN_RECORDS)
    block = block.replace(b"X" * 16, raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(DecodeError, match="UTF-8"):
            decode_block_table(DEC, block, FAST_MIN_RECORDS, 0)
        return
    fast = decode_block_table(DEC, block, FAST_MIN_RECORDS, 0)
    assert fast is not None
    assert fast[1].column("trade_id").to_pylist() == [raw.decode("utf-8")] * FAST_MIN_RECORDS


@pytest.mark.parametrize("from_offset", [0, 7, 1_234])
def test_analyzer_block_reader_mixes_fast_tables_and_record_blocks(tmp_path: Path, from_offset: int) -> None:
    from analyzer.arrow_schema import events_to_table as analyzer_table
    from analyzer.source import chunks

    tape = FileTape(tmp_path, segment_bytes=60_000)
    trades = make_trades(2_000)
    q = Quote("binance", "BTCUSDT", 1, 1, 1.0, 1.0, 2.0, 1.0)
    sizes = [500, 3, 600, 1, 400, 496]  # fast blocks and small (record path) blocks in one run
    at = 0
    for n in sizes:
        tape.append("md.t", trades[at:at + n])
        at += n
    tape.append("md.t", [q, trades[0]])
    events: list[Event] = [*trades, q, trades[0]]
    got = list(chunks(tape, "md.t", 0, from_offset, skip_bad=False, columnar=False))
    tables = [(c.type_name, c.table) for c in got if c.table is not None]
    assert [n for n, _ in tables] == ["Trade", "Quote", "Trade"]
    assert got[-1].next_offset == len(events)
    rest = trades[from_offset:]
    expected = analyzer_table("Trade", rest, list(range(from_offset, 2_000)), [tape.codec.key_of(e) for e in rest])
    assert tables[0][1].equals(expected)
    assert tables[1][1].column("_offset").to_pylist() == [2_000]


# Every column kind, nullable and not (the current schemas have no float or nullable bool, ...).
_KINDS: list[tuple[Any, pa.DataType, st.SearchStrategy[Any]]] = [
    ("long", pa.int64(), st.integers(-(1 << 63), (1 << 63) - 1)),
    ("int", pa.int32(), st.integers(-(1 << 31), (1 << 31) - 1)),
    ("double", pa.float64(), st.floats(allow_nan=False)),
    ("float", pa.float32(), st.floats(allow_nan=False, width=32)),
    ("boolean", pa.bool_(), st.booleans()),
    ("string", pa.string(), st.text(max_size=6)),
    ("bytes", pa.binary(), st.binary(max_size=6)),
    ({"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}, pa.string(), st.sampled_from(["A", "B", "C"])),
]


def _kinds_program(null_first: bool) -> Any:
    from ticktape import avro_program as ap
    fields = []
    for i, (avro, _, _) in enumerate(_KINDS):
        inner = {"type": "enum", "name": f"E{i}", "symbols": avro["symbols"]} if isinstance(avro, dict) else avro
        inner2 = {"type": "enum", "name": f"F{i}", "symbols": avro["symbols"]} if isinstance(avro, dict) else avro
        fields.append({"name": f"f{i}", "type": inner})
        fields.append({"name": f"n{i}", "type": ["null", inner2] if null_first else [inner2, "null"]})
    record = {"type": "record", "name": "Kinds", "fields": fields}
    other = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}
    entry = {"type": "record", "name": "Entry", "fields": [{"name": "key", "type": ["null", "string"]},
                                                          {"name": "event", "type": [other, record]}]}
    return ap.compile_schema(entry, {"Kinds": _KindsRow, "Other": type("Other", (tuple,), {})})


class _KindsRow(tuple[Any, ...]):
    """The synthetic record's class (a union of records picks its branch by class)."""


@settings(max_examples=100, deadline=None)
@given(data=st.data(), null_first=st.booleans())
def test_every_column_kind_matches_pa_array(data: st.DataObject, null_first: bool) -> None:
    from ticktape.tape.columnar import _column
    assert VM is not None
    prog = _kinds_program(null_first)
    row = st.tuples(*[s for _, _, s in _KINDS for s in (s, st.none() | s)])
    rows = data.draw(st.lists(row, min_size=1, max_size=30))
    out = bytearray()
    VM.encode_many(prog, [(None, _KindsRow(r)) for r in rows], out)
    res = VM.decode_columns(prog, bytes(out), 0, len(rows))
    assert res is not None
    branch, key, columns, end = res
    assert (branch, end, key[0] is not None) == (1, len(out), True)
    nodes = prog[2][1][1][1][2]
    for j, (node, col) in enumerate(zip(nodes, columns, strict=True)):
        typ = _KINDS[j // 2][1]
        got = _column(typ, node, len(rows), col)
        assert got.equals(pa.array([r[j] for r in rows], typ)), (j, got)
        if col[0] is not None:  # null slots are zeroed (fixed width) or repeat the offset (strings)
            valid = got.is_valid().to_pylist()
            if len(col) == 3:
                offs = memoryview(col[1]).cast("i")
                assert all(offs[i + 1] == offs[i] for i, v in enumerate(valid) if not v)
            elif typ != pa.bool_():
                width = len(col[1]) // len(rows)
                assert all(col[1][i * width:(i + 1) * width] == bytes(width) for i, v in enumerate(valid) if not v)
