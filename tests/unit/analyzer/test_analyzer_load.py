"""`ticktape load`: typed tables per event type, incremental, atomic, bad input handled."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from analyzer.load import LoadError, connect, load
from analyzer.source import _file_blocks, _generic
from tests.conftest import make_trades
from ticktape.codec import to_python
from ticktape.events import MarketBook, OrderFilled, PriceSize, Quote, RunnerBook
from ticktape.tape import open_tape
from ticktape.tape.file import FileTape

REPO = Path(__file__).resolve().parents[3]
TS0 = 1_700_000_000_000_000_000


def book(i: int) -> MarketBook:
    runner = RunnerBook(47972 + i, 0.0, "ACTIVE", 2.5 if i % 2 else None, 100.0 + i,
                        (PriceSize(2.48, 10.0), PriceSize(2.46, 5.5)), (PriceSize(2.5, 7.0),), ())
    return MarketBook("1.2345", TS0 + i, TS0 + i + 7, "OPEN", bool(i % 2), 0, 1000.0 + i, i, True, False, 1,
                      (runner,))


def fill(i: int) -> OrderFilled:
    return OrderFilled("bot", f"bot-{i}-0", None, "sim", "BTCUSDT", TS0 + i, TS0 + i + 9, f"f{i}",
                       "BUY" if i % 2 else "SELL", 100.0 + i, 0.5, 0.01, "TAKER", 0.0)


@pytest.fixture
def tape(tmp_path: Path) -> FileTape:
    t = FileTape(tmp_path / "tape")
    yield t
    t.close()


def test_every_type_gets_a_typed_table_with_positions_and_a_timestamp_view(tape: FileTape) -> None:
    tape.create_topic("md.trade", 2)
    trades = make_trades(50) + make_trades(30, instrument="ETHUSDT")
    tape.append("md.trade", trades)
    tape.append("md.quote", [Quote("binance", "BTCUSDT", TS0 + i, TS0 + i, 1.0 + i, 2.0, 1.5 + i, 3.0)
                             for i in range(5)])
    tape.append("md.betfair", [book(i) for i in range(4)])
    tape.append("orders.event", [fill(i) for i in range(3)], keys=["run-1"] * 3)
    con = duckdb.connect()
    summary = load(tape, con)
    assert summary.rows == 80 + 5 + 4 + 3 and summary.bad == 0

    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'market_book'").fetchall())
    assert types["_offset"] == "BIGINT" and types["_partition"] == "INTEGER" and types["_topic"] == "VARCHAR"
    assert types["ts_event"] == "BIGINT" and types["in_play"] == "BOOLEAN" and types["bet_delay"] == "INTEGER"
    assert types["runners"].startswith("STRUCT(") and types["runners"].endswith("[]")
    assert "available_to_back STRUCT(price DOUBLE, size DOUBLE)[]" in types["runners"]
    # nested ladders are queryable as lists of structs
    rows = con.execute("SELECT _offset, runners[1].selection_id, runners[1].available_to_back[2].size, "
                       "runners[1].last_price_traded FROM market_book ORDER BY _offset").fetchall()
    assert rows == [(0, 47972, 5.5, None), (1, 47973, 5.5, 2.5), (2, 47974, 5.5, None), (3, 47975, 5.5, 2.5)]
    view_types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = 'trade_v'").fetchall())
    assert view_types["ts_event"] == "TIMESTAMP_NS" and view_types["ts_recv"] == "TIMESTAMP_NS"
    assert con.execute("SELECT epoch_ns(ts_event) FROM trade_v WHERE trade_id = '7' AND instrument = 'BTCUSDT'"
                       ).fetchone() == (trades[7].ts_event,)
    # each row is its event, at its position on the tape
    for rec in tape.read("md.trade", 1):
        row = con.execute("SELECT * EXCLUDE (_topic, _partition, _offset, _key) FROM trade "
                          "WHERE _partition = 1 AND _offset = ?", [rec.offset]).fetchone()
        assert row == tuple(to_python(rec.event).values())
    assert con.execute("SELECT DISTINCT _key, _topic FROM order_filled").fetchall() == [("run-1", "orders.event")]
    counts = dict(con.execute('SELECT _partition, count(*) FROM trade GROUP BY 1').fetchall())
    assert sum(counts.values()) == 80 and counts == {p: n for p, n in tape.end_offsets("md.trade").items()}


def test_reloading_loads_only_what_is_new(tape: FileTape) -> None:
    tape.append("md.trade", make_trades(100))
    con = duckdb.connect()
    assert load(tape, con).rows == 100
    assert load(tape, con).rows == 0
    tape.append("md.trade", make_trades(40, start=100))
    second = load(tape, con, batch_rows=7)
    assert second.rows == 40 and second.partitions[0].start_offset == 100
    assert con.execute('SELECT count(*), count(DISTINCT _offset), max(_offset) FROM trade').fetchone() == (
        140, 140, 139)
    assert con.execute("SELECT next_offset, events FROM load_bookmarks").fetchall() == [(140, 140)]


def test_topics_from_and_to(tape: FileTape) -> None:
    tape.append("a", make_trades(100))  # ts_event = TS0 + i * 1ms
    tape.append("b", make_trades(10))
    con = duckdb.connect()
    s = load(tape, con, topics=["a"], from_ns=TS0 + 20_000_000, to_ns=TS0 + 59_000_000)
    assert s.rows == 40
    assert con.execute('SELECT min(_offset), max(_offset), count(DISTINCT _topic) FROM trade').fetchone() == (
        20, 59, 1)
    # the next load (no bounds) continues exactly where --to stopped
    assert load(tape, con, topics=["a"]).rows == 40
    assert con.execute('SELECT count(*) FROM trade').fetchone() == (80,)
    with pytest.raises(LoadError, match="no topic 'nope'"):
        load(tape, con, topics=["nope"])


def _corrupt_record(tape_root: Path, topic: str, index: int) -> None:
    """Make the `index`-th record's venue string length negative (so it cannot decode)."""
    seg = sorted((tape_root / topic / "0").glob("*.avro"))[0]
    data = bytearray(seg.read_bytes())
    hits = [m.start() for m in re.finditer(rb"\x0ebinance", data)]
    data[hits[index]] = 0x7F
    seg.write_bytes(bytes(data))


