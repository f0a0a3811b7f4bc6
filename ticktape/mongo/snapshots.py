"""Live runs' snapshots in MongoDB: a `SnapshotStore` (see `robots.live.snapshots`) on pymongo.

One document per snapshot in the collection `snapshots`, with every `RunSnapshot` field under
its own name; `_id` is `<stream>@<journal offset>`, so saving the same snapshot again replaces it.
An index on (stream, journal_offset) finds the latest with a sort and a limit. Writes wait for
the server's journal (`w=1, j=True`): when `save` returns, the snapshot survives a crash of the
server. After each save only the newest `keep` snapshots of the stream are kept.

A snapshot bigger than a document may be (MongoDB's limit, 16 MiB of BSON) is refused before
anything is sent, with `SnapshotTooLargeError` naming the stream and the size: pymongo lets a
document a little over the limit through and FerretDB stores it, while a real MongoDB refuses it,
so the limit is checked here, the same on every server. (Splitting it over several documents
would need a multi-document transaction, which FerretDB lacks, to stay atomic.)

Errors are raised as `SnapshotStoreError` (`SnapshotServerDownError` when the server cannot be
reached) naming the server with its password redacted; what a live run does about them is the
runner's choice (`robots.live.snapshots.SkippingSnapshotStore`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ticktape.errors import TicktapeError
from ticktape.events import RunSnapshot
from ticktape.mongo.client import open_target

__all__ = ["COLLECTION", "MAX_DOCUMENT_BYTES", "MongoSnapshotStore", "SnapshotServerDownError",
           "SnapshotStoreError", "SnapshotTooLargeError", "snapshot_id"]

COLLECTION = "snapshots"
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""MongoDB's `maxBsonObjectSize`: the biggest document (as BSON) a server stores."""

_TEXT_FIELDS = ("stream", "state", "engine")  # the other fields of a RunSnapshot are ints


class SnapshotStoreError(TicktapeError):
    """A snapshot store could not save or load (its server refused the operation, or holds a bad document)."""


class SnapshotTooLargeError(SnapshotStoreError):
    """A snapshot does not fit one MongoDB document (`MAX_DOCUMENT_BYTES`)."""


class SnapshotServerDownError(SnapshotStoreError):
    """The snapshot store's server could not be reached (down, restarting, network): trying later may work."""


def snapshot_id(stream: str, journal_offset: int) -> str:
    """The document id of a stream's snapshot at a journal position (the same snapshot, the same id)."""
    return f"{stream}@{journal_offset}"


class MongoSnapshotStore:
    """Snapshots of live runs in a MongoDB database (a `mongodb://` URI or a pymongo `Database`)."""

    def __init__(self, target: str | Any, *, keep: int = 3, timeout_ms: int = 2_000) -> None:
        """`keep`: snapshots kept per stream. `timeout_ms`: how long an operation waits for a server
        that is down before it raises (a live run waits that long at a snapshot, so keep it short)."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        import bson
        import pymongo
        from pymongo.write_concern import WriteConcern

        self.database, self.where, self._owns_client = open_target(target, timeout_ms=timeout_ms)
        self.keep = keep
        durable = WriteConcern(w=1, j=True)
        self.collection: Any = self.database.get_collection(COLLECTION, write_concern=durable)
        self._encode: Callable[[dict[str, Any]], bytes] = bson.encode
        self._pymongo_error: type[Exception] = pymongo.errors.PyMongoError
        self._down_error: type[Exception] = pymongo.errors.ConnectionFailure  # incl. server selection timeouts
        self._indexed = False

    # ------------------------------------------------------------------ the port
    def save(self, snapshot: RunSnapshot) -> None:
        """Store durably (journaled by the server), then drop the stream's snapshots beyond `keep`."""
        sid = snapshot_id(snapshot.stream, snapshot.journal_offset)
        doc: dict[str, Any] = {"_id": sid, **snapshot._asdict()}
        size = len(self._encode(doc))
        if size > MAX_DOCUMENT_BYTES:
            raise SnapshotTooLargeError(
                f"{self.where}: the snapshot of {snapshot.stream!r} at journal offset {snapshot.journal_offset} is "
                f"{size:,} bytes as BSON, over MongoDB's document limit of {MAX_DOCUMENT_BYTES:,} bytes (16 MiB)")
        try:
            self._ensure_index()
            self.collection.replace_one({"_id": sid}, doc, upsert=True)
        except self._pymongo_error as exc:
            raise self._error(exc)(f"{self.where}: could not save the snapshot of {snapshot.stream!r} at journal "
                                     f"offset {snapshot.journal_offset} ({size:,} bytes): {exc}") from exc
        with contextlib.suppress(self._pymongo_error):  # the snapshot is saved; the next save prunes again
            self._prune(snapshot.stream)

    def latest(self, stream: str) -> RunSnapshot | None:
        """The snapshot of `stream` with the highest journal offset, or None."""
        try:
            self._ensure_index()
            doc = self.collection.find_one({"stream": stream}, sort=[("journal_offset", -1)])
            if doc is None:
                return None
            return self._rebuild(doc)
        except self._pymongo_error as exc:
            raise self._error(exc)(f"{self.where}: could not read the latest snapshot of {stream!r}: {exc}") from exc

    def snapshots(self, stream: str) -> list[RunSnapshot]:
        """Every kept snapshot of `stream`, oldest first (for tools and tests)."""
        try:
            docs = list(self.collection.find({"stream": stream}, sort=[("journal_offset", 1)]))
            return [self._rebuild(d) for d in docs]
        except self._pymongo_error as exc:
            raise self._error(exc)(f"{self.where}: could not read the snapshots of {stream!r}: {exc}") from exc

    def close(self) -> None:
        """Close the client this store opened from a URI (a `Database` passed in stays its owner's)."""
        if self._owns_client:
            self.database.client.close()

    # ------------------------------------------------------------------ internals
    def _error(self, exc: Exception) -> type[SnapshotStoreError]:
        return SnapshotServerDownError if isinstance(exc, self._down_error) else SnapshotStoreError

    def _ensure_index(self) -> None:
        # Created lazily: the server may be down when the store is opened.
        if not self._indexed:
            self.collection.create_index([("stream", 1), ("journal_offset", -1)], name="stream_journal_offset")
            self._indexed = True

    def _prune(self, stream: str) -> None:
        old = [d["_id"] for d in self.collection.find({"stream": stream}, {"_id": 1},
                                                      sort=[("journal_offset", -1)], skip=self.keep)]
        if old:
            self.collection.delete_many({"_id": {"$in": old}})

    def _rebuild(self, doc: dict[str, Any]) -> RunSnapshot:
        values = dict(doc)
        missing = [f for f in RunSnapshot._fields if f not in values]
        bad = [f for f in RunSnapshot._fields if f in values
               and not (type(values[f]) is str if f in _TEXT_FIELDS else _is_int(values[f]))]
        if missing or bad:
            raise SnapshotStoreError(f"{self.where}: snapshot {doc['_id']!r} in {COLLECTION!r} is not a RunSnapshot "
                                     f"(missing {missing}, of the wrong type {bad})")
        # int(): BSON int64 comes back as bson.Int64 (an int subclass); the snapshot holds plain ints
        return RunSnapshot(stream=values["stream"], ts_event=int(values["ts_event"]), ts_recv=int(values["ts_recv"]),
                           journal_offset=int(values["journal_offset"]), seq=int(values["seq"]),
                           outputs=int(values["outputs"]), state=values["state"], engine=values["engine"])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

