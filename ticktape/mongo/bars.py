"""The bar API's MongoDB backend: collection `bars`, one document per bar.

A document holds every `Bar` field under the Bar's own names (`venue`, `instrument`,
`interval`, `ts_event` = the close in int ns, `ts_recv`, `open`..`volume`, and Bar v2's
`quote_volume`, `trades`, `taker_buy_base_volume`, `taker_buy_quote_volume` where known) plus
MongoDB's `_id`. The unique index `bar_key` on (venue, instrument, interval, ts_event) says what one bar
is. `venue` is part of it because bars live per venue on the tape (`md.<venue>.bar`): BTCUSDT
on `binance` and BTCUSDT on `sim` are two bars, as they are two events on two topics.

Writes are idempotent and never overwrite: a bar already stored with the same OHLCV is
counted as present; one stored with a different OHLCV is a conflict (`BarConflictError`,
naming the bar and both values), because a backtest read from the store must not change
under a reader's feet. `ts_recv` is not compared (the same bar captured twice has two), the
first writer's is kept. To correct a stored bar, delete its document first.

Documents written by other tools are read strictly (`bar_from_document`): a missing or
non-numeric field, a `ts_event` that is not an integer, high below low, ... raise
`BadBarDocument` naming the document's `_id` and the field. Only `ts_recv` (it is then the
close, as for bars from a DataFrame) and the v2 fields (then null) may be missing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ticktape.bars import BarSelection, bar_problem
from ticktape.errors import TicktapeError, ValidationError
from ticktape.events import Bar
from ticktape.mongo.client import open_target
from ticktape.timeutil import format_time

if TYPE_CHECKING:
    from pymongo.collection import Collection
    from pymongo.database import Database

__all__ = ["COLLECTION", "DEFAULT_BATCH", "INDEX_NAME", "KEY_FIELDS", "BadBarDocument", "BarConflict",
           "BarConflictError", "BarSelection", "BarStoreError", "MongoBars", "WriteCounts", "bar_document",
           "bar_from_document"]

COLLECTION = "bars"
INDEX_NAME = "bar_key"
KEY_FIELDS = ("venue", "instrument", "interval", "ts_event")
"""What one bar is: the fields of the unique index, in its order (also the read order)."""
VALUE_FIELDS = ("open", "high", "low", "close", "volume")
OPTIONAL_FIELDS = ("quote_volume", "trades", "taker_buy_base_volume", "taker_buy_quote_volume")
"""Bar v2's fields (Binance klines): read back when a document has them, null otherwise."""
DEFAULT_BATCH = 10_000
DEFAULT_TIMEOUT_MS = 10_000

BarKey = tuple[str, str, str, int]


class BarStoreError(TicktapeError):
    """The MongoDB server could not be reached or refused an operation; the message names it (no password)."""


class BadBarDocument(ValidationError):
    """A stored document that is not a valid bar; `doc_id` is its `_id`, `field` the offending field."""

    def __init__(self, doc_id: object, field: str, message: str) -> None:
        self.doc_id = doc_id
        super().__init__(message, where=f"_id {doc_id}", field=field)


class BarConflictError(ValidationError):
    """Bars already stored with other values (the first is named); nothing was overwritten."""

    def __init__(self, conflicts: Sequence[BarConflict], where: str, written: int = 0) -> None:
        self.conflicts = list(conflicts)
        more = f" (and {len(conflicts) - 1} more bars)" if len(conflicts) > 1 else ""
        done = (f"; the {written} other new bars were written" if written
                else "; nothing was written")
        super().__init__(f"{conflicts[0].describe()}{more}: bars are never overwritten, delete the stored "
                         f"documents first to replace them{done}", where=where, field="bar")


def bar_document(bar: Bar) -> dict[str, Any]:
    """The document of a bar: every Bar field under its own name."""
    return bar._asdict()


def _int_field(doc: Mapping[str, Any], name: str, doc_id: object) -> int:
    value = doc.get(name)
    # bool is an int to Python but not a time; bson's Int64 is an int subclass and fine.
    if not isinstance(value, int) or isinstance(value, bool):
        what = "missing" if value is None else f"{value!r} ({type(value).__name__}), not an integer of ns"
        raise BadBarDocument(doc_id, name, f"{name} is {what}")
    return int(value)


