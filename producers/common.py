"""What every producer shares: batched appends, dead letters, import bookmarks, summaries.

An import is one `ImportRun`:

    run = ImportRun(tape, source="binance", kind="binance.klines", name=str(path),
                    source_id=file_identity(path))
    if not run.skipped:                       # this exact input was imported before
        for i, row in enumerate(rows):
            try:
                run.emit("md.binance.bar", parse(row))
            except Exception as exc:          # bad input: keep it, keep going
                run.dead_letter(f"line {i + 1}", str(exc), raw_bytes)
    summary = run.finish()                    # flushes, then writes the bookmark

Everything goes through the `Tape` protocol only, so it works on every backend.

* Dead letters: `DeadLetter` events on topic `dlq.<source>`, raw bytes + error + position.
* Bookmarks: a `SourceImported` event on `meta.imports` once an input is fully imported;
  identity is the sha256 of the file bytes (`file_identity`) or of a canonical query
  (`query_identity`), so importing the same input twice adds nothing the second time.
  An import that dies half-way writes no bookmark, but each appended batch is checkpointed on
  `meta.imports.progress`; running it again re-parses the input and appends only what the
  checkpoint does not cover (parsing is deterministic). A crash between a batch and its
  checkpoint repeats that one batch.
* `BatchAppender`: appends per topic in batches (10k by default) so memory stays flat.
* `ImportSummary`: counts per outcome, as text or JSON; `exit_code(strict=...)`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticktape.codec import default_codec
from ticktape.events import DeadLetter, Event, SourceImported
from ticktape.tape.base import Encoded, Position, Tape
from ticktape.timeutil import Clock, WallClock

IMPORTS_TOPIC = "meta.imports"
"""Where import bookmarks (`SourceImported`) live."""

PROGRESS_TOPIC = "meta.imports.progress"
"""Checkpoints of imports under way: after each appended batch, a `SourceImported` whose `topics`
are `topic=count` (events of this input appended so far, per topic)."""

DEFAULT_BATCH = 10_000
MAX_ERROR_SAMPLES = 5
"""How many dead-letter messages a summary keeps verbatim (the rest are only counted)."""


def dlq_topic(source: str) -> str:
    """The dead-letter topic of a source: `dlq.<source>` (e.g. `dlq.binance`)."""
    return f"dlq.{source}"


def file_identity(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex), streamed: the same content is the same input, whatever its name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return "sha256:" + h.hexdigest()


def query_identity(kind: str, params: Mapping[str, Any]) -> str:
    """sha256 of a canonical JSON form of a REST query (kind + sorted parameters)."""
    text = json.dumps({"kind": kind, "params": dict(params)}, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around bulk event building.

    Imports allocate millions of small tuples and no reference cycles; the collector's
    generation-0 passes over them cost as much as building them (measured: 2x on Bar/Trade
    building). Reference counting still frees everything; the collector resumes after.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class BatchAppender:
    """Accumulates events per topic and appends them in batches of `batch_size`.

    Memory stays flat whatever the input size; `flush()` writes what is pending (call it at
    the end, or use the appender as a context manager). Counts per topic are kept.

    Events may come already encoded (`Encoded`, e.g. the Betfair importer's MarketBooks): a batch
    holding any goes through `Tape.append_encoded`, its other events encoded by the codec then.
    """

    def __init__(self, tape: Tape, batch_size: int = DEFAULT_BATCH) -> None:
        self.tape = tape
        self.batch_size = max(1, batch_size)
        self.counts: dict[str, int] = {}  # per topic, including events skipped by `skip`
        self.skip: dict[str, int] = {}  # per topic: leading events not to append again (resume)
        self.on_append: Callable[[str], None] | None = None  # called after each durable append
        # Per topic named in `track_ends`: the end offset per partition after this appender's appends (a
        # checkpoint names them without asking the tape); seed it with the tape's `end_offsets`.
        self.track_ends: set[str] = set()
        self.ends: dict[str, dict[int, int]] = {}
        # Per topic: events, and their keys once any key was given (None: the schema keys).
        self._pending: dict[str, tuple[list[Event | Encoded], list[str | None] | None]] = {}
        self._any_encoded = False  # once an Encoded was added, batches are checked for them

    def _keys(self, topic: str) -> tuple[list[Event | Encoded], list[str | None]]:
        """The topic's pending lists, with explicit keys (schema keys filled in for earlier events)."""
        events, keys = self._pending.setdefault(topic, ([], None))
        if keys is None:
            keys = [_key_of(e) for e in events]
            self._pending[topic] = (events, keys)
        return events, keys

    def add(self, topic: str, event: Event | Encoded, key: str | None = None) -> None:
        """Queue one event; `key` overrides the schema key (rarely needed)."""
        if type(event) is Encoded:
            self._any_encoded = True
        pending = self._pending.get(topic)
        if pending is None:  # (not `setdefault`: that would build a list and a tuple for every event)
            pending = self._pending[topic] = ([], None)
        if key is None and pending[1] is None:
            events = pending[0]
            events.append(event)
        else:
            events, keys = self._keys(topic)
            events.append(event)
            keys.append(key if key is not None else _key_of(event))
        if len(events) >= self.batch_size:
            self._flush_full(topic)

    def extend(self, topic: str, events: Sequence[Event], key: str | None = None) -> None:
        """Queue many events at once; `key` is one key for all of them (it saves a per-event key
        lookup when the caller knows it, e.g. one instrument per file)."""
        pending = self._pending.get(topic)
        if key is None and (pending is None or pending[1] is None):
            self._pending.setdefault(topic, ([], None))[0].extend(events)
        else:
            buf, keys = self._keys(topic)
            buf.extend(events)
            keys.extend([key] * len(events) if key is not None else default_codec().keys_of(events))
        self._flush_full(topic)

    def _flush_full(self, topic: str) -> None:
        events, keys = self._pending[topic]
        n = self.batch_size
        while len(events) >= n:
            self._append(topic, events[:n], keys[:n] if keys is not None else None)
            del events[:n]
            if keys is not None:
                del keys[:n]

    def _append(self, topic: str, events: list[Event | Encoded], keys: list[str | None] | None) -> None:
        n = len(events)
        drop = min(self.skip.get(topic, 0), n)
        if drop:  # already on the tape from an interrupted run of the same input
            self.skip[topic] -= drop
            events = events[drop:]
            keys = keys[drop:] if keys is not None else None
        positions: Sequence[Position] = ()
        if self._any_encoded and any(type(e) is Encoded for e in events):
            positions = self.tape.append_encoded(topic, as_encoded(events, keys))
        elif events:
            positions = self.tape.append(topic, events, keys=keys)  # type: ignore[arg-type]  # no Encoded in it
        if topic in self.track_ends:
            ends = self.ends.setdefault(topic, {})
            for position in positions:
                ends[position.partition] = position.offset + 1
        self.counts[topic] = self.counts.get(topic, 0) + n
        if events and self.on_append is not None:
            self.on_append(topic)

    def _flush_topic(self, topic: str) -> None:
        events, keys = self._pending.pop(topic, ([], None))
        if events:
            self._append(topic, events, keys)

    def flush(self) -> None:
        """Append everything pending (topics in name order, so runs are reproducible)."""
        for topic in sorted(self._pending):
            self._flush_topic(topic)

    @property
    def pending(self) -> int:
        """Events queued but not yet appended."""
        return sum(len(events) for events, _ in self._pending.values())

    def __enter__(self) -> BatchAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def _key_of(event: Event | Encoded) -> str | None:
    return event.key if isinstance(event, Encoded) else default_codec().key_of(event)


def as_encoded(events: Sequence[Event | Encoded], keys: Sequence[str | None] | None = None) -> list[Encoded]:
    """Every event as `Encoded` (objects through the codec); `keys[i]`, when given, is event i's key."""
    codec = default_codec()
    out: list[Encoded] = []
    for i, e in enumerate(events):
        key = keys[i] if keys is not None else None
        if isinstance(e, Encoded):
            out.append(e if key is None or key == e.key else e._replace(key=key))
        else:
            out.append(Encoded(key if key is not None else codec.key_of(e), e.ts_event, codec.encode(e)))
    return out


class DeadLetterSink:
    """Writes unparseable input to `dlq.<source>` as `DeadLetter` events, byte for byte.

    `source` names the producer (topic suffix); `origin` names the input inside the event
    (e.g. `binance:/data/BTCUSDT-1m.csv` or `binance:ws`).
    """

    def __init__(self, appender: BatchAppender, source: str, origin: str, clock: Clock | None = None) -> None:
        self.appender = appender
        self.topic = dlq_topic(source)
        self.origin = origin
        self.clock = clock or WallClock()
        self.count = 0
        self.samples: list[str] = []

    def add(self, position: str, error: str, raw: bytes | str, ts_event: int | None = None,
            ts_recv: int | None = None) -> DeadLetter:
        """Record one bad input; `ts_event` defaults to `ts_recv` (bad input rarely has a usable time)."""
        recv = self.clock.now() if ts_recv is None else ts_recv
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
        dl = DeadLetter(self.origin, position, error, recv if ts_event is None else ts_event, recv, data)
        self.appender.add(self.topic, dl)
        self.count += 1
        if len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append(f"{position}: {error}")
        return dl


def find_progress(tape: Tape, source_id: str) -> SourceImported | None:
    """The last checkpoint of an unfinished import of `source_id` (on `meta.imports.progress`), or None."""
    last = None
    for partition in range(tape.partitions(PROGRESS_TOPIC)):
        for record in tape.read(PROGRESS_TOPIC, partition):
            if isinstance(record.event, SourceImported) and record.event.source_id == source_id:
                last = record.event
    return last


def progress_counts(mark: SourceImported) -> dict[str, int]:
    """Events per topic in a checkpoint (its `topics` are `topic=count`)."""
    out = {}
    for item in mark.topics:
        topic, _, n = item.rpartition("=")
        out[topic] = int(n)
    return out


def find_import(tape: Tape, source_id: str) -> SourceImported | None:
    """The bookmark of an input imported before, or None (reads `meta.imports` via the Tape API)."""
    for partition in range(tape.partitions(IMPORTS_TOPIC)):
        for record in tape.read(IMPORTS_TOPIC, partition):
            ev = record.event
            if isinstance(ev, SourceImported) and ev.source_id == source_id:
                return ev
    return None


class ImportIndex:
    """Every bookmark on the tape, read once: a command importing many files asks this instead
    of re-reading `meta.imports` per file (on Kafka each read costs a consumer)."""

    def __init__(self, tape: Tape) -> None:
        self._marks = {m.source_id: m for m in imported_sources(tape)}
        self._progress: dict[str, SourceImported] = {}
        for partition in range(tape.partitions(PROGRESS_TOPIC)):
            for record in tape.read(PROGRESS_TOPIC, partition):
                if isinstance(record.event, SourceImported):
                    self._progress[record.event.source_id] = record.event

    def get(self, source_id: str) -> SourceImported | None:
        return self._marks.get(source_id)

    def progress(self, source_id: str) -> SourceImported | None:
        """The last checkpoint of an unfinished import of `source_id`."""
        return None if source_id in self._marks else self._progress.get(source_id)

    def add(self, mark: SourceImported) -> None:
        self._marks[mark.source_id] = mark


def imported_sources(tape: Tape) -> list[SourceImported]:
    """Every import bookmark on the tape, in append order per partition."""
    out: list[SourceImported] = []
    for partition in range(tape.partitions(IMPORTS_TOPIC)):
        out.extend(r.event for r in tape.read(IMPORTS_TOPIC, partition) if isinstance(r.event, SourceImported))
    return out


@dataclass
class ImportSummary:
    """What one import did: events per topic, dead letters, or skipped as already imported."""

    name: str
    kind: str
    source_id: str = ""
    events: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    skipped: bool = False
    errors: list[str] = field(default_factory=list)
    resumed: int = 0
    """Events an interrupted earlier run had already appended (counted in `events`, not appended again)."""
    duplicates: int = 0
    """Rows left out because other inputs had put them on the tape already (e.g. Binance trade ids)."""

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    def exit_code(self, strict: bool) -> int:
        """0, or 1 when `strict` and any input was bad (this time, or when it was imported before)."""
        return 1 if strict and self.dead_letters else 0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source_id": self.source_id,
                "outcome": "skipped" if self.skipped else "imported", "events": self.total_events,
                "events_per_topic": dict(sorted(self.events.items())), "dead_letters": self.dead_letters,
                "errors": list(self.errors), "resumed": self.resumed, "duplicates": self.duplicates}

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    def to_text(self) -> str:
        if self.skipped:
            bad = f", with {self.dead_letters} dead letters" if self.dead_letters else ""
            return f"{self.name}: skipped, already imported ({self.kind}, {self.source_id[:19]}{bad})"
        topics = ", ".join(f"{t}={n}" for t, n in sorted(self.events.items())) or "none"
        resumed = f", resumed after {self.resumed} already on the tape" if self.resumed else ""
        dupes = f", {self.duplicates} rows already on the tape from other files left out" if self.duplicates else ""
        lines = [f"{self.name}: {self.total_events} events ({topics}), {self.dead_letters} dead letters{resumed}"
                 f"{dupes}"]
        lines += [f"  bad input: {e}" for e in self.errors]
        if self.dead_letters > len(self.errors):
            lines.append(f"  ... and {self.dead_letters - len(self.errors)} more (see the dlq topic)")
        return "\n".join(lines)