def _checksum_as_is(tape_root: Path, topic: str) -> None:
    """Give every block of a partition the checksum of its bytes as they are now: a block that was
    written bad (by a buggy producer, say) rather than damaged on disk."""
    import crc32c

    from ticktape.tape.index import INDEX_MAGIC, V2, index_bytes, parse_entries

    idx = sorted((tape_root / topic / "0").glob("*.idx"))[0]
    data = idx.with_suffix(".avro").read_bytes()
    entries = parse_entries(idx.read_bytes()[len(INDEX_MAGIC):], V2).entries
    idx.write_bytes(index_bytes([e._replace(crc=crc32c.crc32c(data[e.pos:e.end])) for e in entries]))


def _three_blocks_with_offset_150_corrupt(tmp_path: Path) -> Path:
    """A tape of 3 blocks of 100 trades whose record at offset 150 cannot decode; its root."""
    root = tmp_path / "tape"
    with FileTape(root) as t:
        for i in range(3):
            t.append("md.trade", make_trades(100, start=i * 100))
    _corrupt_record(root, "md.trade", 150)
    return root


def test_corrupt_record_stops_the_load_naming_it_and_skip_bad_loads_the_rest(tmp_path: Path) -> None:
    """A block written bad (its checksum matches) is salvaged record by record."""
    root = _three_blocks_with_offset_150_corrupt(tmp_path)
    _checksum_as_is(root, "md.trade")
    tape = FileTape(root)
    con = duckdb.connect()
    with pytest.raises(LoadError, match=r"topic md.trade partition 0 offset 150") as info:
        load(tape, con)
    assert "--skip-bad" in str(info.value)
    # everything before the bad record loaded, in one consistent state
    assert con.execute('SELECT count(*), max(_offset) FROM trade').fetchone() == (150, 149)
    assert con.execute("SELECT next_offset FROM load_bookmarks").fetchone() == (150,)
    s = load(tape, con, skip_bad=True)
    assert (s.rows, s.bad) == (100, 50)  # the rest of the corrupt block has no findable record boundary
    errors = con.execute('SELECT "offset", error FROM load_errors ORDER BY "offset"').fetchall()
    assert [o for o, _ in errors] == list(range(150, 200))
    # the facts, not one engine's words (the C and the Python decoder phrase it differently)
    assert "offset 150" in errors[0][1] and "length -64" in errors[0][1]
    assert con.execute('SELECT count(*), count(DISTINCT _offset) FROM trade WHERE _offset BETWEEN 150 AND 199'
                       ).fetchone() == (0, 0)
    assert con.execute('SELECT count(*) FROM trade').fetchone() == (250,)
    assert con.execute("SELECT next_offset, events, errors FROM load_bookmarks").fetchone() == (300, 250, 50)
    tape.close()


