"""`ticktape mongo sync`: keep MongoDB's `orders`, `positions` and `runs` in step with the tape.

The I/O loop around the pure `ticktape.mongo.projection`, one batch at a time:

1. Read the next batch: each partition of `runs`, `orders.intent`, `orders.event` (in that
   order) from the checkpoint's position, at most `batch` records per partition. From the same
   checkpoint on the same tape the batch is the same, so a sync killed and run again cuts the
   very batches an uninterrupted one cuts (and stamps the same `_seq`).
2. Read back the documents the batch touches that are not cached (one `find` per collection),
   fold the records, write every changed document whole: one unordered `bulk_write` of
   `ReplaceOne` upserts per collection. Each document carries the offsets it has absorbed
   (`_applied`), so the write is self-describing and a re-run skips what a document holds.
3. Write the checkpoint (`sync_state`): the next offset per partition and the change sequence
   `seq` (tape records consumed so far). The batch's documents carry `_seq` = that number, so a
   reader asking for `_seq <= committed seq` never sees half a batch (`changes`).

No multi-document transactions (FerretDB has none, nor a standalone MongoDB). A sync killed
between 2 and 3 re-reads the batch; the documents written skip it, the others absorb it: the
collections end up as an uninterrupted sync leaves them. A server that is down or restarting is
waited for (backoff, one warning per outage) and the batch is written again.

A record the codec cannot decode becomes a `DeadLetter` on `dlq.mongo-sync` naming topic,
partition and offset, and the sync goes on after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ticktape.errors import ConfigError, DecodeError
from ticktape.events import DeadLetter
from ticktape.mongo.client import describe
from ticktape.mongo.projection import COLLECTIONS, INTERNAL_FIELDS, Doc, Projection, applied_key, public
from ticktape.retry import backoff_delays, retry_call
from ticktape.tape.base import Record, Tape
from ticktape.topics import EVENT_TOPIC, INTENT_TOPIC, RUNS_TOPIC

__all__ = ["CHECKPOINT", "DLQ_SOURCE", "STATE", "SYNC_TOPICS", "MongoSync", "SyncStats", "changes", "committed_seq",
           "time_cut", "watch"]

log = logging.getLogger("ticktape.mongo.sync")

SYNC_TOPICS = (RUNS_TOPIC, INTENT_TOPIC, EVENT_TOPIC)
"""What the view is made of, in the order a batch reads them."""

STATE = "sync_state"
"""The collection of the checkpoint."""

CHECKPOINT = "checkpoint"
"""`_id` of the checkpoint document in `sync_state`."""

DLQ_SOURCE = "mongo-sync"
"""Dead letters of records the sync could not decode go to `dlq.mongo-sync`."""

DUPLICATE_KEY = 11000

T = TypeVar("T")


@dataclass
class SyncStats:
    """What a sync did: records read, document writes, batches, dead letters, seconds spent in batches."""

    records: int = 0
    documents: int = 0
    batches: int = 0
    dead_letters: int = 0
    seconds: float = 0.0


class MongoSync:
    """Projects one tape into one MongoDB database: `prepare` once, then `step` (one batch) or `run`.

    `topics` (runs, intents, answers) default to the runner's topic names; `cache` bounds the
    documents held in memory between batches; `stop` ends `run` after the batch under way, and
    also ends a wait for a server that is down.
    """

    def __init__(self, tape: Tape, db: Any, *, batch: int = 5000, cache: int = 200_000,
                 topics: Sequence[str] = SYNC_TOPICS, stop: threading.Event | None = None) -> None:
        if batch < 1:
            raise ConfigError(f"batch must be at least 1, not {batch}")
        self.tape = tape
        self.db = db
        self.batch = batch
        self.cache = cache
        self.topics = tuple(topics)
        self.stop = stop or threading.Event()
        self.projection = Projection()
        self.positions: dict[tuple[str, int], int] = {}
        self.seq = 0
        self.stats = SyncStats()
        # True while every existing document is in the cache (a view read whole at start, from
        # which nothing was evicted since): then a document not cached does not exist.
        self._cache_complete = False
        self._where = describe(db)
        self._down_since: float | None = None

    # ------------------------------------------------------------------ MongoDB, waited for
    def _mongo(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, waiting out a server that is down or restarting; InterruptedError on `stop` meanwhile."""
        from pymongo.errors import ConnectionFailure

        def on_retry(exc: BaseException, delay: float) -> None:
            if self._down_since is None:  # once per outage, not once per attempt
                self._down_since = time.monotonic()
                log.warning("MongoDB at %s unreachable while %s (%s); waiting for it", self._where, what,
                            str(exc).splitlines()[0][:200])

        def attempt() -> T:
            if self._down_since is not None and self.stop.is_set():
                raise InterruptedError(f"stopped while waiting for MongoDB at {self._where}")
            return call()

        result = retry_call(attempt, retry_on=(ConnectionFailure,), delays=backoff_delays(0.1, 5.0, jitter=0.5),
                            on_retry=on_retry, sleep=self.stop.wait)
        if self._down_since is not None:
            log.warning("MongoDB at %s is back after %.1f s", self._where, time.monotonic() - self._down_since)
            self._down_since = None
        return result

    # ------------------------------------------------------------------ start
    def prepare(self, *, rebuild: bool = False) -> None:
        """Create the indexes and load the checkpoint to resume from.

        `rebuild` drops the view's collections first and starts from the tape's beginning. A
        database holding the view of another tape is refused (ConfigError).
        """
        db = self.db
        if rebuild:
            for name in (*COLLECTIONS, STATE):
                self._mongo(f"dropping {name}", lambda n=name: db.drop_collection(n))  # type: ignore[misc]
        state = self._mongo("reading the checkpoint", lambda: db[STATE].find_one({"_id": CHECKPOINT}))
        if state is not None:
            if state.get("tape") != self.tape.uri or tuple(state.get("topics", ())) != self.topics:
                raise ConfigError(f"{self._where} holds the view of {state.get('tape')!r} "
                                  f"(topics {', '.join(state.get('topics', ()))}), not of {self.tape.uri!r}: "
                                  "use another database, or --rebuild to replace it")
            by_key = state["positions"]
            self.positions = {(t, p): int(by_key[applied_key(t, p)]) for t in self.topics
                              for p in range(self.tape.partitions(t)) if applied_key(t, p) in by_key}
            self.seq = int(state["seq"])
        self._mongo("reading the view", self._warm_up)
        self._mongo("creating indexes", self._indexes)

    def _warm_up(self) -> None:
        """Cache the whole view when it is small (at most half of `cache` documents): one read of
        each collection now instead of a lookup of the documents each batch touches. Then a
        document not cached does not exist (one sync per database: nothing else writes there)."""
        docs = self.projection.docs
        docs.clear()
        if sum(self.db[c].estimated_document_count() for c in COLLECTIONS) > self.cache // 2:
            self._cache_complete = False
            return
        for c in COLLECTIONS:
            for doc in self.db[c].find():
                docs[(c, doc["_id"])] = doc
        self._cache_complete = True

    def _indexes(self) -> None:
        db = self.db
        db.orders.create_index([("run", 1), ("status", 1)])
        db.orders.create_index([("instrument", 1), ("last_ts", 1)])
        db.positions.create_index([("run", 1), ("robot", 1), ("instrument", 1)])
        db.positions.create_index([("instrument", 1)])
        db.runs.create_index([("robot", 1), ("started_ts", 1)])
        for name in COLLECTIONS:
            db[name].create_index([("_seq", 1)])

    # ------------------------------------------------------------------ one batch
    def read_batch(self) -> list[Record]:
        """The next batch in read order; advances `positions` (which `step` then commits).

        Each partition gives at most `batch` records. While some partition has more to give, the
        batch stops at a common time (`time_cut`), so an order's intent and its answers, which
        sit in different partitions, usually arrive in the same batch and its document is written
        once rather than once per batch. The cut depends only on the tape's records, so a sync
        resumed from a checkpoint cuts the batches an uninterrupted one cuts.

        A record that cannot be decoded is sent to the dead-letter topic and skipped.
        """
        reads: dict[tuple[str, int], list[Record]] = {}
        failed: dict[tuple[str, int], int] = {}  # partitions stopped by a record that cannot be decoded
        for topic in self.topics:
            for p in range(self.tape.partitions(topic)):
                recs = reads[(topic, p)] = []
                start = self.positions.get((topic, p), 0)
                try:
                    recs.extend(self.tape.read(topic, p, from_offset=start, limit=self.batch))
                except DecodeError as exc:
                    bad = recs[-1].offset + 1 if recs else start
                    self._dead_letter(topic, p, bad, exc)
                    failed[(topic, p)] = bad + 1  # the next batch goes on after it
        kept = time_cut(reads, self.batch, exempt=set(failed))
        out: list[Record] = []
        for key, recs in reads.items():
            recs = recs[:kept[key]]
            out += recs
            if key in failed:
                self.positions[key] = failed[key]
            elif recs:
                self.positions[key] = recs[-1].offset + 1
        return out

    def _dead_letter(self, topic: str, partition: int, offset: int, exc: DecodeError) -> None:
        # lazy: the dead-letter convention lives with the producers, which the view otherwise needs not
        from producers.common import dlq_topic

        position = f"{topic}/{partition}@{offset}"
        log.warning("dead letter: %s could not be decoded (%s); going on after it", position, exc)
        now = time.time_ns()
        # The port gives no raw bytes of a record it cannot decode: the position says where to find them.
        self.tape.append(dlq_topic(DLQ_SOURCE), [DeadLetter(source=f"{DLQ_SOURCE}:{self.tape.uri}", position=position,
                                                            error=str(exc), ts_event=now, ts_recv=now, raw=b"")])
        self.stats.dead_letters += 1

    def step(self) -> int:
        """Read, fold and write one batch, then its checkpoint; how many records it held (0: caught up)."""
        t0 = time.perf_counter()
        before = dict(self.positions)
        records = self.read_batch()
        if self.positions == before:
            return 0
        proj = self.projection
        if not self._cache_complete:
            self._load({key for r in records for key in proj.needed(r) if key not in proj.docs})
        for r in records:
            proj.apply(r)
        self.seq = sum(self.positions.values())
        changed = proj.take_touched(self.seq)
        self._mongo("writing a batch", lambda: self._write(changed))
        self._mongo("writing the checkpoint", self._checkpoint)
        if proj.forget(self.cache):
            self._cache_complete = False
        self.stats.records += len(records)
        self.stats.documents += sum(len(docs) for docs in changed.values())
        self.stats.batches += 1
        self.stats.seconds += time.perf_counter() - t0
        return max(len(records), 1)

    def _load(self, keys: set[tuple[str, str]]) -> None:
        """Cache the existing documents among `keys` (those not found are new)."""
        wanted: dict[str, list[str]] = {}
        for collection, doc_id in keys:
            wanted.setdefault(collection, []).append(doc_id)
        for collection, ids in sorted(wanted.items()):
            for i in range(0, len(ids), 1000):
                chunk = ids[i:i + 1000]
                found = self._mongo("reading documents", lambda c=collection, ids=chunk: list(  # type: ignore[misc]
                    self.db[c].find({"_id": {"$in": ids}})))
                for doc in found:
                    self.projection.docs[(collection, doc["_id"])] = doc

    def _write(self, changed: dict[str, list[Doc]]) -> None:
        """Write the changed documents whole: new ones inserted, the others replaced.

        Every write names its document by `_id` alone, the one filter every MongoDB-protocol
        server answers from its `_id` index. New documents are inserted (cheaper than an upsert,
        which looks first). A document inserted by an attempt whose reply was lost (the server
        went down) is a duplicate key the second time: then the batch's new documents are all
        replaced instead (writing a document again is harmless; the error's statement indices
        are not relied on, FerretDB's are not MongoDB's).
        """
        from pymongo import InsertOne, ReplaceOne
        from pymongo.errors import BulkWriteError

        created = self.projection.created
        for collection, docs in sorted(changed.items()):
            coll = self.db[collection]
            new = [d for d in docs if (collection, d["_id"]) in created]
            old = [d for d in docs if (collection, d["_id"]) not in created]
            if new:
                try:
                    coll.bulk_write([InsertOne(d) for d in new], ordered=False)
                except BulkWriteError as exc:
                    if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                        raise
                    old += new
                created.difference_update((collection, d["_id"]) for d in new)
            if old:
                coll.bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in old], ordered=False)

    def _checkpoint(self) -> None:
        positions = {applied_key(t, p): o for (t, p), o in sorted(self.positions.items())}
        self.db[STATE].replace_one({"_id": CHECKPOINT}, {"_id": CHECKPOINT, "tape": self.tape.uri,
                                                         "topics": list(self.topics), "positions": positions,
                                                         "seq": self.seq}, upsert=True)

    # ------------------------------------------------------------------ the loop
    def run(self, *, follow: bool = False, poll: float = 0.2,
            progress: Callable[[SyncStats], None] | None = None) -> SyncStats:
        """Batches until caught up, or with `follow` until `stop` is set (polling the tape every `poll` s)."""
        while not self.stop.is_set():
            try:
                n = self.step()
            except InterruptedError:
                break
            if n and progress is not None:
                progress(self.stats)
            if n == 0:
                if not follow:
                    break
                self.stop.wait(poll)
        return self.stats


