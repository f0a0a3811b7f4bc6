"""The shared import machinery on every tape backend: batches, dead letters, bookmarks, summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.common import (
    IMPORTS_TOPIC,
    BatchAppender,
    ImportRun,
    ImportSummary,
    as_encoded,
    exit_code,
    file_identity,
    find_import,
    query_identity,
    summaries_text,
)
from tests.conftest import TapeFactory, make_trades
from ticktape.codec import default_codec
from ticktape.events import DeadLetter, SourceImported, Trade
from ticktape.tape import Encoded
from ticktape.timeutil import VirtualClock


def _all(tape, topic):  # type: ignore[no-untyped-def]
    return [r.event for p in range(tape.partitions(topic)) for r in tape.read(topic, p)]


def test_batch_appender_appends_in_batches_and_flushes_the_rest(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    trades = make_trades(25)
    app = BatchAppender(tape, batch_size=10)
    for t in trades[:7]:
        app.add(topic, t)
    assert app.pending == 7 and tape.partitions(topic) == 0
    app.extend(topic, trades[7:])  # 18 more: two full batches go out, 5 stay pending
    assert app.pending == 5
    assert sum(tape.end_offsets(topic).values()) == 20
    app.flush()
    assert app.counts == {topic: 25} and app.pending == 0
    assert sorted(_all(tape, topic), key=lambda e: int(e.trade_id)) == trades
    mixed = BatchAppender(tape, batch_size=4)  # an explicit key, then schema keys, on one topic
    mixed.add(topic + "k", trades[0], key="custom")
    mixed.extend(topic + "k", trades[1:3])
    mixed.extend(topic + "k", trades[3:5], key="BTCUSDT")
    mixed.flush()
    keys = sorted(r.key or "" for p in range(tape.partitions(topic + "k")) for r in tape.read(topic + "k", p))
    assert keys == ["BTCUSDT"] * 4 + ["custom"]


def test_batch_appender_takes_encoded_events_among_objects(tape_factory: TapeFactory, topic: str) -> None:
    """Encoded events (the Betfair importer's books) and objects in one batch: a batch holding any
    Encoded goes through append_encoded, the objects encoded by the codec, order and keys kept."""
    tape = tape_factory()
    codec = default_codec()
    trades = make_trades(9)
    app = BatchAppender(tape, batch_size=4)
    for i, t in enumerate(trades):
        if i % 3 == 1:
            app.add(topic, Encoded(codec.key_of(t), t.ts_event, codec.encode(t)))
        else:
            app.add(topic, t, key="k" if i == 5 else None)
    app.flush()
    records = sorted((r for p in range(tape.partitions(topic)) for r in tape.read(topic, p)),
                     key=lambda r: int(r.event.trade_id))
    assert [r.event for r in records] == trades and app.counts == {topic: 9}
    assert [r.key for r in records] == [codec.key_of(t) if i != 5 else "k" for i, t in enumerate(trades)]
    assert as_encoded(trades[:2], ["x", None]) == [Encoded("x", trades[0].ts_event, codec.encode(trades[0])),
                                                   Encoded(codec.key_of(trades[1]), trades[1].ts_event,
                                                           codec.encode(trades[1]))]


def test_import_run_dead_letters_bookmark_and_second_import_adds_nothing(tape_factory: TapeFactory,
                                                                        topic: str) -> None:
    tape = tape_factory()
    source = topic.replace("t.", "src")
    trades = make_trades(12)

    def run_once() -> ImportSummary:
        run = ImportRun(tape, source=source, kind="test.trades", name="trades.csv", source_id="sha256:abc" + topic,
                        clock=VirtualClock(42), batch_size=5)
        if not run.skipped:
            run.emit_many(topic, trades[:10])
            run.dead_letter("line 11", "price: not a number", b"x,y,z\n")
            run.emit(topic, trades[10])
        return run.finish()

    first = run_once()
    assert not first.skipped
    assert first.events == {topic: 11} and first.dead_letters == 1
    assert first.errors == ["line 11: price: not a number"]
    dls = _all(tape, f"dlq.{source}")
    assert dls == [DeadLetter(f"{source}:trades.csv", "line 11", "price: not a number", 42, 42, b"x,y,z\n")]
    mark = find_import(tape, "sha256:abc" + topic)
    assert isinstance(mark, SourceImported) and mark.events == 11 and mark.dead_letters == 1
    assert mark.ts_event == mark.ts_recv == 42 and set(mark.topics) == {topic, f"dlq.{source}"}

    second = run_once()
    assert second.skipped and second.total_events == 0
    assert sum(tape.end_offsets(topic).values()) == 11
    assert len(_all(tape, IMPORTS_TOPIC)) >= 1
    assert exit_code([first, second], strict=True) == 1 and exit_code([first, second], strict=False) == 0
    # the repeat reads nothing but keeps the first import's bad inputs: --strict fails again
    assert second.dead_letters == first.dead_letters == 1
    assert exit_code([second], strict=True) == 1 and exit_code([second], strict=False) == 0


def test_a_failed_import_keeps_its_events_but_writes_no_bookmark(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    sid = "sha256:fail" + topic
    try:
        with ImportRun(tape, source="x", kind="k", name="n", source_id=sid) as run:
            run.emit_many(topic, make_trades(3))
            raise OSError("disk went away")
    except OSError:
        pass
    assert sum(tape.end_offsets(topic).values()) == 3
    assert find_import(tape, sid) is None


def test_identities(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_bytes(b"1,2,3\n")
    b.write_bytes(b"1,2,3\n")
    c.write_bytes(b"1,2,4\n")
    assert file_identity(a) == file_identity(b) != file_identity(c)
    assert file_identity(a).startswith("sha256:")
    assert query_identity("k", {"a": 1, "b": 2}) == query_identity("k", {"b": 2, "a": 1})
    assert query_identity("k", {"a": 1}) != query_identity("k", {"a": 2})


def test_summary_text_and_json() -> None:
    s = ImportSummary("f.csv", "binance.klines", "sha256:0", {"md.binance.bar": 3}, 7, errors=["line 2: bad"])
    text = s.to_text()
    assert "3 events (md.binance.bar=3), 7 dead letters" in text
    assert "line 2: bad" in text and "6 more" in text
    data = json.loads(s.to_json())
    assert data["outcome"] == "imported" and data["events_per_topic"] == {"md.binance.bar": 3}
    skipped = ImportSummary("f.csv", "binance.klines", "sha256:0", skipped=True)
    assert "already imported" in skipped.to_text()
    total = summaries_text([s, skipped], as_json=False).splitlines()[-1]
    assert total == "total: 3 events, 7 dead letters, 1 of 2 inputs skipped as already imported"


def test_an_import_index_sees_bookmarks_written_through_it(tape_factory: TapeFactory, topic: str) -> None:
    from producers.common import ImportIndex

    tape = tape_factory()
    index = ImportIndex(tape)
    sid = "sha256:idx" + topic
    first = ImportRun(tape, source="x", kind="k", name="a.csv", source_id=sid, index=index)
    first.emit_many(topic, make_trades(2))
    first.finish()
    second = ImportRun(tape, source="x", kind="k", name="copy-of-a.csv", source_id=sid, index=index)
    assert second.skipped and second.previous is not None and second.previous.name == "a.csv"
    assert ImportIndex(tape).get(sid) == second.previous  # and it is on the tape for the next command


def test_an_interrupted_import_resumes_without_appending_anything_twice(tape_factory: TapeFactory,
                                                                        topic: str) -> None:
    tape = tape_factory()
    sid = "sha256:resume" + topic
    source = topic.replace("t.", "res")
    trades = make_trades(23)

    def run(crash_after: int | None) -> ImportSummary:
        r = ImportRun(tape, source=source, kind="k", name="big.csv", source_id=sid, batch_size=5)
        for i, t in enumerate(trades):
            if i == 7:
                r.dead_letter("line 8", "bad", b"junk")
            if crash_after is not None and i == crash_after:
                raise KeyboardInterrupt  # killed: nothing flushed, no bookmark
            r.emit(topic, t)
        return r.finish()

    with pytest.raises(KeyboardInterrupt):
        run(crash_after=17)  # batches of 5: 15 trades are durable, 2 trades and the dead letter were pending
    assert find_import(tape, sid) is None
    assert sum(tape.end_offsets(topic).values()) == 15
    summary = run(crash_after=None)
    assert summary.resumed == 15 and summary.events == {topic: 23} and summary.dead_letters == 1
    on_tape = sorted(int(e.trade_id) for e in _all(tape, topic))
    assert on_tape == list(range(23))  # every trade once
    assert len(_all(tape, f"dlq.{source}")) == 1
    mark = find_import(tape, sid)
    assert mark is not None and mark.events == 23
    assert ImportRun(tape, source=source, kind="k", name="big.csv", source_id=sid).skipped


def test_the_appender_keeps_the_end_offsets_of_tracked_topics(tmp_path: Path) -> None:
    from ticktape.tape.file import FileTape

    tape = FileTape(tmp_path / "tape", partitions=3)
    appender = BatchAppender(tape, batch_size=4)
    appender.track_ends.add("md.x")
    for i in range(10):
        appender.add("md.x", Trade("binance", f"S{i % 5}", i, i, 1.0, 1.0, "BUY", str(i)))
        appender.add("md.y", Trade("binance", "S", i, i, 1.0, 1.0, "BUY", str(i)))
    appender.flush()
    assert appender.ends == {"md.x": {p: n for p, n in tape.end_offsets("md.x").items() if n}}