def test_block_failing_its_checksum_is_bad_as_a_whole(tmp_path: Path) -> None:
    """Damage inside a checksummed block: no record of it is trusted, the other blocks load."""
    root = _three_blocks_with_offset_150_corrupt(tmp_path)
    tape = FileTape(root)
    con = duckdb.connect()
    with pytest.raises(LoadError, match=r"topic md.trade partition 0 offset 100.*fails its checksum"):
        load(tape, con)
    assert con.execute('SELECT count(*), max(_offset) FROM trade').fetchone() == (100, 99)
    s = load(tape, con, skip_bad=True)
    assert (s.rows, s.bad) == (100, 100)
    errors = con.execute('SELECT "offset", error FROM load_errors ORDER BY "offset"').fetchall()
    assert [o for o, _ in errors] == list(range(100, 200))
    assert "ticktape repair" in errors[0][1]
    assert con.execute("SELECT next_offset, events, errors FROM load_bookmarks").fetchone() == (300, 200, 100)
    tape.close()


def test_generic_path_matches_the_file_path(tape: FileTape) -> None:
    tape.append("md.trade", make_trades(300))
    tape.append("md.trade", [Quote("binance", "BTCUSDT", TS0, TS0, 1.0, 2.0, 3.0, 4.0)])
    tape.append("md.trade", make_trades(5, start=300))
    a = list(_generic(tape, "md.trade", 0, 10, skip_bad=False))
    b = list(_file_blocks(tape, "md.trade", 0, 10, skip_bad=False))
    assert [c.type_name for c in a] == [c.type_name for c in b] == ["Trade", "Quote", "Trade"]
    assert [c.next_offset for c in a] == [c.next_offset for c in b] == [300, 301, 306]
    for x, y in zip(a, b, strict=True):
        assert x.table.equals(y.table)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from analyzer.load import connect, load
    from ticktape.tape import open_tape

    con = connect(sys.argv[2])
    load(open_tape(sys.argv[1]), con, batch_rows=20_000, on_progress=lambda n: print(n, flush=True))