def exit_code(summaries: Iterable[ImportSummary], strict: bool) -> int:
    """The process exit status of a multi-input import: 1 if `strict` and any input was bad."""
    return max((s.exit_code(strict) for s in summaries), default=0)


def summaries_text(summaries: Sequence[ImportSummary], as_json: bool) -> str:
    """Per-input lines plus (for several inputs) a total line; JSON lines with `as_json`."""
    if as_json:
        return "\n".join(s.to_json() for s in summaries)
    lines = [s.to_text() for s in summaries]
    if len(summaries) > 1:
        skipped = sum(s.skipped for s in summaries)
        lines.append(f"total: {sum(s.total_events for s in summaries)} events, "
                     f"{sum(s.dead_letters for s in summaries)} dead letters, "
                     f"{skipped} of {len(summaries)} inputs skipped as already imported")
    return "\n".join(lines)


def report_and_exit(summaries: Sequence[ImportSummary], *, as_json: bool, strict: bool) -> None:
    """The end of every `ticktape import ...` command: print the summaries (stdout), then exit 1
    when `strict` and any input was bad (the good events stay on the tape either way)."""
    import sys

    print(summaries_text(summaries, as_json), flush=True)
    code = exit_code(summaries, strict)
    if code:
        print(f"error: --strict: {sum(s.dead_letters for s in summaries)} bad inputs (see the dlq topics)",
              file=sys.stderr, flush=True)
        sys.exit(code)