def bar_from_document(doc: Mapping[str, Any]) -> Bar:
    """The `Bar` a document holds; `BadBarDocument` (naming `_id` and the field) when it holds none."""
    doc_id = doc.get("_id")
    text: dict[str, str] = {}
    for name in ("venue", "instrument", "interval"):
        value = doc.get(name)
        if not isinstance(value, str) or not value:
            what = "missing" if value is None else f"{value!r}, not a non-empty string"
            raise BadBarDocument(doc_id, name, f"{name} is {what}")
        text[name] = value
    ts_event = _int_field(doc, "ts_event", doc_id)
    ts_recv = _int_field(doc, "ts_recv", doc_id) if doc.get("ts_recv") is not None else ts_event
    values: dict[str, float] = {}
    for name in VALUE_FIELDS:
        value = doc.get(name)
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not math.isfinite(value)):
            what = "missing" if value is None else f"{value!r}, not a finite number"
            raise BadBarDocument(doc_id, name, f"{name} is {what}")
        values[name] = float(value)
    problem = bar_problem(values["open"], values["high"], values["low"], values["close"], values["volume"])
    if problem is not None:
        raise BadBarDocument(doc_id, problem[0], problem[1])
    extra: dict[str, Any] = {}
    for name in OPTIONAL_FIELDS:
        value = doc.get(name)
        if value is None:
            continue
        if name == "trades":
            extra[name] = _int_field(doc, name, doc_id)
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            extra[name] = float(value)
        else:
            raise BadBarDocument(doc_id, name, f"{name} is {value!r}, not a finite number")
    return Bar(venue=text["venue"], instrument=text["instrument"], ts_event=ts_event, ts_recv=ts_recv,
               interval=text["interval"], open=values["open"], high=values["high"], low=values["low"],
               close=values["close"], volume=values["volume"], **extra)


def _key(bar: Bar) -> BarKey:
    return (bar.venue, bar.instrument, bar.interval, bar.ts_event)


def _same_values(bar: Bar, stored: Mapping[str, Any] | Bar) -> bool:
    get = stored.get if isinstance(stored, Mapping) else lambda n: getattr(stored, n)
    return all(get(n) == getattr(bar, n) for n in VALUE_FIELDS)


@dataclass(frozen=True)
class BarConflict:
    """A bar whose (venue, instrument, interval, ts_event) is already stored with other values."""

    bar: Bar
    stored: Mapping[str, Any]

    def describe(self) -> str:
        b = self.bar
        given = ", ".join(f"{n}={getattr(b, n)}" for n in VALUE_FIELDS)
        held = ", ".join(f"{n}={self.stored.get(n)!r}" for n in VALUE_FIELDS)
        return (f"bar {b.venue} {b.instrument} {b.interval} closing {format_time(b.ts_event)} ({b.ts_event}) "
                f"is stored with {held}, not {given}")


@dataclass
class WriteCounts:
    """What a write did: bars inserted, bars already stored as given, conflicts (not written)."""

    inserted: int = 0
    present: int = 0
    conflicts: list[BarConflict] = field(default_factory=list)

    def add(self, other: WriteCounts) -> None:
        """Accumulate another batch's counts."""
        self.inserted += other.inserted
        self.present += other.present
        self.conflicts += other.conflicts


