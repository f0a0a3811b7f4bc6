"""What a live runner and a gateway share: journal first, fold, write outputs once, snapshot.

`LiveLoop` drives a `Fold` (the runner's robot fold, the gateway's venue fold) from live inputs:

1. Records arrive (`LiveInputs`) in arrival order; the fold's `accept` picks its inputs.
2. Their references, and any inline inputs due now (timers, a stop, a watchdog verdict), are
   appended to the journal in one batch: the order is durable before anything acts on it.
3. Each input is folded; the outputs (intents, venue answers) are appended in one batch.
4. Every `snapshot_every` inputs or `snapshot_seconds`, the fold's state is saved with the
   journal position and the read positions.

Restart = the latest snapshot, then a replay of the journal after it: the outputs re-derived
there are compared with those already on the tape (a multiset of their encodings, so a crash
between any two appends is fine) and only the missing ones are appended; then live again.
Outputs are therefore written exactly once per derivation, and the fold never sees an input
twice or out of its journaled order.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from robots.live.inputs import LiveInputs
from robots.live.journal import INLINE, Journal, JournalReplay, inline_entry, ref_entry
from robots.live.snapshots import SnapshotStore
from robots.live.topics import SHARED_TOPICS
from ticktape.codec import default_codec
from ticktape.errors import TapeError
from ticktape.events import Event, JournalEntry, RunSnapshot
from ticktape.retry import backoff_delays, retry_call
from ticktape.tape.base import Record, Tape
from ticktape.tape.file import FileTape

__all__ = ["Fold", "LiveLoop", "Output"]

log = logging.getLogger("ticktape.live")

Output = tuple[str, str, Event]
"""(topic, key, event) an input caused."""


class Fold(Protocol):
    """A deterministic fold the loop drives (see `robots.live.runner`, `robots.live.gateway`)."""

    @property
    def seq(self) -> int:
        """Sequence number of the next input."""

    def accept(self, record: Record) -> bool:
        """Whether a record read live is one of the fold's inputs (decided before journaling)."""

    def fold(self, record: Record) -> list[Output]:
        """Fold one journaled input (an inline one has topic "" and offset -1); return its outputs."""

    def due(self, now: int) -> list[Event]:
        """Process-only inputs due at wall time `now` (timers, verdicts); journaled inline."""

    def snapshot(self) -> tuple[str, str] | None:
        """(state JSON, engine JSON), or None when the fold does not snapshot."""

    def restore(self, state_json: str, engine_json: str) -> None:
        """Continue from a snapshot's state."""

    def recorded_outputs(self, tape: Tape, since: dict[str, dict[int, int]]) -> Iterable[Output]:
        """The outputs already on the tape that this fold may derive again, from offsets `since`."""

    def output_topics(self) -> Sequence[str]:
        """Topics the fold writes."""


