"""Follow topic partitions live, on any tape backend, and hand their records over in arrival order.

One thread per partition reads with its own tape handle (a `Tape` is used from one thread) and
puts batches of records on one queue; the order in which batches reach the queue is the
arrival order the fold will journal. The file tape is polled (`poll` seconds between looks at
an idle partition); Kafka long-polls through its `follow` reader.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from ticktape.errors import TapeError
from ticktape.tape import Tape, open_tape
from ticktape.tape.base import Record

__all__ = ["LiveInputs"]

log = logging.getLogger("ticktape.live")

_BATCH = 1000


class LiveInputs:
    """Records of several partitions, from given offsets on, as they arrive."""

    def __init__(self, uri: str, positions: Mapping[tuple[str, int], int], *, poll: float = 0.0005,
                 opener: Callable[[str], Tape] = open_tape, max_batches: int = 10_000) -> None:
        self.uri = uri
        self.positions = dict(positions)
        self.poll = poll
        self._open = opener
        self._queue: queue.Queue[list[Record] | BaseException] = queue.Queue(max_batches)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reached: dict[tuple[str, int], int] = {}  # next offset to hand over, per partition

    def start(self) -> None:
        """Start one reader thread per partition."""
        for (topic, partition), offset in sorted(self.positions.items()):
            t = threading.Thread(target=self._follow, args=(topic, partition, offset),
                                 name=f"follow-{topic}-{partition}", daemon=True)
            t.start()
            self._threads.append(t)

    def get(self, timeout: float) -> list[Record]:
        """The records that arrived, oldest first (waits up to `timeout` s for the first; maybe none)."""
        out: list[Record] = []
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return out
        while True:
            if isinstance(item, BaseException):
                raise TapeError(f"following {self.uri}: {item}") from item
            out.extend(item)
            if len(out) >= 10 * _BATCH:
                return out
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out

    def close(self) -> None:
        """Stop the readers (file readers within a poll; a Kafka reader at its next record: daemon threads)."""
        self._stop.set()

    # ------------------------------------------------------------------ reader threads
    def _follow(self, topic: str, partition: int, offset: int) -> None:
        """Follow one partition; on a tape error (a broker restarting) reopen from the next offset."""
        while not self._stop.is_set():
            try:
                offset = self._follow_once(topic, partition, offset)
                return
            except TapeError as exc:
                if self._stop.is_set():
                    return
                log.warning("following %s partition %d on %s: %s; again in 0.5 s", topic, partition, self.uri, exc)
                time.sleep(0.5)
                offset = self._reached.get((topic, partition), offset)
            except BaseException as exc:  # anything else is a bug or bad data: the consumer raises it
                if not self._stop.is_set():
                    self._queue.put(exc)
                return

    def _follow_once(self, topic: str, partition: int, offset: int) -> int:
        tape = self._open(self.uri)
        key = (topic, partition)
        try:
            from ticktape.tape.file import FileTape

            if not isinstance(tape, FileTape):
                # Kafka long-polls inside `read`; a record is handed over as soon as it is fetched.
                for rec in tape.read(topic, partition, from_offset=offset, follow=True, poll_interval=0.01):
                    self._queue.put([rec])
                    self._reached[key] = rec.offset + 1
                    if self._stop.is_set():
                        break
                return self._reached.get(key, offset)
            batch: list[Record] = []
            for item in self._poll_file(tape, topic, partition, offset):
                if item is None:  # the partition's end for now: hand over what we have
                    if batch:
                        self._queue.put(batch)
                        self._reached[key] = batch[-1].offset + 1
                        batch = []
                    if self._stop.is_set():
                        break
                    continue
                batch.append(item)
                if len(batch) >= _BATCH:
                    self._queue.put(batch)
                    self._reached[key] = batch[-1].offset + 1
                    batch = []
            return self._reached.get(key, offset)
        finally:
            tape.close()

    def _poll_file(self, tape: Tape, topic: str, partition: int, offset: int) -> Iterator[Record | None]:
        """Records from `offset` on, with a None after every look that found the partition's end."""
        while not self._stop.is_set():
            found = False
            for rec in tape.read(topic, partition, from_offset=offset):
                yield rec
                offset = rec.offset + 1
                found = True
            yield None
            if not found:
                time.sleep(self.poll)
