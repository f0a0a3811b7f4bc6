"""`ticktape load` from every tape backend: the Kafka tape goes through the generic (Tape.read) path."""

from __future__ import annotations

import duckdb

from analyzer.load import load
from tests.conftest import TapeFactory, make_trades
from ticktape.events import Quote


def test_load_is_incremental_and_exact_on_every_backend(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    tape.create_topic(topic, 3)
    trades = [t for i in range(600) for t in make_trades(1, start=i, instrument=f"S{i % 7}")]
    tape.append(topic, trades[:400])
    tape.append(topic, [Quote("binance", "S1", 1, 2, 1.0, 2.0, 1.5, 3.0)], keys=["S1"])
    con = duckdb.connect()
    first = load(tape, con, topics=[topic], batch_rows=50)
    assert first.rows == 401
    tape.append(topic, trades[400:])
    second = load(tape, con, topics=[topic])
    assert second.rows == 200 and load(tape, con, topics=[topic]).rows == 0
    ends = tape.end_offsets(topic)
    got = dict(con.execute('SELECT _partition, count(*) FROM trade GROUP BY 1').fetchall())
    quotes = dict(con.execute('SELECT _partition, count(*) FROM quote GROUP BY 1').fetchall())
    assert {p: got.get(p, 0) + quotes.get(p, 0) for p in ends} == {p: n for p, n in ends.items()}
    assert con.execute('SELECT count(*), count(DISTINCT (_partition, _offset)) FROM trade').fetchone() == (600, 600)
    assert sorted(r[0] for r in con.execute("SELECT trade_id FROM trade").fetchall()) == sorted(
        t.trade_id for t in trades)
    marks = dict(((t, p), o) for t, p, o in con.execute('SELECT topic, "partition", next_offset FROM load_bookmarks'
                                                        ).fetchall())
    assert marks == {(topic, p): n for p, n in ends.items() if n}  # empty partitions need no bookmark
