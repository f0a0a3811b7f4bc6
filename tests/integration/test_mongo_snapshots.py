"""`MongoSnapshotStore` on a real MongoDB-protocol server, and what a live run's store does when its
server is down (`SkippingSnapshotStore`)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import bson
import pytest

from robots.live.snapshots import SkippingSnapshotStore, SnapshotsUnavailableError, open_snapshot_store
from tests.mongo_fixtures import MongoServer
from ticktape.events import RunSnapshot
from ticktape.mongo.snapshots import (
    MAX_DOCUMENT_BYTES,
    MongoSnapshotStore,
    SnapshotServerDownError,
    SnapshotStoreError,
    SnapshotTooLargeError,
    snapshot_id,
)
from ticktape.tape import open_tape


def snap(stream: str, offset: int, *, state: str | None = None, engine: str = '{"fold":"{}"}') -> RunSnapshot:
    return RunSnapshot(stream=stream, ts_event=1_700_000_000_000_000_000 + offset, ts_recv=1_800_000_000_000_000_000,
                       journal_offset=offset, seq=offset * 3, outputs=offset // 2,
                       state=state if state is not None else f'{{"n":{offset},"name":"é✓"}}', engine=engine)


@pytest.fixture
def store(mongo_db_uri: str) -> Iterator[MongoSnapshotStore]:
    s = MongoSnapshotStore(mongo_db_uri, keep=3)
    try:
        yield s
    finally:
        s.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_save_then_latest_is_equal(store: MongoSnapshotStore) -> None:
    first = snap("run-a", 10)
    store.save(first)
    got = store.latest("run-a")
    assert got == first and type(got) is RunSnapshot
    assert [type(v) for v in got] == [type(v) for v in first]
    later = snap("run-a", 25)
    store.save(later)
    assert store.latest("run-a") == later


def test_latest_is_by_journal_offset_not_by_save_order(store: MongoSnapshotStore) -> None:
    store.save(snap("run-a", 30))
    store.save(snap("run-a", 20))
    assert store.latest("run-a") == snap("run-a", 30)


def test_saving_the_same_snapshot_twice_keeps_one_document(store: MongoSnapshotStore) -> None:
    s = snap("run-a", 10)
    store.save(s)
    store.save(s)
    docs = list(store.collection.find({"stream": "run-a"}))
    assert [d["_id"] for d in docs] == [snapshot_id("run-a", 10)]
    assert store.latest("run-a") == s


def test_only_the_newest_few_are_kept(store: MongoSnapshotStore) -> None:
    for offset in range(1, 8):
        store.save(snap("run-a", offset * 100))
    assert [s.journal_offset for s in store.snapshots("run-a")] == [500, 600, 700]
    assert store.collection.count_documents({"stream": "run-a"}) == 3


def test_unknown_stream_has_none_and_streams_stay_apart(store: MongoSnapshotStore) -> None:
    assert store.latest("nobody") is None
    store.save(snap("run-a", 5))
    store.save(snap("run-b", 7))
    for offset in range(10, 15):  # pruning run-a leaves run-b alone
        store.save(snap("run-a", offset))
    assert store.latest("run-a") == snap("run-a", 14)
    assert store.latest("run-b") == snap("run-b", 7)
    assert store.latest("run") is None


def test_a_snapshot_over_the_document_limit_is_refused_naming_stream_and_size(store: MongoSnapshotStore) -> None:
    store.save(snap("run-big", 1))
    big_state = '{"book":"' + "x✓" * (4 * 1024 * 1024) + '"}'     # 16 MiB of UTF-8 + a little
    huge = snap("run-big", 2, state=big_state)
    size = len(bson.encode({"_id": snapshot_id("run-big", 2), **huge._asdict()}))
    assert size > MAX_DOCUMENT_BYTES
    with pytest.raises(SnapshotTooLargeError) as err:
        store.save(huge)
    message = str(err.value)
    assert "'run-big'" in message and f"{size:,} bytes" in message and "16 MiB" in message
    assert store.latest("run-big") == snap("run-big", 1), "nothing of the big one was written"
    # just under the limit is stored whole
    fits = snap("run-big", 3, state='"' + "y" * (MAX_DOCUMENT_BYTES - 1024) + '"')
    store.save(fits)
    assert store.latest("run-big") == fits


def test_live_store_skips_a_snapshot_too_large_and_says_why(store: MongoSnapshotStore,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    live = SkippingSnapshotStore(store, store.where, down=(SnapshotServerDownError,), retry_seconds=0.0)
    with caplog.at_level(logging.WARNING, logger="ticktape.live"):
        live.save(snap("run-big", 1, state='"' + "z" * MAX_DOCUMENT_BYTES + '"'))
    assert live.failed == 1 and "document limit" in caplog.text and "the run goes on" in caplog.text
    live.save(snap("run-big", 2))
    assert live.latest("run-big") == snap("run-big", 2)


def test_a_server_that_is_down_raises_naming_it_without_the_password() -> None:
    uri = f"mongodb://trader:s3cret@127.0.0.1:{closed_port()}/snaps"
    store = MongoSnapshotStore(uri, timeout_ms=300)
    try:
        with pytest.raises(SnapshotServerDownError) as err:
            store.save(snap("run-a", 1))
        assert "trader:***@127.0.0.1" in str(err.value) and "s3cret" not in str(err.value)
        with pytest.raises(SnapshotServerDownError):
            store.latest("run-a")
    finally:
        store.close()


def test_a_document_that_is_not_a_snapshot_fails_at_once(mongo_db_uri: str, tmp_path: Path) -> None:
    tape = open_tape(f"file:{tmp_path}/tape")
    store = open_snapshot_store(mongo_db_uri, tape)  # what a live run uses: waits only for a server that is down
    assert isinstance(store, SkippingSnapshotStore) and isinstance(store.store, MongoSnapshotStore)
    try:
        store.store.collection.insert_one({"_id": "run-a@9", "stream": "run-a", "journal_offset": 9, "seq": "x"})
        t0 = time.monotonic()
        with pytest.raises(SnapshotStoreError, match=r"'run-a@9' in 'snapshots' is not a RunSnapshot"):
            store.latest("run-a")
        assert time.monotonic() - t0 < 5
    finally:
        store.store.close()
        tape.close()


def test_live_store_skips_a_save_the_server_refuses_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    uri = f"mongodb://trader:s3cret@127.0.0.1:{closed_port()}/snaps"
    store = SkippingSnapshotStore(MongoSnapshotStore(uri, timeout_ms=300), "mongodb://trader:***@x", retry_seconds=60)
    with caplog.at_level(logging.WARNING, logger="ticktape.live"):
        t0 = time.monotonic()
        store.save(snap("run-a", 1))      # tries, fails, warns
        store.save(snap("run-a", 2))      # within retry_seconds: skipped at once
        assert time.monotonic() - t0 < 5
    assert store.failed == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "not saved to mongodb://trader:***@x" in warnings[0] and "the run goes on" in warnings[0]
    assert all("s3cret" not in m for m in warnings)


def test_live_store_start_with_the_server_down_fails_clearly() -> None:
    uri = f"mongodb://127.0.0.1:{closed_port()}/snaps"
    store = SkippingSnapshotStore(MongoSnapshotStore(uri, timeout_ms=200), uri, down=(SnapshotServerDownError,),
                                  wait_seconds=1.0)
    t0 = time.monotonic()
    with pytest.raises(SnapshotsUnavailableError, match="could not be read for 1 s"):
        store.latest("run-a")
    assert 1.0 <= time.monotonic() - t0 < 10


def test_live_store_saves_again_after_the_server_comes_back(mongo_server: MongoServer,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    uri = f"{mongo_server.uri}/snaps"
    inner = MongoSnapshotStore(uri, timeout_ms=300)
    store = SkippingSnapshotStore(inner, uri, retry_seconds=0.0)
    try:
        store.save(snap("run-a", 1))
        mongo_server.kill()
        store.save(snap("run-a", 2))
        assert store.failed == 1
        mongo_server.restart()
        with caplog.at_level(logging.WARNING, logger="ticktape.live"):
            store.save(snap("run-a", 3))
        assert store.failed == 0 and "saved to" in caplog.text and "again" in caplog.text
        assert store.latest("run-a") == snap("run-a", 3)
        assert [s.journal_offset for s in inner.snapshots("run-a")] == [1, 3]
    finally:
        inner.close()


def test_open_snapshot_store_names(tmp_path: Path, mongo_db_uri: str) -> None:
    tape = open_tape(f"file:{tmp_path}/tape")
    try:
        store = open_snapshot_store(mongo_db_uri, tape)
        assert isinstance(store, SkippingSnapshotStore) and isinstance(store.store, MongoSnapshotStore)
        store.save(snap("run-a", 4))
        assert store.latest("run-a") == snap("run-a", 4)
        store.store.close()
        with pytest.raises(Exception, match=r"unknown snapshot store") as err:
            open_snapshot_store("redis://u:pw@host/0", tape)
        assert "pw" not in str(err.value)
    finally:
        tape.close()


def test_a_store_on_a_database_object_leaves_its_client_open(mongo_db_uri: str) -> None:
    from ticktape.mongo.client import open_database

    db = open_database(mongo_db_uri)
    try:
        store = MongoSnapshotStore(db, keep=1)
        store.save(snap("run-a", 1))
        store.save(snap("run-a", 2))
        assert store.snapshots("run-a") == [snap("run-a", 2)]
        store.close()
        assert db["snapshots"].count_documents({}) == 1  # the caller's client still works
    finally:
        db.client.close()
