"""Follow topic partitions live, on any tape backend, and hand their records over in arrival order.

Reader threads put batches of records on one queue; the order in which batches reach the queue
is the arrival order the fold will journal. On the file tape one thread polls every partition:
it looks at each partition's `change_token` (three stats) every `poll` seconds and reads only
the partitions that changed, so an idle partition costs microseconds, not a read. On Kafka one
thread per partition long-polls through its own tape handle (a `Tape` is used from one thread).
Before any of that, the backlog of the `first` topics (what is on the tape at start) is handed
over: a restarted runner learns what happened to its orders while it was down before it sees
the market data that arrives now.
A reader that meets a tape error (a broker restarting) opens the tape again and goes on from
the next offset.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ticktape.errors import TapeError
from ticktape.tape import Tape, open_tape
from ticktape.tape.base import Record
from ticktape.tape.file import FileTape

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
        self._reached: dict[tuple[str, int], int] = dict(self.positions)  # next offset to hand over
        self._first: tuple[str, ...] = ()

    def start(self, *, first: Sequence[str] = ()) -> None:
        """Start reading: the records of the `first` topics already on the tape, then every partition as
        records arrive."""
        self._first = tuple(first)
        self._spawn("follow-start", self._guarded, self._begin, None)

    def _begin(self, tape: Tape, _key: tuple[str, int] | None) -> None:
        """Hand over the `first` topics' backlog, then follow (files: in this thread; Kafka: a thread each)."""
        for key in sorted(k for k in self.positions if k[0] in self._first):
            end = tape.end_offsets(key[0]).get(key[1], 0)
            while self._reached[key] < end and not self._stop.is_set():
                want = min(_BATCH, end - self._reached[key])
                batch = list(itertools.islice(tape.read(key[0], key[1], from_offset=self._reached[key]), want))
                if not batch:
                    break
                self._hand_over(key, batch)
        if isinstance(tape, FileTape):
            self._poll_files(tape, None)
            return
        for key in sorted(self.positions):
            self._spawn(f"follow-{key[0]}-{key[1]}", self._guarded, self._follow_kafka, key)

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
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

    def wake(self) -> None:
        """Make a waiting `get` return now (with what has arrived, maybe nothing): another input is waiting
        elsewhere (a venue's report in the gateway's inbox)."""
        self._queue.put([])

    def close(self) -> None:
        """Stop the readers (the file poller within a poll; a Kafka reader at its next record: daemon threads)."""
        self._stop.set()

    # ------------------------------------------------------------------ reader threads
    def _guarded(self, body: Callable[[Tape, tuple[str, int] | None], None], key: tuple[str, int] | None) -> None:
        """Run a reader; on a tape error open the tape again and go on from the next offset."""
        while not self._stop.is_set():
            try:
                tape = self._open(self.uri)
            except TapeError as exc:
                log.warning("opening %s: %s; again in 0.5 s", self.uri, exc)
                time.sleep(0.5)
                continue
            except BaseException as exc:  # a bug or bad data: the consumer raises it
                self._queue.put(exc)
                return
            try:
                body(tape, key)
                return
            except TapeError as exc:
                if self._stop.is_set():
                    return
                log.warning("following %s on %s: %s; again in 0.5 s", key or "the partitions", self.uri, exc)
                time.sleep(0.5)
            except BaseException as exc:
                if not self._stop.is_set():
                    self._queue.put(exc)
                return
            finally:
                tape.close()

    def _hand_over(self, key: tuple[str, int], batch: list[Record]) -> None:
        self._queue.put(batch)
        self._reached[key] = batch[-1].offset + 1

    def _follow_kafka(self, tape: Tape, key: tuple[str, int] | None) -> None:
        assert key is not None
        topic, partition = key
        # Kafka long-polls inside `read`; a record is handed over as soon as it is fetched.
        for rec in tape.read(topic, partition, from_offset=self._reached[key], follow=True, poll_interval=0.01):
            self._hand_over(key, [rec])
            if self._stop.is_set():
                return

    def _poll_files(self, tape: Tape, _key: tuple[str, int] | None) -> None:
        assert isinstance(tape, FileTape)
        keys = sorted(self.positions)
        tokens: dict[tuple[str, int], tuple[int, int, int] | None] = dict.fromkeys(keys)
        while not self._stop.is_set():
            found = False
            for key in keys:
                token = tape.change_token(*key)
                if token == tokens[key]:
                    continue
                tokens[key] = token  # taken before reading: an append during the read changes it again
                batch = list(itertools.islice(tape.read(key[0], key[1], from_offset=self._reached[key]), _BATCH))
                if batch:
                    self._hand_over(key, batch)
                    found = True
                    if len(batch) == _BATCH:
                        tokens[key] = None  # more may be there: read again next round
            if not found:
                time.sleep(self.poll)
