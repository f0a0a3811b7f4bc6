"""Trade v2, Bar v2 and MarketDefinition v2 (issue 15): fields appended with null defaults.

Segments written while v1 was current stay on the fast path (records and columns), come out as
today's events with the new fields null, and load into the same DuckDB table as v2 events.
"""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
import pytest

from analyzer.load import connect, load
from benchmarks.bench_old_segments import older_codec
from ticktape.codec import VM, Codec, default_codec, make_converter, to_python
from ticktape.events import (
    Bar,
    KeyLineSelection,
    MarketBook,
    MarketDefinition,
    PriceSize,
    RunnerBook,
    RunnerDefinition,
    Trade,
)
from ticktape.schemas import SchemaRegistry, default_schema_dir, registry
from ticktape.tape import legacy, open_tape
from ticktape.tape.columnar import FAST_MIN_RECORDS, block_table, events_to_table, read_columnar
from ticktape.tape.file import FileTape

TS0 = 1_700_000_000_000_000_000
V2 = ("Trade.v2.avsc", "Bar.v2.avsc", "MarketDefinition.v2.avsc")


needs_c_columns = pytest.mark.skipif(VM is None, reason="the C column decoder is not built (or TICKTAPE_NO_CEXT=1): "
                                     "blocks then go the record path by design")


def v1_codec(tmp_path: Path) -> Codec:
    """The codec as it was before the v2 schemas (what wrote the tapes recorded until now)."""
    return older_codec(tmp_path / "schemas-v1", V2)


def v1_trade(i: int) -> Trade:
    return tuple.__new__(Trade, ("binance", "BTCUSDT", TS0 + i, TS0 + i, 100.0 + i, 0.5, "BUY", str(i)))  # type: ignore[arg-type]


def v1_bar(i: int) -> Bar:
    return tuple.__new__(Bar, ("binance", "BTCUSDT", TS0 + i, TS0 + i, "1m", 1.0, 2.0, 0.5, 1.5, 10.0 + i))  # type: ignore[arg-type]


def v1_definition(i: int) -> MarketDefinition:
    runner = RunnerDefinition(47972, 0.0, "ACTIVE", 1, "One", None, None, None)
    return tuple.__new__(MarketDefinition, (  # type: ignore[arg-type]
        "1.23", TS0 + i, TS0 + i, "31389771", "4339", "ev", "OR 280m", "WIN", "GB", "Sheffield", TS0, None, None,
        "OPEN", False, 0, False, "ODDS", 1, 4495990919 + i, "Europe/London", (runner,)))


def today(event: tuple[object, ...]) -> tuple[object, ...]:
    """The v1 event as today's class gives it: the appended fields at their null defaults."""
    cls = type(event)
    return tuple.__new__(cls, (*event, *[None] * (len(cls._fields) - len(event))))  # type: ignore[call-overload]


def test_v1_events_decode_as_v2_with_the_new_fields_null(tmp_path: Path) -> None:
    old = v1_codec(tmp_path)
    for event in (v1_trade(1), v1_bar(1), v1_definition(1)):
        data = old.encode(event)  # type: ignore[arg-type]
        got = default_codec().decode(data, where="test")
        assert got == today(event) and type(got) is type(event)
        # a single message (Kafka, raw) of a purely appended version: the fast engine, not Avro resolution
        assert default_codec().by_fingerprint[data[2:10]].decode_body.__name__ == "decode_upgraded"
    new = [Trade("binance", "BTCUSDT", 1, 2, 3.0, 4.0, "SELL", "5", first_trade_id=7, last_trade_id=9,
                 is_best_match=True),
           Bar("binance", "BTCUSDT", 1, 2, "1m", 1.0, 2.0, 0.5, 1.5, 3.0, quote_volume=4.5, trades=12,
               taker_buy_base_volume=1.0, taker_buy_quote_volume=1.5),
           today(v1_definition(0))._replace(  # type: ignore[attr-defined]
               bsp_market=True, market_base_rate=5.0, open_date=TS0, regulators=("MR_INT",),
                                     price_ladder_type="CLASSIC", key_line=(KeyLineSelection(1, -0.5),),
                                     number_of_active_runners=6, last_match_time=TS0 + 1)]
    for event in new:
        assert default_codec().decode(default_codec().encode(event), where="test") == event  # type: ignore[arg-type]


