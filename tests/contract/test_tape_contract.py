"""The Tape contract: written once, run on every backend (file, Kafka, ...)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import TapeFactory, make_trades
from ticktape.events import Quote, Trade
from ticktape.tape import Position, partition_for


def test_append_then_read_in_order(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    events = make_trades(250)
    positions = tape.append(topic, events[:100]) + tape.append(topic, events[100:])
    assert positions == [Position(0, i) for i in range(250)]
    records = list(tape.read(topic, 0))
    assert [r.event for r in records] == events
    assert [r.offset for r in records] == list(range(250))
    assert all(r.key == "BTCUSDT" and r.topic == topic and r.partition == 0 for r in records)
    assert tape.end_offsets(topic) == {0: 250}


def test_mixed_event_types_in_one_topic(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    q = Quote("binance", "ETHUSDT", 5, 6, 1.0, 2.0, 1.5, 3.0)
    t = make_trades(1)[0]
    tape.append(topic, [q, t, q])
    assert [type(r.event) for r in tape.read(topic)] == [Quote, Trade, Quote]


def test_read_from_offset_and_limit(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    events = make_trades(100)
    for i in range(0, 100, 10):
        tape.append(topic, events[i:i + 10])
    got = list(tape.read(topic, 0, from_offset=37, limit=5))
    assert [r.offset for r in got] == [37, 38, 39, 40, 41]
    assert [r.event for r in got] == events[37:42]
    assert list(tape.read(topic, 0, from_offset=100)) == []


def test_read_from_time(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    events = make_trades(100, step=1_000)
    for i in range(0, 100, 25):
        tape.append(topic, events[i:i + 25])
    t = events[60].ts_event
    assert tape.offset_for_time(topic, 0, t) == 60
    assert tape.offset_for_time(topic, 0, t - 1) == 60  # between events 59 and 60
    assert tape.offset_for_time(topic, 0, events[-1].ts_event + 1) == 100
    got = list(tape.read(topic, 0, from_time=t))
    assert [r.offset for r in got] == list(range(60, 100))


def test_keys_pick_stable_partitions(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    tape.create_topic(topic, 4)
    assert tape.partitions(topic) == 4
    events = [t for i in range(40) for t in make_trades(1, start=i, instrument=f"SYM{i % 8}")]
    positions = tape.append(topic, events)
    for e, pos in zip(events, positions, strict=True):
        assert pos.partition == partition_for(e.instrument, 4)
    for p in range(4):
        records = list(tape.read(topic, p))
        assert all(partition_for(r.key, 4) == p for r in records)
        assert [r.offset for r in records] == list(range(len(records)))
    assert sum(len(list(tape.read(topic, p))) for p in range(4)) == 40
    assert len({p.partition for p in positions}) > 1


def test_explicit_keys(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    tape.append(topic, make_trades(3), keys=["a", None, "c"])
    assert [r.key for r in tape.read(topic)] == ["a", None, "c"]


def test_reopen_sees_everything(tape_factory: TapeFactory, topic: str) -> None:
    first = tape_factory()
    first.append(topic, make_trades(50))
    first.close()
    second = tape_factory()
    assert [r.event for r in second.read(topic)] == make_trades(50)
    second.append(topic, make_trades(10, start=50))
    assert [r.offset for r in second.read(topic)] == list(range(60))


def test_topics_report_counts_and_times(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    events = make_trades(20)
    tape.append(topic, events)
    info = next(t for t in tape.topics() if t.name == topic)
    assert info.events == 20
    assert info.first_ts == events[0].ts_event and info.last_ts == events[-1].ts_event


def test_follow_sees_new_events(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    writer = tape_factory()
    events = make_trades(30)
    writer.append(topic, events[:10])
    got: list[Trade] = []

    def consume() -> None:
        for r in tape.read(topic, 0, follow=True, limit=30, poll_interval=0.01):
            got.append(r.event)  # type: ignore[arg-type]

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(0.3)
    writer.append(topic, events[10:20])
    time.sleep(0.2)
    writer.append(topic, events[20:])
    t.join(timeout=30)
    assert not t.is_alive(), "follow did not see the new events"
    assert got == events


def test_committed_offsets_survive_reopen(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    tape.append(topic, make_trades(10))
    assert tape.committed("robot-a", topic, 0) is None
    tape.commit("robot-a", topic, 0, 7)
    tape.close()
    again = tape_factory()
    assert again.committed("robot-a", topic, 0) == 7
    assert again.committed("robot-b", topic, 0) is None


def test_empty_and_missing(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    assert tape.partitions(topic) == 0
    assert list(tape.read(topic)) == []
    assert tape.append(topic, []) == []


def test_large_batch_round_trips(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    events = make_trades(20_000)
    tape.append(topic, events)
    assert [r.event for r in tape.read(topic)] == events


@pytest.mark.parametrize("partitions", [1, 3])
def test_create_topic_is_idempotent(tape_factory: TapeFactory, topic: str, partitions: int) -> None:
    tape = tape_factory()
    tape.create_topic(topic, partitions)
    tape.create_topic(topic, partitions)
    assert tape.partitions(topic) == partitions
