"""Fault test on a real broker: SIGKILL the broker while a producer appends, restart it.

The guarantee under test (also stated in the README): every event whose `append` returned
is on the tape, in append order per partition, nothing foreign, and duplicates (if any) only as
exact copies of acknowledged events, removed by the events' identity (here the trade id). When a
partition holds exactly as many records as were acknowledged, it must hold them exactly once at
the acknowledged offsets. Idempotent producers usually achieve that (the broker de-duplicates
by producer id and sequence number and rebuilds that state after a crash), but not always after
a SIGKILL: kafka-python re-sent a batch as new records in about one run in five, and librdkafka
(confluent-kafka) once in several dozen fresh-clone runs wrote 290 records twice (it bumps the
producer epoch when in-flight requests time out; the broker cannot de-duplicate across epochs).

This broker is the test's own (its own directory and port), so killing it does not disturb
the session broker the other tests share.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_trades
from tests.kafka_fixtures import KAFKA_BACKENDS, start_broker
from ticktape.events import Event
from ticktape.tape import Position, open_tape

N = 100_000
BATCH = 1_000
PACE = 0.04  # s between appends: ~5 s of appending, so the kill lands mid-stream on both clients
PARTITIONS = 3


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_sigkill_during_appends_loses_and_duplicates_nothing(backend: str, tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "broker")
    try:
        uri = f"{backend}://{broker.address}"
        topic = "fault.trades"
        events = [t for i in range(N // 10) for t in make_trades(10, start=i * 10, instrument=f"SYM{i % 7}")]
        writer = open_tape(uri)
        writer.create_topic(topic, PARTITIONS)
        acked: list[tuple[Event, Position]] = []
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                for i in range(0, N, BATCH):
                    batch = events[i:i + BATCH]
                    acked.extend(zip(batch, writer.append(topic, batch), strict=True))
                    time.sleep(PACE)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < 20_000 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        acked_at_kill = len(acked)
        broker.kill()
        time.sleep(1.0)  # appends keep going against a dead broker
        broker.restart_same()
        acked_at_restart = len(acked)
        thread.join(timeout=300)
        assert not thread.is_alive(), "the producer did not finish after the broker came back"
        assert not errors, f"an append failed: {errors[0]!r}"
        assert 0 < acked_at_kill < N and acked_at_restart < N, "the kill did not land while appending"
        writer.close()

        reader = open_tape(uri)
        total = 0
        for p in range(PARTITIONS):
            mine = [(e, pos.offset) for e, pos in acked if pos.partition == p]
            records = list(reader.read(topic, p))
            if len(records) == len(mine):
                # exactly once and in append order: the partition holds precisely the acknowledged
                # events, in the order they were appended, at the offsets the acknowledgements gave
                assert [r.offset for r in records] == [o for _, o in mine] == list(range(len(mine)))
                assert [r.event for r in records] == [e for e, _ in mine]
            else:
                # a batch re-sent after the broker crash: duplicates are copies of acknowledged
                # events and vanish when de-duplicated by event identity, leaving the append order
                first: dict[str, Event] = {}
                for r in records:
                    first.setdefault(r.event.trade_id, r.event)  # type: ignore[union-attr]
                assert list(first.values()) == [e for e, _ in mine]
                assert {r.event for r in records} == {e for e, _ in mine}
            total += len(mine)  # each branch above proved the partition holds exactly these
        assert total == N
        assert sorted(int(e.trade_id) for e, _ in acked) == list(range(N))  # type: ignore[attr-defined]
        reader.close()
    finally:
        broker.stop()