def test_a_single_market_book_v1_message_decodes_as_the_segment_reader_upgrades_it(tmp_path: Path) -> None:
    """MarketBook v2 appended fields inside RunnerBook: one message of v1 (Kafka, raw) takes the same
    upgrade as a v1 segment, on the fast engine, and equals Avro resolution of the same bytes."""
    runner = tuple.__new__(RunnerBook, (47972, 0.0, "ACTIVE", 2.5, 100.0, (PriceSize(2.48, 10.0),),
                                        (PriceSize(2.5, 7.0),), ()))
    book = tuple.__new__(MarketBook, ("1.23", TS0, TS0, "OPEN", False, 0, 1000.0, 1, True, False, 1, (runner,)))
    codecs = tmp_path / "schemas-mb1"
    codecs.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        if p.name != "MarketBook.v2.avsc":
            shutil.copy(p, codecs / p.name)
    data = Codec(SchemaRegistry.load(codecs)).encode(book)  # type: ignore[arg-type]
    tc = default_codec().by_fingerprint[data[2:10]]
    assert tc.decode_body.__name__ == "decode_upgraded"
    got = default_codec().decode(data, where="test")
    assert isinstance(got, MarketBook) and type(got.runners[0]) is RunnerBook
    v1 = SchemaRegistry.load(codecs).current["MarketBook"]
    resolved = fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(copy.deepcopy(v1.schema)),
                                          fastavro.parse_schema(copy.deepcopy(registry().current["MarketBook"].schema)))
    assert to_python(got) == to_python(make_converter(registry().current["MarketBook"].schema)(resolved, ""))


def write_v1_tape(tmp_path: Path) -> tuple[Path, list[Trade], list[Bar], list[MarketDefinition]]:
    trades = [v1_trade(i) for i in range(3 * FAST_MIN_RECORDS)]
    bars = [v1_bar(i) for i in range(FAST_MIN_RECORDS)]
    definitions = [v1_definition(i) for i in range(3)]
    root = tmp_path / "tape"
    with open_tape(f"file:{root}", codec=v1_codec(tmp_path)) as tape:
        tape.append("md.binance.aggtrade", trades)
        tape.append("md.binance.bar", bars)
        mixed: list[Trade | MarketDefinition] = [definitions[0], trades[0], definitions[1], trades[1], definitions[2]]
        tape.append("md.betfair.market", mixed, keys=["1.23"] * len(mixed))  # type: ignore[arg-type]
    return root, trades, bars, definitions


def test_a_v1_segment_reads_on_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, trades, bars, definitions = write_v1_tape(tmp_path)

    def no_avro(*args: object) -> None:
        raise AssertionError("a v1 record went through Avro resolution")
    monkeypatch.setattr(legacy, "_avro_resolver", no_avro)
    with open_tape(f"file:{root}") as tape:
        assert [r.event for r in tape.read("md.binance.aggtrade")] == [today(t) for t in trades]
        assert [r.event for r in tape.read("md.binance.bar")] == [today(b) for b in bars]
        assert [r.event for r in tape.read("md.betfair.market")] == [
            today(e) for e in (definitions[0], trades[0], definitions[1], trades[1], definitions[2])]
        decoders = [seg.decoder for log in tape._logs.values() for seg in log.segments if seg.decoder]  # type: ignore[attr-defined]
        assert decoders and not any(d.slow for d in decoders)
        assert {t.__name__ for d in decoders for t in d.resolvers} == {"OldTrade", "OldBar", "OldMarketDefinition"}
        # every one a pure append: extended with the defaults, no Avro resolution (MarketDefinition's
        # nested RunnerDefinition comes out as today's class)
        definition = next(r.event for r in tape.read("md.betfair.market") if isinstance(r.event, MarketDefinition))
        assert type(definition.runners[0]) is RunnerDefinition


@needs_c_columns
def test_a_v1_block_stays_columnar_with_the_new_columns_null(tmp_path: Path) -> None:
    root, trades, bars, _ = write_v1_tape(tmp_path)
    tape = FileTape(root)
    try:
        for topic, events, name in (("md.binance.aggtrade", trades, "Trade"), ("md.binance.bar", bars, "Bar")):
            seg = tape._log(topic, 0).segments[0]
            got = block_table(seg, 0)
            assert isinstance(got, tuple), f"{name}: v1 block fell back to the record path"
            expected = events_to_table(name, range(len(events)), ["BTCUSDT"] * len(events),
                                       [today(e) for e in events])  # type: ignore[misc]
            assert got[0] == name and got[1].equals(expected)
            [(type_name, table)] = list(read_columnar(tape, topic, cache_sealed=False))
            assert type_name == name and table.equals(expected)
    finally:
        tape.close()