""")


@pytest.mark.slow
def test_a_load_killed_midway_leaves_a_consistent_database(tmp_path: Path) -> None:
    n = 400_000
    with FileTape(tmp_path / "tape") as t:
        for start in range(0, n, 10_000):
            t.append("md.trade", make_trades(10_000, start=start))
    db = tmp_path / "a.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, f"file:{tmp_path / 'tape'}", str(db)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip()  # one batch committed: the load is well under way
    proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = connect(str(db))
    loaded, distinct, top = con.execute('SELECT count(*), count(DISTINCT _offset), max(_offset) FROM trade'
                                        ).fetchone()
    assert 0 < loaded < n, "the kill should land mid-load"
    assert loaded == distinct == top + 1
    assert con.execute("SELECT next_offset FROM load_bookmarks").fetchone() == (loaded,)
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    assert load(tape, con).rows == n - loaded
    assert con.execute('SELECT count(*), count(DISTINCT _offset), min(_offset), max(_offset) FROM trade'
                       ).fetchone() == (n, n, 0, n - 1)
    assert con.execute("SELECT sum(size) FROM trade").fetchone()[0] == pytest.approx(
        sum(t.size for t in make_trades(n)))
    tape.close()


def _segment_with_unknown_type(root: Path) -> None:
    """A second segment whose writer union has a type no schema in schemas/ knows (a newer writer's).

    Records: a Trade (offset 1), a `ticktape.Mystery` (offset 2), a Trade (offset 3).
    """
    import copy
    import io
    import os

    import fastavro

    from ticktape.codec import default_codec
    from ticktape.tape.container import encode_block, encode_header
    from ticktape.tape.index import V1_ENTRY  # a segment as versions before checksums wrote it

    schema = copy.deepcopy(default_codec().registry.entry_schema())
    schema["fields"][1]["type"].append({"type": "record", "name": "Mystery", "namespace": "ticktape",
                                        "fields": [{"name": "a", "type": "long"}]})
    parsed = fastavro.parse_schema(copy.deepcopy(schema))
    trades = make_trades(3, start=1)
    body = io.BytesIO()
    for rec in ({"key": "BTCUSDT", "event": ("ticktape.Trade", to_python(trades[0]))},
                {"key": "k", "event": ("ticktape.Mystery", {"a": 5})},
                {"key": "BTCUSDT", "event": ("ticktape.Trade", to_python(trades[2]))}):
        fastavro.schemaless_writer(body, parsed, rec)
    sync = os.urandom(16)
    header = encode_header(schema, {"ticktape.topic": "x"}, sync)
    seg = root / "x" / "0" / f"{1:020d}.avro"
    seg.write_bytes(header + encode_block(3, body.getvalue(), sync))
    seg.with_suffix(".idx").write_bytes(V1_ENTRY.pack(1, len(header), 3, trades[0].ts_event, trades[2].ts_event,
                                                  trades[2].ts_event))


def test_unknown_schema_stops_the_load_naming_the_record(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    with FileTape(root) as t:
        t.append("x", make_trades(1))
    _segment_with_unknown_type(root)
    tape = FileTape(root)
    con = duckdb.connect()
    with pytest.raises(LoadError, match=r"topic x partition 0 offset 2") as info:
        load(tape, con)
    assert "cannot be read with the current schemas" in str(info.value)
    assert con.execute('SELECT count(*) FROM trade').fetchone() == (2,)  # offsets 0 and 1
    s = load(tape, con, skip_bad=True)
    assert (s.rows, s.bad) == (0, 2)
    assert [r[0] for r in con.execute('SELECT "offset" FROM load_errors ORDER BY 1').fetchall()] == [2, 3]
    tape.close()


def test_a_database_refuses_the_same_topic_from_another_tape(tmp_path: Path) -> None:
    with FileTape(tmp_path / "a") as a, FileTape(tmp_path / "b") as b:
        a.append("md.trade", make_trades(10))
        b.append("md.trade", make_trades(20))
        b.append("other", make_trades(3))
        con = duckdb.connect()
        assert load(a, con).rows == 10
        assert load(open_tape(f"file:{tmp_path / 'x' / '..' / 'a'}"), con).rows == 0  # same tape, other spelling
        with pytest.raises(LoadError, match="was loaded from"):
            load(b, con)
        assert load(b, con, topics=["other"]).rows == 3  # a topic it does not share is fine
