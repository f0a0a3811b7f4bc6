"""The `SnapshotStore` port: where a live fold keeps its snapshots, and the tape implementation.

A snapshot (`RunSnapshot`) is the fold's state at a journal position; a restart loads the
latest one and replays the journal after it. The default store keeps them on the tape itself
(`snapshots.<stream>`, one partition, latest = last record); `--snapshots mongodb://...` keeps
them in MongoDB (`ticktape.mongo.snapshots`).

A store outside the tape is wrapped in `SkippingSnapshotStore`, which decides what a live run does
when that server is down:

- `save` fails: a warning naming the server (password redacted), and the run goes on trading. The
  journal on the tape is the run's record; a snapshot only shortens a restart's replay, so a
  missed one costs speed, never correctness. The next snapshot due at least `retry_seconds`
  later tries again (each try waits up to the client's short timeout, so a server that stays
  down stalls the loop briefly every `retry_seconds`, not at every snapshot).
- `latest` fails (a start or restart with the server down): it tries again for `wait_seconds`,
  then raises a clear error. Replaying from zero instead would be correct but could take long,
  and would hide a misconfigured URI; the operator decides (start the server, or restart
  without `--snapshots`, which replays from the snapshots on the tape, if any).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from robots.live.topics import last_event, snapshot_topic
from ticktape.errors import ConfigError, TicktapeError
from ticktape.events import RunSnapshot
from ticktape.tape.base import Tape

__all__ = ["SkippingSnapshotStore", "SnapshotStore", "SnapshotsUnavailableError", "TapeSnapshotStore",
           "open_snapshot_store"]

log = logging.getLogger("ticktape.live")


class SnapshotStore(Protocol):
    """Saves and finds a stream's snapshots."""

    def save(self, snapshot: RunSnapshot) -> None:
        """Store durably; after it returns, `latest` may return this snapshot."""

    def latest(self, stream: str) -> RunSnapshot | None:
        """The newest snapshot of `stream`, or None."""


class TapeSnapshotStore:
    """Snapshots as events on `snapshots.<stream>` of a tape."""

    def __init__(self, tape: Tape) -> None:
        self.tape = tape

    def save(self, snapshot: RunSnapshot) -> None:
        topic = snapshot_topic(snapshot.stream)
        if self.tape.partitions(topic) == 0:
            self.tape.create_topic(topic, 1)
        self.tape.append(topic, [snapshot], keys=[snapshot.stream], partition=0)

    def latest(self, stream: str) -> RunSnapshot | None:
        event = last_event(self.tape, snapshot_topic(stream))
        return event if type(event) is RunSnapshot else None


class SnapshotsUnavailableError(TicktapeError):
    """The snapshot store could not be read at a start, even after waiting for it."""


class SkippingSnapshotStore:
    """A store whose failed saves are logged and skipped, and whose `latest` waits a while for its server
    (see the module docstring for why)."""

    def __init__(self, store: SnapshotStore, where: str, *, down: tuple[type[Exception], ...] = (TicktapeError,),
                 retry_seconds: float = 5.0, wait_seconds: float = 30.0) -> None:
        """`where` names the server in messages: never with a password (`ticktape.mongo.client.redact`).
        `down`: the store's errors that mean its server cannot be reached (`latest` waits on those only;
        a failed `save` is skipped whatever the error)."""
        self.store = store
        self.down = down
        self.where = where
        self.retry_seconds = retry_seconds
        self.wait_seconds = wait_seconds
        self.failed = 0          # saves skipped since the last one that succeeded
        self._retry_at = 0.0

    def save(self, snapshot: RunSnapshot) -> None:
        """Save, or log why not and return (the run goes on; a later snapshot tries again)."""
        now = time.monotonic()
        if now < self._retry_at:
            self.failed += 1
            return
        try:
            self.store.save(snapshot)
        except TicktapeError as exc:
            self.failed += 1
            self._retry_at = time.monotonic() + self.retry_seconds
            log.warning("%s: snapshot at journal offset %d not saved to %s (%s); the run goes on, trying again "
                        "in %.0f s", snapshot.stream, snapshot.journal_offset, self.where, exc, self.retry_seconds)
            return
        if self.failed:
            log.warning("%s: snapshots saved to %s again (after %d skipped)", snapshot.stream, self.where,
                        self.failed)
            self.failed = 0

    def latest(self, stream: str) -> RunSnapshot | None:
        """The newest snapshot; while the server cannot be reached, try again for up to `wait_seconds`."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                return self.store.latest(stream)
            except self.down as exc:
                if time.monotonic() >= deadline:
                    raise SnapshotsUnavailableError(
                        f"{stream}: the snapshot store {self.where} could not be read for {self.wait_seconds:.0f} s "
                        f"({exc}); start it, or restart without --snapshots to replay from the tape's "
                        f"snapshots (slower, same result)") from exc
                log.warning("%s: snapshot store %s not answering (%s); trying again", stream, self.where, exc)
                time.sleep(1.0)


def open_snapshot_store(uri: str | None, tape: Tape) -> SnapshotStore:
    """The store named by `--snapshots URI`: none (or `tape`) = the run's own tape; another tape URI;
    `mongodb://` or `mongodb+srv://` = MongoDB (the URI's path names the database, default `ticktape`)."""
    if uri in (None, "", "tape"):
        return TapeSnapshotStore(tape)
    if uri.startswith(("file:", "kafka:", "kafka+rdkafka:")):
        from ticktape.tape import open_tape

        return TapeSnapshotStore(open_tape(uri))
    from ticktape.mongo.client import is_mongo_uri, redact

    if is_mongo_uri(uri):
        from ticktape.mongo.snapshots import MongoSnapshotStore, SnapshotServerDownError

        where = redact(uri)
        log.info("snapshots of live runs go to %s", where)
        return SkippingSnapshotStore(MongoSnapshotStore(uri), where, down=(SnapshotServerDownError,))
    raise ConfigError(f"--snapshots {redact(uri)!r}: unknown snapshot store (use a tape URI or mongodb://host:port/db)")
