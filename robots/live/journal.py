"""A live fold's journal: the inputs it processed, in the order it processed them, appended first.

Each `JournalEntry` either references `length` consecutive records of one topic partition (what
a live run reads from the tape) or carries one process-only input inline (a timer the wall
clock fired, a stop the process decided, a watchdog's verdict). The stream's journal is the
one-partition topic `journal.<stream>`; its offsets are the journal positions that snapshots
name. `JournalReplay` turns entries back into the exact input records, reading each partition
sequentially (a reference per record would otherwise cost one tape read per input).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from robots.live.topics import journal_topic
from ticktape.codec import default_codec
from ticktape.errors import TapeError
from ticktape.events import Event, JournalEntry
from ticktape.tape.base import Record, Tape

__all__ = ["INLINE", "Journal", "JournalReplay", "inline_entry", "ref_entry"]

INLINE = ""
"""The `topic` of a journal entry (and of the `Record` replay yields) that carries its input inline."""


def ref_entry(stream: str, seq: int, first: Record, count: int, ts_recv: int) -> JournalEntry:
    """An entry referencing `count` consecutive records starting at `first`."""
    return JournalEntry(stream, seq, first.event.ts_event, ts_recv, first.topic, first.partition, first.offset,
                        count, b"")


def inline_entry(stream: str, seq: int, event: Event, ts_recv: int) -> JournalEntry:
    """An entry carrying a process-only input (its single-object encoding)."""
    return JournalEntry(stream, seq, event.ts_event, ts_recv, INLINE, 0, 0, 1, default_codec().encode(event))


class Journal:
    """Appends to and reads `journal.<stream>` (created on first use, one partition)."""

    def __init__(self, tape: Tape, stream: str) -> None:
        self.tape = tape
        self.stream = stream
        self.topic = journal_topic(stream)
        if tape.partitions(self.topic) == 0:
            tape.create_topic(self.topic, 1)

    def end(self) -> int:
        """The next journal offset (how many entries were ever appended)."""
        return self.tape.end_offsets(self.topic).get(0, 0)

    def append(self, entries: Sequence[JournalEntry]) -> None:
        """Append durably, in order, before any of these inputs changes state."""
        if entries:
            self.tape.append(self.topic, entries, keys=[self.stream] * len(entries), partition=0)

    def entries(self, from_offset: int = 0, next_seq: int = 0) -> Iterator[tuple[int, JournalEntry]]:
        """(journal offset, entry) from `from_offset` to the current end, each input once.

        `next_seq` is the sequence number of the next input expected. An entry of inputs the fold
        already has (its `seq` is below) is a second copy of an append that was retried (Kafka may
        write a retried batch twice after a broker crash): it is skipped.
        """
        for rec in self.tape.read(self.topic, 0, from_offset=from_offset):
            entry = rec.event
            if type(entry) is not JournalEntry:
                raise TapeError(f"{self.topic} offset {rec.offset}: a {type(entry).__name__}, not a JournalEntry")
            if entry.length > 0:
                if entry.seq < next_seq:
                    continue
                next_seq = entry.seq + entry.length
            yield rec.offset, entry


@dataclass
class _Cursor:
    next_offset: int
    records: Iterator[Record]


class JournalReplay:
    """Resolves journal entries to the input records they stand for, in journal order."""

    def __init__(self, tape: Tape) -> None:
        self.tape = tape
        self._cursors: dict[tuple[str, int], _Cursor] = {}
        self._decode = default_codec().decode

    def records(self, entry: JournalEntry, where: str = "") -> list[Record]:
        """The entry's inputs: `length` records of its partition, or its inline event (offset -1)."""
        if entry.topic == INLINE:
            return [Record(INLINE, 0, -1, None, self._decode(entry.event, where=where))]
        return self._take(entry.topic, entry.partition, entry.offset, entry.length, where)

    def _open(self, topic: str, partition: int, offset: int) -> _Cursor:
        cursor = _Cursor(offset, self.tape.read(topic, partition, from_offset=offset))
        self._cursors[(topic, partition)] = cursor
        return cursor

    def _take(self, topic: str, partition: int, offset: int, count: int, where: str) -> list[Record]:
        cursor = self._cursors.get((topic, partition))
        if cursor is None or cursor.next_offset != offset:
            cursor = self._open(topic, partition, offset)
        out: list[Record] = []
        reopened = False
        while len(out) < count:
            rec = next(cursor.records, None)
            if rec is None:  # the reader stopped at the end offset of its time: look again once
                if reopened:
                    raise TapeError(f"{where}: the journal refers to {topic} partition {partition} offsets "
                                    f"{offset}..{offset + count - 1}, but the tape ends at {offset + len(out)}")
                cursor = self._open(topic, partition, offset + len(out))
                reopened = True
                continue
            if rec.offset != offset + len(out):
                raise TapeError(f"{where}: the journal refers to {topic} partition {partition} offset "
                                f"{offset + len(out)}, which the tape no longer holds (retention?); "
                                f"it has {rec.offset}")
            out.append(rec)
            reopened = False
        cursor.next_offset = offset + count
        return out
