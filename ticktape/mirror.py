"""`ticktape mirror`: copy topics between tapes (file <-> Kafka), resumable, never twice.

Each source partition p is copied to partition p of the same topic on the destination
(created with the same partition count), with its keys, events (hence `ts_event`, the
Kafka timestamp) and order.

Resuming. The destination is the only record of progress: a destination partition holding
N records is a copy of the source partition's first N records, so the copy resumes at the
source's (N+1)-th record. Nothing is committed separately, so there is no window between
"copied" and "noted as copied": a mirror killed at any instant (even halfway through a Kafka
batch, of which a prefix may have landed, idempotent producers keep it a prefix) resumes
exactly after the last record that reached the destination. Before resuming, the first and
the last destination records are compared with their source counterparts (key and encoded
event); a destination that is not a prefix of the source is refused, never appended to.

Finding the (N+1)-th record is O(1) when the source's offsets are contiguous (the file tape,
and Kafka topics without compaction or transactions); otherwise the source is scanned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import click

from ticktape.codec import default_codec
from ticktape.errors import TapeError
from ticktape.events import Event
from ticktape.tape import Tape, open_tape
from ticktape.tape.base import Record

log = logging.getLogger("ticktape.mirror")


class Copied(NamedTuple):
    """What one mirror pass did to one topic-partition."""

    topic: str
    partition: int
    already: int  # records the destination had before this pass
    copied: int  # records appended by this pass


def topic_names(tape: Tape) -> list[str]:
    """Every topic of a tape (cheap `topic_names()` when the backend has it)."""
    names = getattr(tape, "topic_names", None)
    if callable(names):
        return list(names())
    return [t.name for t in tape.topics()]


def _first(tape: Tape, topic: str, partition: int, from_offset: int | None = None) -> Record | None:
    return next(iter(tape.read(topic, partition, from_offset=from_offset, limit=1)), None)


def _same(a: Record, b: Record) -> bool:
    # Compare encodings, not objects: NaN prices would make equal events unequal.
    codec = default_codec()
    return a.key == b.key and codec.encode(a.event) == codec.encode(b.event)


def resume_offset(source: Tape, dest: Tape, topic: str, partition: int) -> tuple[int | None, int]:
    """(source offset to copy from, records already in the destination); None = from the start."""
    dest_end = dest.end_offsets(topic).get(partition, 0)
    dest_first = _first(dest, topic, partition)
    if dest_first is None:
        return None, 0
    copied = dest_end - dest_first.offset
    src_first = _first(source, topic, partition)
    where = f"mirror of {topic} partition {partition} to {dest.uri}"
    if src_first is None or not _same(src_first, dest_first):
        raise TapeError(f"{where}: the destination's first record (offset {dest_first.offset}) is not the "
                        "source's first record: it is not a mirror of this source; refusing to append")
    dest_last = _first(dest, topic, partition, dest_end - 1)
    if dest_last is None:
        raise TapeError(f"{where}: cannot read the destination's last record (offset {dest_end - 1})")
    # Fast path: contiguous source offsets put the last copied record at src_first + copied - 1.
    guess = _first(source, topic, partition, src_first.offset + copied - 1)
    if guess is not None and guess.offset == src_first.offset + copied - 1 and _same(guess, dest_last):
        return guess.offset + 1, copied
    # Offsets with gaps: count records.
    for i, record in enumerate(source.read(topic, partition), start=1):
        if i == copied:
            if _same(record, dest_last):
                return record.offset + 1, copied
            break
    raise TapeError(f"{where}: the destination holds {copied} records but its last one is not the source's "
                    f"record number {copied}: it is not a prefix of the source; refusing to append")


def _batches(records: Iterator[Record], size: int) -> Iterator[tuple[list[Event], list[str | None]]]:
    events: list[Event] = []
    keys: list[str | None] = []
    for r in records:
        events.append(r.event)
        keys.append(r.key)
        if len(events) >= size:
            yield events, keys
            events, keys = [], []
    if events:
        yield events, keys


def mirror(source: Tape, dest: Tape, topics: Sequence[str] | None = None, *, batch_size: int = 10_000,
           progress: Callable[[Copied], None] | None = None) -> list[Copied]:
    """Copy `topics` (default: all) from `source` to `dest`, resuming where a previous run stopped.

    Copies up to the source's end offsets at the time each partition is started.
    """
    names = list(topics) if topics else topic_names(source)
    out = []
    for topic in names:
        n = source.partitions(topic)
        if n == 0:
            raise TapeError(f"the source {source.uri} has no topic {topic}")
        dest.create_topic(topic, n)  # refuses a different partition count
        for p in range(n):
            start, already = resume_offset(source, dest, topic, p)
            copied = 0
            for events, keys in _batches(source.read(topic, p, from_offset=start), batch_size):
                dest.append(topic, events, keys=keys, partition=p)
                copied += len(events)
                log.debug("mirrored %d records of %s partition %d", copied, topic, p)
            done = Copied(topic, p, already, copied)
            out.append(done)
            if progress is not None:
                progress(done)
    return out


@click.command("mirror")
@click.option("--from", "source_uri", required=True, help="Source tape URI (file:PATH, kafka://HOST:PORT, ...).")
@click.option("--to", "dest_uri", required=True, help="Destination tape URI.")
@click.option("--topics", "topics", multiple=True,
              help="Topics to copy (repeat or comma-separate); default: every topic of the source.")
@click.option("--batch-size", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Records per destination append.")
@click.option("--follow", "-f", is_flag=True, help="Keep mirroring new records until interrupted.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between passes with --follow.")
def mirror_command(source_uri: str, dest_uri: str, topics: tuple[str, ...], batch_size: int, follow: bool,
                   interval: float) -> None:
    """Copy topics from one tape to another (file <-> Kafka), preserving order, keys and timestamps.

    Re-running copies nothing twice: each destination partition is resumed after the last
    record it holds (checked against the source), so an interrupted mirror just runs again.
    """
    wanted = [t for arg in topics for t in arg.split(",") if t] or None
    source = open_tape(source_uri)
    dest = open_tape(dest_uri)
    try:
        while True:
            results = mirror(source, dest, wanted, batch_size=batch_size)
            total = sum(c.copied for c in results)
            if not follow or total:
                for topic in dict.fromkeys(c.topic for c in results):
                    mine = [c for c in results if c.topic == topic]
                    click.echo(f"{topic}: copied {sum(c.copied for c in mine)} records "
                               f"({sum(c.already for c in mine)} already there, {len(mine)} partitions)", err=True)
            if not follow:
                break
            time.sleep(interval)
    finally:
        source.close()
        dest.close()


def register(cli: click.Group) -> None:
    """Attach `ticktape mirror` to the CLI."""
    cli.add_command(mirror_command)
