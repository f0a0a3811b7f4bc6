"""The `SnapshotStore` port: where a live fold keeps its snapshots, and the tape implementation.

A snapshot (`RunSnapshot`) is the fold's state at a journal position; a restart loads the
latest one and replays the journal after it. The default store keeps them on the tape itself
(`snapshots.<stream>`, one partition, latest = last record). The MongoDB issue adds a second
store behind the same port.
"""

from __future__ import annotations

from typing import Protocol

from robots.live.topics import last_event, snapshot_topic
from ticktape.errors import ConfigError
from ticktape.events import RunSnapshot
from ticktape.tape.base import Tape

__all__ = ["SnapshotStore", "TapeSnapshotStore", "open_snapshot_store"]


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


def open_snapshot_store(uri: str | None, tape: Tape) -> SnapshotStore:
    """The store named by `--snapshots URI`: none (or `tape`) = the run's own tape."""
    if uri in (None, "", "tape"):
        return TapeSnapshotStore(tape)
    if uri.startswith(("file:", "kafka:", "kafka+rdkafka:")):
        from ticktape.tape import open_tape

        return TapeSnapshotStore(open_tape(uri))
    raise ConfigError(f"--snapshots {uri!r}: unknown snapshot store (use a tape URI; MongoDB is not supported yet)")