class LiveLoop:
    """Runs a `Fold` live on a tape: recovery, then the journal-first loop until `stop` is set."""

    def __init__(self, tape: Tape, uri: str, stream: str, fold: Fold, topics: Sequence[str], *,
                 store: SnapshotStore | None, snapshot_every: int = 10_000, snapshot_seconds: float = 30.0,
                 poll: float = 0.0005) -> None:
        self.tape = tape
        self.uri = uri
        self.stream = stream
        self.fold = fold
        self.topics = tuple(topics)
        self.store = store
        self.snapshot_every = snapshot_every
        self.snapshot_seconds = snapshot_seconds
        self.poll = poll
        self.journal = Journal(tape, stream)
        self.positions: dict[tuple[str, int], int] = {}
        self.journal_end = 0
        self.outputs_written = 0
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._encode = default_codec().encode
        self.inputs_reader: LiveInputs | None = None
        self.replayed = 0
        self.last_outputs: list[Output] = []  # what the last `step` wrote

    # ------------------------------------------------------------------ recovery
    def recover(self, *, start: str = "latest", earliest: Sequence[str] = ()) -> None:
        """Load the latest snapshot and replay the journal after it, writing only missing outputs.

        On a first start (empty journal) the read positions are journaled as entries of no
        records: `start="latest"` reads only what arrives from now on, `"earliest"` everything;
        the topics in `earliest` are read from their beginning either way.
        """
        for topic in self.topics:
            n = self.tape.partitions(topic)
            if n == 0:
                raise_missing(self.tape, topic)
            for p in range(n):
                self.positions[(topic, p)] = 0
        since: dict[str, dict[int, int]] = {t: {} for t in self.fold.output_topics()}
        journal_from = 0
        snap = self.store.latest(self.stream) if self.store is not None else None
        if snap is not None:
            engine = json.loads(snap.engine)
            self.fold.restore(snap.state, engine["fold"])
            for key, offset in engine["positions"].items():
                topic, _, p = key.rpartition("/")
                if (topic, int(p)) in self.positions:
                    self.positions[(topic, int(p))] = int(offset)
            since = {t: {int(p): int(o) for p, o in parts.items()} for t, parts in engine["outputs"].items()}
            journal_from = snap.journal_offset
        elif self.journal.end() == 0:
            self._journal_start(start, earliest)
            return
        recorded = Counter((t, k, self._encode(e)) for t, k, e in self.fold.recorded_outputs(self.tape, since))
        replay = JournalReplay(self.tape)
        missing: list[Output] = []
        for offset, entry in self.journal.entries(journal_from, self.fold.seq):
            if entry.topic != INLINE:
                key = (entry.topic, entry.partition)
                self.positions[key] = max(self.positions.get(key, 0), entry.offset + entry.length)
            for rec in replay.records(entry, where=f"{self.journal.topic} offset {offset}"):
                for out in self.fold.fold(rec):
                    ident = (out[0], out[1], self._encode(out[2]))
                    if recorded[ident] > 0:
                        recorded[ident] -= 1
                    else:
                        missing.append(out)
                self.replayed += 1
            self.journal_end = offset + 1
        self.journal_end = max(self.journal_end, self.journal.end())
        if missing:
            log.info("%s: %d outputs derived before the restart were not on the tape; writing them",
                     self.stream, len(missing))
            self._write(missing)

    def _journal_start(self, start: str, earliest: Sequence[str]) -> None:
        if start not in ("latest", "earliest"):
            raise ValueError(f"start must be 'latest' or 'earliest', got {start!r}")
        now = time.time_ns()
        entries = []
        for topic, p in sorted(self.positions):
            offset = self.tape.end_offsets(topic).get(p, 0) if start == "latest" and topic not in earliest else 0
            self.positions[(topic, p)] = offset
            entries.append(JournalEntry(self.stream, self.fold.seq, 0, now, topic, p, offset, 0, b""))
        self.journal.append(entries)
        self.journal_end = len(entries)

    # ------------------------------------------------------------------ the loop
    def start_inputs(self, *, first: Sequence[str] = ()) -> None:
        """Start following the input partitions from the recovered positions (the backlog of the `first`
        topics before anything else)."""
        self.inputs_reader = LiveInputs(self.uri, self.positions, poll=self.poll)
        self.inputs_reader.start(first=first)

    def step(self, records: Sequence[Record], extra: Sequence[Event] = (), *, before: Sequence[Event] = ()) -> int:
        """Journal, fold and write one batch: the inline inputs `before`, the arrived records, then `extra`
        and the fold's due inputs (timers). Returns how many inputs were folded."""
        fold = self.fold
        entries = []
        events: list[Record] = []
        now = time.time_ns()
        seq = fold.seq
        for event in before:
            entries.append(inline_entry(self.stream, seq, event, now))
            seq += 1
            events.append(Record(INLINE, 0, -1, None, event))
        run_first: Record | None = None
        run_count = 0
        positions = self.positions
        for rec in records:
            key = (rec.topic, rec.partition)
            if rec.offset < positions.get(key, 0):
                continue  # already read (a follower restarted behind us)
            positions[key] = rec.offset + 1
            if not fold.accept(rec):
                continue
            if (run_first is not None and run_first.topic == rec.topic and run_first.partition == rec.partition
                    and run_first.offset + run_count == rec.offset):
                run_count += 1
            else:
                if run_first is not None:
                    entries.append(ref_entry(self.stream, seq, run_first, run_count, now))
                    seq += run_count
                run_first, run_count = rec, 1
            events.append(rec)
        if run_first is not None:
            entries.append(ref_entry(self.stream, seq, run_first, run_count, now))
            seq += run_count
        inline = list(extra) + fold.due(now)
        for event in inline:
            entries.append(inline_entry(self.stream, seq, event, now))
            seq += 1
            events.append(Record(INLINE, 0, -1, None, event))
        if not entries:
            self._maybe_snapshot()
            return 0
        retrying(f"{self.stream}: journal append", lambda: self.journal.append(entries))
        self.journal_end += len(entries)
        outputs: list[Output] = []
        for rec in events:
            outputs.extend(fold.fold(rec))
        if outputs:
            self._write(outputs)
        self.last_outputs = outputs
        self._since_snapshot += len(events)
        self._maybe_snapshot()
        return len(events)

    def _write(self, outputs: list[Output]) -> None:
        by_topic: dict[str, tuple[list[Event], list[str | None]]] = {}
        for topic, key, event in outputs:
            evs, keys = by_topic.setdefault(topic, ([], []))
            evs.append(event)
            keys.append(key)
        for topic, (evs, keys) in by_topic.items():
            retrying(f"{self.stream}: append to {topic}", functools.partial(append_to, self.tape, topic, evs, keys))
        self.outputs_written += len(outputs)

    # ------------------------------------------------------------------ snapshots
    def _maybe_snapshot(self) -> None:
        if self.store is None or self._since_snapshot == 0:
            return
        if (self._since_snapshot >= self.snapshot_every
                or time.monotonic() - self._last_snapshot >= self.snapshot_seconds):
            self.snapshot()

    def snapshot(self) -> bool:
        """Save the fold's state at the current journal position (False if it keeps none)."""
        parts = self.fold.snapshot() if self.store is not None else None
        if parts is None or self.store is None:
            return False
        outputs = {t: {str(p): o for p, o in self.tape.end_offsets(t).items()} for t in self.fold.output_topics()}
        engine = json.dumps({"fold": parts[1], "outputs": outputs,
                             "positions": {f"{t}/{p}": o for (t, p), o in sorted(self.positions.items())}},
                            sort_keys=True, separators=(",", ":"))
        last_ts = getattr(self.fold, "last_ts", 0)
        snap = RunSnapshot(self.stream, int(last_ts), time.time_ns(), self.journal_end, self.fold.seq,
                           self.outputs_written, parts[0], engine)
        store = self.store
        retrying(f"{self.stream}: snapshot", lambda: store.save(snap))
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        return True

    def close(self) -> None:
        """Stop the input readers."""
        if self.inputs_reader is not None:
            self.inputs_reader.close()


