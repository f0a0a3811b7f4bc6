"""Columnar access: Arrow tables per type, Parquet copies of sealed segments."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import make_trades, segment_header_bytes
from tests.strategies import strategy_for
from ticktape.codec import VM
from ticktape.events import MarketBook, PriceSize, Quote, RunnerBook
from ticktape.schemas import registry
from ticktape.tape.columnar import arrow_schema, events_to_table, iter_events_columnar, read_columnar, table_to_events
from ticktape.tape.file import FileTape


def book(i: int) -> MarketBook:
    runner = RunnerBook(i, 0.0, "ACTIVE", None if i % 2 else 2.5, 10.0 * i, (PriceSize(2.5, 10.0),),
                        (PriceSize(2.6, 5.0), PriceSize(2.7, 1.0)), ())
    return MarketBook("1.23", i, i, "OPEN", False, 0, 100.0, i, True, False, 1, (runner,))


def test_schema_maps_nested_types() -> None:
    schema = arrow_schema("MarketBook")
    assert schema.names[:3] == ["_offset", "_key", "market_id"]
    runners = schema.field("runners").type
    assert pa.types.is_list(runners) and pa.types.is_struct(runners.value_type)
    assert runners.value_type.field("last_price_traded").nullable
    assert arrow_schema("Trade").field("aggressor_side").type == pa.string()


@settings(max_examples=50, deadline=None)
@given(st.lists(strategy_for(registry().current["MarketBook"].schema), min_size=1, max_size=5))
def test_nested_events_round_trip_through_arrow(events: list[MarketBook]) -> None:
    table = events_to_table("MarketBook", list(range(len(events))), ["k"] * len(events), events)
    assert list(table_to_events("MarketBook", table)) == events


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_sealed_segments_get_parquet_copies(tmp_path: Path, compression: str) -> None:
    tape = FileTape(tmp_path, segment_bytes=30_000 if compression == "none" else 5_000, compression=compression)
    events = make_trades(3_000)
    for i in range(0, 3_000, 100):
        tape.append("md.trade", events[i:i + 100])
    segments = tape.segment_paths("md.trade")
    assert len(segments) >= 3
    tables = list(read_columnar(tape, "md.trade"))
    assert sum(t.num_rows for _, t in tables) == 3_000
    assert all(name == "Trade" for name, _ in tables)
    offsets = [o for _, t in tables for o in t.column("_offset").to_pylist()]
    assert offsets == list(range(3_000))
    parquet = sorted(tmp_path.glob("md.trade/0/*.parquet"))
    assert len(parquet) == len(segments) - 1  # every sealed segment, not the growing one
    assert list(iter_events_columnar(tape, "md.trade")) == events
    assert list(iter_events_columnar(tape, "md.trade", from_offset=2_345)) == events[2_345:]
    from_mid = list(read_columnar(tape, "md.trade", from_offset=1_234))
    assert from_mid[0][1].column("_offset")[0].as_py() == 1_234


def test_mixed_types_come_in_offset_ordered_runs(tmp_path: Path) -> None:
    tape = FileTape(tmp_path)
    q = Quote("binance", "BTCUSDT", 1, 1, 1.0, 1.0, 2.0, 1.0)
    trades = make_trades(3)
    tape.append("md.mixed", [trades[0], trades[1], q, trades[2], book(1)])
    runs = [(name, t.column("_offset").to_pylist()) for name, t in read_columnar(tape, "md.mixed")]
    assert runs == [("Trade", [0, 1]), ("Quote", [2]), ("Trade", [3]), ("MarketBook", [4])]
    assert list(iter_events_columnar(tape, "md.mixed")) == [trades[0], trades[1], q, trades[2], book(1)]


def test_a_parquet_copy_missing_rows_is_not_used(tmp_path: Path) -> None:
    """A copy made from a stale view of a sealed segment (its size tag right, blocks missing) is ignored."""
    from ticktape.tape.columnar import parquet_copy, write_parquet_copy

    tape = FileTape(tmp_path, segment_bytes=segment_header_bytes() + 5_100)
    for i in range(0, 300, 50):
        tape.append("md.trade", make_trades(50, start=i))
    seg = tape._log("md.trade", 0).segments[0]
    assert len(seg.blocks) > 1 and len(tape.segment_paths("md.trade")) > 1
    ((name, table),) = list(read_columnar(tape, "md.trade", cache_sealed=False))[:1]
    full = table.slice(0, seg.end_offset - seg.base)
    write_parquet_copy(seg, name, full.slice(0, full.num_rows - 1))
    assert parquet_copy(seg) is None
    write_parquet_copy(seg, name, full)
    copy = parquet_copy(seg)
    assert copy is not None and copy[1].num_rows == full.num_rows


def test_the_fast_path_knows_flat_types_without_arrow() -> None:
    from robots.fastread import flat_type
    from ticktape.tape.columnar import is_flat

    answers = {name: flat_type(name) for name in registry().names()}
    assert answers == {name: is_flat(name) for name in registry().names()}
    assert answers["Trade"] and not answers["MarketBook"]


def test_a_backtest_on_nested_books_reads_avro_only(tmp_path: Path) -> None:
    """Sealed MarketBook segments: no Arrow round trip (and no pyarrow import) on any run; the same
    events as reading the tape, from any offset."""
    import subprocess
    import sys

    from robots.fastread import partition_events

    tape = FileTape(tmp_path, segment_bytes=2_000)
    books = [book(i) for i in range(300)]
    for i in range(0, 300, 10):
        tape.append("md.betfair.market", books[i:i + 10])
    assert len(tape.segment_paths("md.betfair.market")) >= 3
    assert list(partition_events(tape, "md.betfair.market", 0, 0, 300)) == books
    assert list(partition_events(tape, "md.betfair.market", 0, 123, 300)) == books[123:]
    assert not list(tmp_path.glob("md.betfair.market/0/*.parquet"))
    code = ("import sys; from robots.fastread import partition_events; from ticktape.tape.file import FileTape;"
            f"n = sum(1 for _ in partition_events(FileTape({str(tmp_path)!r}), 'md.betfair.market', 0, 0, 300));"
            "print(n, 'pyarrow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["300", "False"]


@pytest.mark.parametrize("writable", [True, False])
def test_a_backtest_on_flat_segments_reads_arrow_from_the_first_run(tmp_path: Path, writable: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Sealed Trade segments: the first run converts the Avro blocks to Arrow (with the C engine, no
    event tuples built on the way), writes the Parquet copies and gives the same events, from any offset; a tape whose
    directory refuses the copy is read from the table and nothing is cached."""
    import robots.fastread
    from robots.fastread import partition_events
    from ticktape.tape import columnar

    tape = FileTape(tmp_path, segment_bytes=30_000)
    events = make_trades(3_000)
    for i in range(0, 3_000, 100):
        tape.append("md.trade", events[i:i + 100])
    assert len(tape.segment_paths("md.trade")) >= 3

    def no_events(*_: object) -> None:
        raise AssertionError("the first run built event tuples to make its Arrow table")
    if VM is not None:
        monkeypatch.setattr(columnar, "events_to_table", no_events)
    if not writable:
        def refuse(*_: object) -> None:
            raise PermissionError("read-only tape")
        monkeypatch.setattr(columnar, "write_parquet_copy", refuse)
    assert list(partition_events(tape, "md.trade", 0, 1_234, 3_000)) == events[1_234:]
    assert list(partition_events(tape, "md.trade", 0, 0, 3_000)) == events
    copies = list(tmp_path.glob("md.trade/0/*.parquet"))
    assert len(copies) == (len(tape.segment_paths("md.trade")) - 1 if writable else 0)
    assert list(partition_events(tape, "md.trade", 0, 5, 3_000)) == events[5:]  # from the copies
    assert robots.fastread.flat_type("Trade")