def time_cut(reads: dict[tuple[str, int], list[Record]], batch: int, *, exempt: set[tuple[str, int]]) -> dict[
        tuple[str, int], int]:
    """How many of each partition's records a batch keeps: all of them when every partition is
    exhausted (gave fewer than `batch`), else each one's prefix up to the earliest time at which a
    full partition stops (its records carry `ts_event`), since later records of the other
    partitions may belong with ones that partition has not given yet. When that keeps nothing
    (backtests put runs over the same hours one after another), the first full partition is kept
    whole, so every batch moves on. `exempt` partitions are kept whole (a record that cannot be
    decoded ended their read and has been dead-lettered).
    """
    kept = {key: len(recs) for key, recs in reads.items()}
    full = [key for key, recs in reads.items() if len(recs) >= batch and key not in exempt]
    if not full:
        return kept
    cutoff = min(reads[key][-1].ts_event for key in full)
    for key, recs in reads.items():
        if key in exempt:
            continue
        n = 0
        while n < len(recs) and recs[n].ts_event <= cutoff:
            n += 1
        kept[key] = n
    if not any(kept[key] for key in reads if key not in exempt):
        kept[full[0]] = len(reads[full[0]])
    return kept


# ---------------------------------------------------------------------- readers of the view

def committed_seq(db: Any) -> int:
    """The change sequence of the last complete batch (0 before the first)."""
    state = db[STATE].find_one({"_id": CHECKPOINT}, {"seq": 1})
    return int(state["seq"]) if state else 0