def test_a_parquet_copy_made_before_v2_is_not_used(tmp_path: Path) -> None:
    """A sealed segment's Parquet copy written by v1 code lacks the new columns: decoded again instead."""
    root = tmp_path / "tape"
    trades = [v1_trade(i) for i in range(200)]
    with open_tape(f"file:{root}", codec=v1_codec(tmp_path), segment_bytes=4_000) as tape:
        for i in range(0, 200, 50):
            tape.append("md.t", trades[i:i + 50])
    tape = FileTape(root)
    try:
        first = tape._log("md.t", 0).segments[0]
        assert len(tape._log("md.t", 0).segments) > 1
        list(read_columnar(tape, "md.t"))  # writes the sealed segments' copies
        [copy] = first.path.parent.glob(f"{first.path.stem}.*.parquet")
        old = pq.read_table(copy)
        pq.write_table(old.drop_columns(["first_trade_id", "last_trade_id", "is_best_match"])
                       .replace_schema_metadata(old.schema.metadata), copy)
        got = [e for _, t in read_columnar(tape, "md.t") for e in t.column("is_best_match").to_pylist()]
        assert got == [None] * 200
        assert "is_best_match" in pq.read_table(copy).column_names  # rewritten
    finally:
        tape.close()


@pytest.mark.parametrize("written", ["v1 then v2", "v2 then v1"])
def test_the_analyzer_loads_v1_and_v2_into_one_table_each(tmp_path: Path, written: str) -> None:
    root, trades, bars, definitions = write_v1_tape(tmp_path)
    newer = [Trade("binance", "BTCUSDT", TS0 + 999, TS0 + 999, 9.0, 1.0, "SELL", "999", first_trade_id=10,
                   last_trade_id=12, is_best_match=True)]
    new_bar = [Bar("binance", "BTCUSDT", TS0 + 999, TS0 + 999, "1m", 1.0, 2.0, 0.5, 1.5, 3.0, 4.5, 12, 1.0, 1.5)]
    new_def = [today(v1_definition(9))._replace(  # type: ignore[attr-defined]
        regulators=("MR_INT",), bsp_market=True, market_base_rate=5.0)]
    con = connect(str(tmp_path / "a.duckdb"))
    if written == "v2 then v1":  # a database made by v2 code first, then an old tape's v1 segments
        root2 = tmp_path / "tape2"
        with open_tape(f"file:{root2}") as tape:
            tape.append("md.binance.trade", newer)
        load(f"file:{root2}", con)
    with open_tape(f"file:{root}") as tape:
        if written == "v1 then v2":
            load(tape, con)
        tape.append("md.binance.aggtrade", newer)
        tape.append("md.binance.bar", new_bar)
        tape.append("md.betfair.market", new_def, keys=["1.23"])  # type: ignore[arg-type]
    load(f"file:{root}", con)
    rows = con.execute("SELECT trade_id, first_trade_id, last_trade_id, is_best_match FROM trade "
                       "WHERE _topic = 'md.binance.aggtrade' ORDER BY ts_event, _offset").fetchall()
    assert len(rows) == len(trades) + 1
    assert rows[0] == ("0", None, None, None) and rows[-1] == ("999", 10, 12, True)
    bar_counts = con.execute("SELECT count(*), count(quote_volume), sum(trades) FROM bar").fetchone()
    assert bar_counts == (len(bars) + 1, 1, 12)
    assert con.execute("SELECT count(*), count(regulators), max(market_base_rate) FROM market_definition"
                       ).fetchone() == (len(definitions) + 1, 1, 5.0)


def test_the_registry_has_the_v2_versions() -> None:
    for name in ("Trade", "Bar", "MarketDefinition"):
        assert [v.version for v in registry().history(name)] == [1, 2]


@needs_c_columns
def test_v2_blocks_with_values_and_nulls_decode_columnar_as_by_record(tmp_path: Path) -> None:
    """The C column decoder on the new nullable columns (long, boolean, double), values and nulls mixed."""
    trades = [Trade("binance", "BTCUSDT", TS0 + i, TS0 + i, 100.0 + i, 0.5, "SELL", str(i),
                    first_trade_id=None if i % 3 == 0 else 10 * i, last_trade_id=None if i % 3 == 0 else 10 * i + 2,
                    is_best_match=None if i % 5 == 0 else bool(i % 2)) for i in range(2 * FAST_MIN_RECORDS)]
    bars = [Bar("binance", "BTCUSDT", TS0 + i, TS0 + i, "1m", 1.0, 2.0, 0.5, 1.5, 3.0,
                quote_volume=None if i % 4 == 0 else 4.5 + i, trades=None if i % 4 == 1 else i,
                taker_buy_base_volume=None if i % 4 == 2 else 1.0, taker_buy_quote_volume=float(i))
            for i in range(2 * FAST_MIN_RECORDS)]
    tape = FileTape(tmp_path / "tape")
    try:
        for topic, events, name in (("t", trades, "Trade"), ("b", bars, "Bar")):
            tape.append(topic, events)  # type: ignore[arg-type]
            got = block_table(tape._log(topic, 0).segments[0], 0)
            assert isinstance(got, tuple), name
            expected = events_to_table(name, range(len(events)), ["BTCUSDT"] * len(events), events)  # type: ignore[arg-type]
            assert got[1].equals(expected)
            assert [r.event for r in tape.read(topic)] == events
    finally:
        tape.close()
