"""Topic names of the live half, in one place, and the one read they share."""

from __future__ import annotations

from ticktape.events import Event
from ticktape.tape.base import Tape
from ticktape.topics import CONTROLS_TOPIC, EVENT_TOPIC, INTENT_TOPIC, RUNS_TOPIC

__all__ = ["CONTROLS_TOPIC", "EVENT_TOPIC", "INTENT_TOPIC", "RUNS_TOPIC", "SHARED_TOPICS", "heartbeat_topic",
           "journal_topic", "last_event", "snapshot_topic"]


def journal_topic(stream: str) -> str:
    """The journal of a run (stream = run id) or of a gateway (stream = `gateway-<venue>`)."""
    return f"journal.{stream}"


def snapshot_topic(stream: str) -> str:
    """Where the default snapshot store keeps a stream's snapshots."""
    return f"snapshots.{stream}"


def heartbeat_topic(run_id: str) -> str:
    """A live run's heartbeats (one topic per run: on the file tape a partition has one writer)."""
    return f"heartbeat.{run_id}"


SHARED_TOPICS = frozenset((INTENT_TOPIC, EVENT_TOPIC, RUNS_TOPIC, CONTROLS_TOPIC))
"""Topics several processes append to: on the file tape (one writer per partition at a time) live
processes append to them through `FileTape.append_shared`, which takes and releases the lock."""


def last_event(tape: Tape, topic: str) -> Event | None:
    """The newest event of a one-partition topic (a stream's latest snapshot or heartbeat), or None."""
    if tape.partitions(topic) == 0:
        return None
    end = tape.end_offsets(topic).get(0, 0)
    if end == 0:
        return None
    for rec in tape.read(topic, 0, from_offset=end - 1, limit=1):
        return rec.event
    return None