class ImportRun:
    """One input's import: batched appends, dead letters and the bookmark, with a summary.

    When the input was imported before (same `source_id`), `skipped` is True and `emit`/
    `dead_letter` refuse to write; `finish()` then returns a skipped summary.
    """

    def __init__(self, tape: Tape, *, source: str, kind: str, name: str, source_id: str,
                 clock: Clock | None = None, batch_size: int = DEFAULT_BATCH, force: bool = False,
                 index: ImportIndex | None = None) -> None:
        self.tape = tape
        self.kind = kind
        self.name = name
        self.source_id = source_id
        self.clock = clock or WallClock()
        self.appender = BatchAppender(tape, batch_size)
        self.dlq = DeadLetterSink(self.appender, source, f"{source}:{name}", self.clock)
        self.index = index
        self.resumed = 0
        self.duplicates = 0
        self.previous: SourceImported | None = None
        if not force:
            self.previous = index.get(source_id) if index is not None else find_import(tape, source_id)
        if self.previous is None:
            checkpoint = None
            if not force:
                checkpoint = index.progress(source_id) if index is not None else find_progress(tape, source_id)
            if checkpoint is not None and checkpoint.kind == kind:  # an interrupted run: not appended again
                self.appender.skip = progress_counts(checkpoint)
                self.resumed = sum(n for t, n in self.appender.skip.items() if t != self.dlq.topic)
            self.appender.on_append = self._checkpoint
        self._finished: ImportSummary | None = None

    def _checkpoint(self, topic: str) -> None:
        # After the batch is durable: a crash from here on repeats nothing of it. (A crash between
        # the batch and this record repeats that one batch on the next run.)
        counts = self.appender.counts
        recv = self.clock.now()
        self.tape.append(PROGRESS_TOPIC, [SourceImported(
            self.source_id, self.kind, self.name, recv, recv,
            sum(n for t, n in counts.items() if t != self.dlq.topic), counts.get(self.dlq.topic, 0),
            tuple(f"{t}={n}" for t, n in sorted(counts.items())))])

    @property
    def skipped(self) -> bool:
        """True when this exact input is already on the tape."""
        return self.previous is not None

    def _check(self) -> None:
        if self.skipped:
            raise RuntimeError(f"{self.name} was already imported; check ImportRun.skipped first")
        if self._finished is not None:
            raise RuntimeError(f"import of {self.name} already finished")

    def emit(self, topic: str, event: Event) -> None:
        """Queue one event for `topic`."""
        self._check()
        self.appender.add(topic, event)

    def emit_many(self, topic: str, events: Sequence[Event], key: str | None = None) -> None:
        """Queue many events for `topic` (the column-wise fast path); `key`: one key for all."""
        self._check()
        self.appender.extend(topic, events, key)

    def dead_letter(self, position: str, error: str, raw: bytes | str, ts_event: int | None = None) -> None:
        """Keep one bad input (raw bytes, error, where) on `dlq.<source>`; the import goes on."""
        self._check()
        self.dlq.add(position, error, raw, ts_event)

    def finish(self) -> ImportSummary:
        """Flush everything, write the bookmark (only after all events are durable), summarise."""
        if self._finished is not None:
            return self._finished
        if self.previous is not None:
            # The import it repeats had these bad inputs: `--strict` fails again rather than
            # turning green on a second run that reads nothing.
            self._finished = ImportSummary(self.name, self.kind, self.source_id, skipped=True,
                                           dead_letters=self.previous.dead_letters)
            return self._finished
        self.appender.flush()
        # bookkeeping records (meta.*, e.g. the Binance id ranges) are not events of the input
        counts = {t: n for t, n in self.appender.counts.items() if t != self.dlq.topic and not t.startswith("meta.")}
        recv = self.clock.now()
        mark = SourceImported(self.source_id, self.kind, self.name, recv, recv, sum(counts.values()),
                              self.dlq.count, tuple(sorted(self.appender.counts)))
        self.tape.create_topic(IMPORTS_TOPIC, 1)
        self.tape.append(IMPORTS_TOPIC, [mark])
        if self.index is not None:
            self.index.add(mark)
        self._finished = ImportSummary(self.name, self.kind, self.source_id, counts, self.dlq.count,
                                       errors=list(self.dlq.samples), resumed=self.resumed,
                                       duplicates=self.duplicates)
        return self._finished

    def __enter__(self) -> ImportRun:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # On an error, keep what was parsed (flush) but write no bookmark: the input is not done.
        if exc_type is not None:
            if not self.skipped:
                self.appender.flush()
            return
        self.finish()


def path_name(path: str | os.PathLike[str]) -> str:
    """How an input file is named in bookmarks and dead letters (the path as given)."""
    return str(Path(path))
