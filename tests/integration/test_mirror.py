"""`ticktape mirror`: file <-> Kafka copies that preserve order, keys and timestamps, never twice.

Resumption is derived from the destination itself (see `ticktape.mirror`): these tests check
a re-run copies nothing, a partial destination (what a crash leaves) is completed exactly,
a real SIGKILL in the middle of a mirror loses and duplicates nothing, and a destination
that is not a prefix of the source is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_trades
from tests.kafka_fixtures import KAFKA_BACKENDS, REPO
from ticktape.errors import TapeError
from ticktape.events import Event, Quote
from ticktape.mirror import mirror
from ticktape.tape import Tape, open_tape


def fill(tape: Tape, topic: str, n: int, partitions: int = 3, start: int = 0) -> None:
    """Trades on 9 instruments (every partition gets some) plus some quotes and unkeyed events, in several appends."""
    tape.create_topic(topic, partitions)
    trades = [t for i in range(start, start + n) for t in make_trades(1, start=i, instrument=f"S{i % 9}")]
    for i in range(0, n, 997):
        chunk = trades[i:i + 997]
        tape.append(topic, chunk)
        q = Quote("binance", "S1", chunk[0].ts_event, chunk[0].ts_recv, 1.0, 2.0, 1.5, 3.0)
        tape.append(topic, [q, chunk[-1]], keys=[None, "S3"])


def contents(tape: Tape, topic: str) -> list[list[tuple[int, str | None, Event]]]:
    """Every partition as (offset, key, event) lists."""
    return [[(r.offset, r.key, r.event) for r in tape.read(topic, p)] for p in range(tape.partitions(topic))]


def test_file_to_file_resumes_a_partial_copy_exactly(tmp_path: Path) -> None:
    src = open_tape(f"file:{tmp_path / 'src'}")
    fill(src, "md.t", 5_000)
    dst = open_tape(f"file:{tmp_path / 'dst'}")
    dst.create_topic("md.t", 3)
    # what a mirror killed mid-way leaves behind: a prefix of each source partition
    for p, n in enumerate([0, 1, 1234]):
        records = list(src.read("md.t", p, limit=n))
        if records:
            dst.append("md.t", [r.event for r in records], keys=[r.key for r in records], partition=p)
    done = mirror(src, dst, ["md.t"], batch_size=500)
    assert [(c.partition, c.already) for c in done] == [(0, 0), (1, 1), (2, 1234)]
    assert contents(dst, "md.t") == contents(src, "md.t")
    assert sum(c.already + c.copied for c in done) == sum(src.end_offsets("md.t").values())


def test_destination_that_is_not_a_prefix_is_refused(tmp_path: Path) -> None:
    src = open_tape(f"file:{tmp_path / 'src'}")
    fill(src, "md.t", 1_000, partitions=1)
    dst = open_tape(f"file:{tmp_path / 'dst'}")
    first = next(iter(src.read("md.t")))
    dst.append("md.t", [first.event, make_trades(1, start=999_999)[0]], keys=[first.key, first.key])
    with pytest.raises(TapeError, match="not a prefix"):
        mirror(src, dst, ["md.t"])
    other = open_tape(f"file:{tmp_path / 'other'}")
    other.append("md.t", make_trades(3, start=500))
    with pytest.raises(TapeError, match="not a mirror"):
        mirror(src, other, ["md.t"])
    assert dst.end_offsets("md.t") == {0: 2} and other.end_offsets("md.t") == {0: 3}  # untouched


def test_partition_count_mismatch_is_refused(tmp_path: Path) -> None:
    src = open_tape(f"file:{tmp_path / 'src'}")
    fill(src, "md.t", 100, partitions=3)
    dst = open_tape(f"file:{tmp_path / 'dst'}")
    dst.create_topic("md.t", 2)
    with pytest.raises(TapeError, match="partitions"):
        mirror(src, dst, ["md.t"])


@pytest.mark.kafka
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_file_to_kafka_to_file_round_trip(backend: str, kafka_tape_uri: Callable[[str], str],
                                          tmp_path: Path) -> None:
    topic = f"mirror.{uuid.uuid4().hex[:10]}"
    src = open_tape(f"file:{tmp_path / 'src'}")
    fill(src, topic, 6_000)
    kafka = open_tape(kafka_tape_uri(backend))
    copied = mirror(src, kafka, [topic])
    assert sum(c.copied for c in copied) == sum(src.end_offsets(topic).values())
    back = open_tape(f"file:{tmp_path / 'back'}")
    mirror(kafka, back, [topic])
    expected = contents(src, topic)
    assert contents(kafka, topic) == expected  # same partitions, offsets, keys and events
    assert contents(back, topic) == expected
    assert all(len(p) > 0 for p in expected)
    # re-running copies nothing, in both directions
    assert sum(c.copied for c in mirror(src, kafka, [topic])) == 0
    assert sum(c.copied for c in mirror(kafka, back, [topic])) == 0
    # new source records, and only those, are copied by the next run
    before = sum(src.end_offsets(topic).values())
    fill(src, topic, 500, start=6_000)
    assert sum(c.copied for c in mirror(src, kafka, [topic])) == sum(src.end_offsets(topic).values()) - before
    mirror(kafka, back, [topic])
    assert contents(back, topic) == contents(kafka, topic) == contents(src, topic)
    kafka.close()


@pytest.mark.kafka
@pytest.mark.slow
def test_mirror_killed_mid_copy_then_rerun_copies_everything_once(kafka_tape_uri: Callable[[str], str],
                                                                  tmp_path: Path) -> None:
    topic = f"mirror.crash.{uuid.uuid4().hex[:10]}"
    src_uri = f"file:{tmp_path / 'src'}"
    src = open_tape(src_uri)
    fill(src, topic, 100_000, partitions=2)
    total = sum(src.end_offsets(topic).values())
    dest_uri = kafka_tape_uri("kafka")  # kafka-python: slow enough to be killed half way
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ticktape", "mirror", "--from", src_uri, "--to", dest_uri,
                             "--topics", topic, "--batch-size", "2000"], env=env, stderr=subprocess.PIPE)
    dest = open_tape(dest_uri)
    try:
        deadline = time.monotonic() + 120
        while sum(dest.end_offsets(topic).values()) < 10_000 and proc.poll() is None:
            assert time.monotonic() < deadline, "the mirror made no progress"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    landed = sum(dest.end_offsets(topic).values())
    assert 0 < landed < total, f"the kill did not land mid-copy ({landed} of {total})"
    rerun = subprocess.run([sys.executable, "-m", "ticktape", "mirror", "--from", src_uri, "--to", dest_uri,
                            "--topics", topic], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{topic}: copied {total - landed} records ({landed} already there, 2 partitions)" in rerun.stderr
    assert contents(dest, topic) == contents(src, topic)
    dest.close()


def test_follow_keeps_copying_new_records(tmp_path: Path) -> None:
    src_uri, dst_uri = f"file:{tmp_path / 'src'}", f"file:{tmp_path / 'dst'}"
    src = open_tape(src_uri)
    src.append("md.live", make_trades(100))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ticktape", "mirror", "--from", src_uri, "--to", dst_uri,
                             "--follow", "--interval", "0.1"], env=env, stderr=subprocess.DEVNULL)
    try:
        dst = open_tape(dst_uri)
        for expected in (100, 150, 400):
            if expected > 100:
                src.append("md.live", make_trades(expected - len(list(src.read("md.live"))), start=expected))
            deadline = time.monotonic() + 60
            while dst.end_offsets("md.live").get(0, 0) < expected:
                assert proc.poll() is None, "mirror --follow exited"
                assert time.monotonic() < deadline, f"mirror --follow did not reach {expected} records"
                time.sleep(0.05)
        assert contents(dst, "md.live") == contents(src, "md.live")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