def open_live_tape(uri: str) -> Tape:
    """Open a tape for a live process: on Kafka without the producer's linger (default 5 ms), unless
    the URI sets one. A live append waits for its acknowledgement anyway, so lingering only adds
    latency to every intent and answer (kafka-python: 7.7 -> 2.6 ms per append at p50)."""
    from ticktape.tape import open_tape

    scheme = uri.partition(":")[0]
    if scheme.startswith("kafka") and "linger_ms=" not in uri.partition("?")[2]:
        return open_tape(uri, linger_ms=0)
    return open_tape(uri)


def append_to(tape: Tape, topic: str, events: Sequence[Event], keys: Sequence[str | None]) -> None:
    """Append; to a topic other processes write too (`SHARED_TOPICS`) the file tape's way that lets go."""
    if topic in SHARED_TOPICS and isinstance(tape, FileTape):
        tape.append_shared(topic, events, keys)
    else:
        tape.append(topic, events, keys=keys)


def retrying(what: str, call: Callable[[], object], *, first_wait: float = 0.05, max_wait: float = 2.0) -> None:
    """Call until it succeeds: a tape error (a broker restarting, a full disk) waits and tries again.

    A retried append may have been written already (Kafka after a broker crash): the journal's
    sequence numbers and the folds' duplicate windows make a second copy harmless.
    """
    retry_call(call, retry_on=(TapeError,), delays=backoff_delays(first_wait, max_wait, jitter=0.5),
               on_retry=lambda exc, wait: log.warning("%s failed (%s); trying again in %.2f s", what, exc, wait))


def raise_missing(tape: Tape, topic: str) -> None:
    """A live fold's input topic must exist (a typo would otherwise wait forever)."""
    raise TapeError(f"input topic {topic!r} does not exist on {tape.uri}; create it (or start its recorder) first")
