"""`ticktape.tape.arrow_rows`: the C builder (`ticktape._rows`) against its Python twin.

Both must give the same events, value for value and type for type (a bool stays a bool, -0.0 and
NaN stay what they were), on every column kind the C side takes, on sliced batches (Arrow
offsets, bit offsets for booleans), on empty and all-empty strings; batches with a column it does
not take (some nulls, other types) go to the Python twin. Malformed specs raise, never crash
(this file runs under `scripts/sanitize`).
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticktape.events import Trade
from ticktape.tape import arrow_rows
from ticktape.tape.arrow_rows import batch_rows, c_rows, python_rows
from ticktape.tape.columnar import table_to_events

needs_c = pytest.mark.skipif(arrow_rows.ROWS is None or os.environ.get("TICKTAPE_NO_CEXT") == "1",
                             reason="the C builder is not built (or TICKTAPE_NO_CEXT=1)")


class Row(NamedTuple):
    f: float
    i: int
    b: bool
    s: str
    d: str
    n: Any


def same(a: list[Any], b: list[Any]) -> bool:
    """Equal rows with equal types, NaN equal to NaN and -0.0 told from 0.0."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if type(x) is not type(y) or len(x) != len(y):
            return False
        for u, v in zip(x, y, strict=True):
            if type(u) is not type(v):
                return False
            if isinstance(u, float):
                if not (math.isnan(u) and math.isnan(v)) and (u != v or math.copysign(1, u) != math.copysign(1, v)):
                    return False
            elif u != v:
                return False
    return True


def batch(rows: list[tuple[float, int, bool, str, str]]) -> pa.RecordBatch:
    f, i, b, s, d = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [], [])
    return pa.RecordBatch.from_arrays(
        [pa.array(f, pa.float64()), pa.array(i, pa.int64()), pa.array(b, pa.bool_()), pa.array(s, pa.string()),
         pa.array(d, pa.string()).dictionary_encode(), pa.nulls(len(rows), pa.int64())],
        names=list(Row._fields))


floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-300, 30000.01])
ints = st.integers(-(2**63), 2**63 - 1)
texts = st.text(max_size=6) | st.sampled_from(["", "BTCUSDT", "é€😀"])
rows_st = st.lists(st.tuples(floats, ints, st.booleans(), texts, st.sampled_from(["BUY", "SELL", "", "ß"])),
                   max_size=40)


@needs_c
@settings(max_examples=300, deadline=None)
@given(rows_st, st.integers(0, 41), st.integers(0, 41))
def test_c_equals_python_on_any_slice(rows: list[tuple[float, int, bool, str, str]], lo: int, size: int) -> None:
    whole = batch(rows)
    for b in (whole, whole.slice(min(lo, len(rows)), size)):
        built = c_rows(Row, b)
        assert built is not None
        assert same(built, list(python_rows(Row, b)))


@needs_c
def test_all_empty_strings_and_empty_batches() -> None:
    b = batch([(1.0, 1, True, "", "")] * 3)
    assert same(c_rows(Row, b) or [], list(python_rows(Row, b)))
    assert c_rows(Row, batch([])) == []


def test_batches_the_c_side_does_not_take_go_to_python() -> None:
    partly_null = pa.RecordBatch.from_arrays([pa.array([1.0, None, 3.0])], names=["f"])
    other_type = pa.RecordBatch.from_arrays([pa.array([1, 2], pa.int32())], names=["f"])

    class One(NamedTuple):
        f: Any

    for b in (partly_null, other_type):
        assert c_rows(One, b) is None
        assert list(batch_rows(One, b)) == list(python_rows(One, b))


@needs_c
def test_trade_tables_read_the_same_through_either_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    trades = [Trade("binance", "BTCUSDT", 10 + k, 20 + k, 30000.0 + k / 100, 0.5, "BUY" if k % 3 else "SELL",
                    str(k), None, None, k % 2 == 0) for k in range(20_000)]
    table = pa.Table.from_pylist([t._asdict() for t in trades])
    table = table.set_column(1, "instrument", table.column("instrument").dictionary_encode())
    fast = list(table_to_events("Trade", table.slice(7)))
    monkeypatch.setattr(arrow_rows, "ROWS", None)
    slow = list(table_to_events("Trade", table.slice(7)))
    assert same(fast, slow) and fast == trades[7:]


@needs_c
@pytest.mark.parametrize(("spec", "n", "error"), [
    ((1, b"\0" * 15, None, 0, None), 2, ValueError),  # float64 buffer too short
    ((1, b"\0" * 16, None, 1, None), 2, ValueError),  # the offset pushes it past the end
    ((2, b"\0" * 8, None, -1, None), 1, ValueError),  # negative offset
    ((3, b"", None, 0, None), 1, ValueError),  # bool bits missing
    ((4, b"\0" * 8, b"", 0, None), 2, ValueError),  # n + 1 offsets needed
    ((4, (0).to_bytes(4, "little") + (5).to_bytes(4, "little"), b"abc", 0, None), 1, ValueError),  # past the data
    ((4, (3).to_bytes(4, "little") + (1).to_bytes(4, "little"), b"abc", 0, None), 1, ValueError),  # backwards
    ((4, (0).to_bytes(4, "little") + (2).to_bytes(4, "little"), b"\xff\xfe", 0, None), 1, UnicodeDecodeError),
    ((5, (2).to_bytes(4, "little"), None, 0, ("a", "b")), 1, ValueError),  # index out of range
    ((5, (-1).to_bytes(4, "little", signed=True), None, 0, ("a",)), 1, ValueError),
    ((5, (0).to_bytes(4, "little"), None, 0, ["a"]), 1, TypeError),  # values not a tuple
    ((5, (0).to_bytes(4, "little"), None, 0, ([],)), 1, TypeError),  # a value that is not a str
    ((9, b"", None, 0, None), 1, ValueError),  # unknown kind
    ((2**40, b"", None, 0, None), 1, (ValueError, OverflowError)),
    ((1, b"\0" * 8, None), 1, TypeError),  # not five items
    ((1, 123, None, 0, None), 1, TypeError),  # no buffer
])
def test_malformed_specs_raise(spec: tuple[Any, ...], n: int, error: type[BaseException]) -> None:
    class One(NamedTuple):
        x: Any

    with pytest.raises(error):
        arrow_rows.ROWS.build(One, n, (spec,))


@needs_c
def test_build_refuses_what_is_not_an_event_tuple() -> None:
    rows = arrow_rows.ROWS
    with pytest.raises(TypeError):
        rows.build(dict, 1, ((0, None, None, 0, None),))
    with pytest.raises(ValueError):
        rows.build(Row, -1, ())
    assert rows.build(Row, 0, ()) == []


def test_rows_hash_and_compare_like_constructed_events() -> None:
    """Rows are allocated without tuple.__new__: from CPython 3.14 a tuple caches its hash, and the cache
    must start as "not computed" (as `ticktape/avro_bytes.h` does for the decoder), or dict lookups miss."""
    trade = Trade("binance", "BTCUSDT", 1, 2, 3.5, 0.25, "BUY", "7")
    batch = pa.Table.from_pylist([trade._asdict()]).to_batches()[0]
    for make in (python_rows, c_rows):
        built = make(Trade, batch)
        if built is None:
            continue  # TICKTAPE_NO_CEXT: no C rows to check
        rows = list(built)
        assert rows == [trade]
        assert hash(rows[0]) == hash(trade) and {rows[0]: 1}[trade] == 1