class MongoBars:
    """The `bars` collection of one database: write bars idempotently, read them back.

    Opened from a `mongodb://host:port/db` URI (its client is closed by `close()`; a URI's
    `serverSelectionTimeoutMS` bounds the wait for a server that is down, 10 s by default) or
    from a pymongo `Database` (which stays its owner's). Every server error becomes a
    `BarStoreError` naming the server with its password redacted.
    """

    def __init__(self, target: str | Database[Any], *, timeout_ms: int | None = None) -> None:
        db, self.where, self._own = open_target(target, timeout_ms=timeout_ms or DEFAULT_TIMEOUT_MS)
        self.db: Database[Any] = db
        self.collection: Collection[Any] = self.db[COLLECTION]
        self._indexed = False

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """pymongo's errors as `BarStoreError` naming the server (pymongo's own text names only host:port)."""
        from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

        try:
            yield
        except ServerSelectionTimeoutError as exc:
            reason = str(exc).split(", Timeout:")[0]  # the rest is pymongo's topology dump
            raise BarStoreError(f"MongoDB {self.where} unreachable while {doing}: {reason}") from exc
        except PyMongoError as exc:
            raise BarStoreError(f"MongoDB {self.where} failed while {doing}: {exc}") from exc

    def ensure_index(self) -> None:
        """Create the unique index `bar_key` (once per handle; a no-op when it exists)."""
        if self._indexed:
            return
        with self._errors("creating the bars index"):
            self.collection.create_index([(n, 1) for n in KEY_FIELDS], unique=True, name=INDEX_NAME)
        self._indexed = True

    def _stored(self, bars: Iterable[Bar]) -> dict[BarKey, dict[str, Any]]:
        """The stored documents with the keys of `bars`, by key (one query per series and 10k times)."""
        series: dict[tuple[str, str, str], list[int]] = {}
        for b in bars:
            series.setdefault((b.venue, b.instrument, b.interval), []).append(b.ts_event)
        out: dict[BarKey, dict[str, Any]] = {}
        with self._errors("reading stored bars"):
            for (venue, instrument, interval), times in series.items():
                for i in range(0, len(times), DEFAULT_BATCH):
                    q = {"venue": venue, "instrument": instrument, "interval": interval,
                         "ts_event": {"$in": times[i:i + DEFAULT_BATCH]}}
                    for doc in self.collection.find(q):
                        out[(venue, instrument, interval, doc["ts_event"])] = doc
        return out

    def _classify(self, bars: Iterable[Bar], counts: WriteCounts) -> list[Bar]:
        """Count the bars already stored (same values: present; others: conflicts); return the new ones."""
        bars = list(bars)
        stored = self._stored(bars)
        new: list[Bar] = []
        for b in bars:
            doc = stored.get(_key(b))
            if doc is None:
                new.append(b)
            elif _same_values(b, doc):
                counts.present += 1
            else:
                counts.conflicts.append(BarConflict(b, doc))
        return new

    def write(self, bars: Iterable[Bar], *, refuse_conflicts: bool = True) -> WriteCounts:
        """Store bars not stored yet, in one unordered bulk write of upserts.

        Bars already stored as given are counted as present. With `refuse_conflicts`, a bar
        stored with other values raises `BarConflictError` before anything is written;
        without it, conflicts are counted and skipped (the stored bar is kept).
        Equal keys within `bars` count once (the first; a differing repeat is a conflict).
        """
        self.ensure_index()
        counts = WriteCounts()
        unique: dict[BarKey, Bar] = {}
        for b in bars:
            first = unique.setdefault(_key(b), b)
            if first is not b:
                if _same_values(b, first):
                    counts.present += 1
                else:
                    counts.conflicts.append(BarConflict(b, bar_document(first)))
        new = self._classify(unique.values(), counts)
        if counts.conflicts and refuse_conflicts:
            raise BarConflictError(counts.conflicts, self.where)
        if not new:
            return counts
        from pymongo import UpdateOne

        # Upsert on the key alone with $setOnInsert: an existing document is never modified, and
        # no duplicate-key error can arise (FerretDB answers those without the counts pymongo needs).
        ops = [UpdateOne({n: getattr(b, n) for n in KEY_FIELDS},
                         {"$setOnInsert": {n: v for n, v in bar_document(b).items() if n not in KEY_FIELDS}},
                         upsert=True) for b in new]
        with self._errors(f"writing {len(ops)} bars"):
            result = self.collection.bulk_write(ops, ordered=False)
        upserted = result.upserted_ids or {}
        counts.inserted += len(upserted)
        # A bar not upserted was stored by another writer between our read and our write:
        # compare it like any stored bar.
        raced = [b for i, b in enumerate(new) if i not in upserted]
        before = len(counts.conflicts)
        self._classify(raced, counts)  # one deleted again meanwhile is simply not counted
        if refuse_conflicts and len(counts.conflicts) > before:
            raise BarConflictError(counts.conflicts, self.where, written=counts.inserted)
        return counts

    def write_all(self, bars: Iterable[Bar], *, batch_size: int = DEFAULT_BATCH,
                  refuse_conflicts: bool = False) -> WriteCounts:
        """`write` in batches of `batch_size` (flat memory for a whole tape); conflicts are counted.

        The index is created first, so a server that is down fails before the input is read.
        """
        self.ensure_index()
        total = WriteCounts()
        batch: list[Bar] = []
        for bar in bars:
            batch.append(bar)
            if len(batch) >= batch_size:
                total.add(self.write(batch, refuse_conflicts=refuse_conflicts))
                batch = []
        if batch:
            total.add(self.write(batch, refuse_conflicts=refuse_conflicts))
        return total

    def documents(self, selection: BarSelection, *, batch_size: int = DEFAULT_BATCH,
                  projection: Mapping[str, Any] | None = None, raw: bool = False) -> Iterator[Any]:
        """The selected documents in key order, fetched `batch_size` at a time (flat memory).

        `raw`: as `bson.RawBSONDocument` (the bytes as stored, e.g. to hash them).
        """
        coll = self.collection
        if raw:
            from bson.codec_options import CodecOptions
            from bson.raw_bson import RawBSONDocument

            coll = coll.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
        with self._errors(f"reading bars ({selection.describe()})"):
            cursor = coll.find(selection.query(), projection, sort=[(n, 1) for n in KEY_FIELDS],
                               batch_size=batch_size)
            try:
                yield from cursor
            finally:
                cursor.close()

    def content_identity(self, selection: BarSelection) -> str:
        """sha256 of the selected documents' bytes in key order, `_id` left out.

        The same bars give the same identity wherever they are stored (another database,
        re-created documents); any changed, added or removed document changes it.
        """
        h = hashlib.sha256()
        n = 0
        for doc in self.documents(selection, projection={"_id": 0}, raw=True):
            h.update(doc.raw)
            n += 1
        h.update(n.to_bytes(8, "little"))
        return "sha256:" + h.hexdigest()

    def load(self, selection: BarSelection) -> list[Bar]:
        """The selected bars in key order; a bad document raises `BadBarDocument` naming its `_id`."""
        return [bar_from_document(doc) for doc in self.documents(selection)]

    def close(self) -> None:
        """Close the client if this handle opened it."""
        if self._own:
            self.db.client.close()

    def __enter__(self) -> MongoBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