def changes(db: Any, collection: str, after: int) -> tuple[list[Doc], int]:
    """(the documents of `collection` changed by complete batches after change sequence `after`, the
    sequence they bring you to): call again with the second value for the next changes.

    Polls the indexed `_seq` field up to the checkpoint's sequence, so a batch being written is
    not seen until all of it is. A document changed by several batches comes once, as it is now.
    """
    if collection not in COLLECTIONS:
        raise ConfigError(f"no collection {collection!r} in the view (one of {', '.join(COLLECTIONS)})")
    upto = committed_seq(db)
    if upto <= after:
        return [], after
    docs = list(db[collection].find({"_seq": {"$gt": after, "$lte": upto}}, {f: 0 for f in INTERNAL_FIELDS})
                .sort([("_seq", 1), ("_id", 1)]))
    return docs, upto


def watch(db: Any, collection: str, after: int = 0, *, stop: threading.Event | None = None,
          poll: float = 0.5) -> Iterator[Doc]:
    """Documents of `collection` as the sync changes them, from change sequence `after` on, until `stop`.

    Always reads through `changes` (whole batches only). Where the server has change streams (a
    replica set), a stream on the checkpoint wakes the reader as soon as a batch commits;
    elsewhere (FerretDB, a standalone server: opening the stream raises OperationFailure) it polls
    every `poll` seconds. The change-stream path cannot run in this project's tests (FerretDB has
    none): it is exercised only against a real replica set.
    """
    from pymongo.errors import OperationFailure

    stop = stop or threading.Event()
    stream = None
    try:
        stream = db[STATE].watch([{"$match": {"documentKey._id": CHECKPOINT}}], max_await_time_ms=int(poll * 1000))
    except OperationFailure:
        log.debug("no change streams on this server: polling `_seq` every %.1f s", poll)
    try:
        while not stop.is_set():
            docs, after = changes(db, collection, after)
            yield from (public(d) for d in docs)
            if docs:
                continue
            if stream is not None:
                stream.try_next()  # waits up to max_await_time_ms for the next checkpoint
            else:
                stop.wait(poll)
    finally:
        if stream is not None:
            stream.close()
