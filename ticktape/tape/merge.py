"""Reading several partitions (and topics) as one deterministic sequence."""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator, Sequence

from ticktape.tape.base import Record, Tape


def read_merged(tape: Tape, topics: Sequence[str], *, from_offset: int | None = None,
                from_time: int | None = None, limit: int | None = None) -> Iterator[Record]:
    """Every record of the topics' partitions, ordered by (ts_event, topic order, partition, offset).

    The order depends only on the data, never on timing: the tie-break is the topic's
    position in `topics`, then partition, then offset.
    """
    streams = []
    for rank, topic in enumerate(topics):
        for p in range(tape.partitions(topic)):
            it = tape.read(topic, p, from_offset=from_offset, from_time=from_time)
            streams.append((r.event.ts_event, rank, r.partition, r.offset, r) for r in it)
    for produced, item in enumerate(heapq.merge(*streams), start=1):
        yield item[4]
        if limit is not None and produced >= limit:
            return


def follow_all(tape: Tape, topic: str, *, from_offset: int | None = None, from_time: int | None = None,
               limit: int | None = None, poll_interval: float = 0.05) -> Iterator[Record]:
    """Tail every partition of a topic, yielding records as they arrive (partition order per poll)."""
    next_offsets: dict[int, int] = {}
    produced = 0
    while True:
        progressed = False
        for p in range(tape.partitions(topic)):
            if p not in next_offsets:
                if from_offset is not None:
                    next_offsets[p] = from_offset
                elif from_time is not None:
                    next_offsets[p] = tape.offset_for_time(topic, p, from_time)
                else:
                    next_offsets[p] = 0
            for r in tape.read(topic, p, from_offset=next_offsets[p]):
                yield r
                next_offsets[p] = r.offset + 1
                produced += 1
                progressed = True
                if limit is not None and produced >= limit:
                    return
        if not progressed:
            time.sleep(poll_interval)
