"""Order-book continuity for Binance diff-depth streams: a pure state machine, and a local book.

Binance's documented procedure: buffer `depthUpdate`s, fetch a REST snapshot, drop updates
with `u <= lastUpdateId`, the first applied one must straddle `lastUpdateId + 1`
(`U <= lastUpdateId + 1 <= u`), then every update must continue the previous one (spot:
`U == previous u + 1`; USD-M futures: `pu == previous u`).

The recorder appends every delta it receives (nothing is dropped) plus each snapshot it
fetches; `BookSync` only decides when a snapshot is needed and records each loss of
continuity as a `FeedGap` (once `repaired=False` when detected, once `repaired=True` when a
snapshot restored the book). A consumer rebuilds the book from the tape with `OrderBook`:
apply a snapshot, then the deltas that follow it by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from producers.binance.parsers import VENUE
from ticktape.events import BookDelta, BookSnapshot, FeedGap, PriceSize

MAX_BUFFER = 10_000
"""Update-id pairs kept while waiting for a snapshot (ids only, the deltas are on the tape already)."""


@dataclass
class SyncStep:
    """What the recorder must do after one input: append `events`, fetch a snapshot if asked."""

    events: list[FeedGap] = field(default_factory=list)
    need_snapshot: bool = False
    synced: bool = False


class BookSync:
    """Continuity of one symbol's diff-depth stream. Pure: times come from the inputs.

    States: waiting for a snapshot (initially, after a gap, after a reconnect) or synced.
    """

    def __init__(self, symbol: str, *, futures: bool = False, stream: str = "depth") -> None:
        self.symbol = symbol
        self.futures = futures
        self.stream = stream
        self.last_id: int | None = None  # last applied update id while synced
        self._buffer: list[tuple[int, int]] = []  # (U, u) of deltas seen while waiting
        self._had_gap = False  # ...because continuity was lost (not just at start)
        self._snapshot_requested = False
        self._fresh = False  # synced from a snapshot, no delta applied since

    @property
    def synced(self) -> bool:
        return self.last_id is not None

    def _gap(self, ts: int, ts_recv: int, reason: str, expected: int | None, received: int | None,
             pending: tuple[int, int] | None = None) -> SyncStep:
        self.last_id = None
        # The delta that revealed the gap is on the tape; the next snapshot must reach it.
        self._buffer = [pending] if pending else []
        self._had_gap = True
        self._snapshot_requested = True
        gap = FeedGap(VENUE, self.symbol, ts, ts_recv, self.stream, reason, expected, received, False)
        return SyncStep([gap], need_snapshot=True)

    def on_delta(self, delta: BookDelta, prev_final_id: int | None = None) -> SyncStep:
        """One `depthUpdate` (with futures' `pu` as `prev_final_id`)."""
        first, last = delta.first_update_id, delta.last_update_id
        if self.last_id is None:
            if self._buffer and not self._continues(self._buffer[-1][1], first, prev_final_id):
                # Lost continuity before the snapshot came: the buffer cannot bridge it.
                self._buffer.clear()
            self._buffer.append((first, last))
            if len(self._buffer) > MAX_BUFFER:
                del self._buffer[: len(self._buffer) - MAX_BUFFER]
            ask = not self._snapshot_requested
            self._snapshot_requested = True
            return SyncStep(need_snapshot=ask)
        if last <= self.last_id:
            return SyncStep(synced=True)  # a repeat of what was applied (reconnect overlap)
        if not self._continues(self.last_id, first, None if self._fresh else prev_final_id):
            return self._gap(delta.ts_event, delta.ts_recv, "depth update ids not continuous",
                             self.last_id + 1, first if prev_final_id is None else prev_final_id + 1, (first, last))
        self.last_id = last
        self._fresh = False
        return SyncStep(synced=True)

    def _continues(self, previous_last: int, first: int, prev_final_id: int | None) -> bool:
        if self.futures and prev_final_id is not None:
            return prev_final_id == previous_last
        return first <= previous_last + 1

    def on_snapshot(self, snap: BookSnapshot) -> SyncStep:
        """A REST snapshot arrived: sync from it, or ask for a newer one if it is too old."""
        sid = snap.last_update_id
        self._snapshot_requested = False
        later = [(a, b) for a, b in self._buffer if b > sid]
        if self._buffer and self._buffer[0][0] > sid + 1:
            # The stream's first buffered update is already past the snapshot: fetch again.
            self._snapshot_requested = True
            return SyncStep(need_snapshot=True)
        if later and not (later[0][0] <= sid + 1 <= later[0][1]):
            self._snapshot_requested = True
            return SyncStep(need_snapshot=True)
        self.last_id = later[-1][1] if later else sid
        self._fresh = not later
        self._buffer.clear()
        events: list[FeedGap] = []
        if self._had_gap:
            events.append(FeedGap(VENUE, self.symbol, snap.ts_event, snap.ts_recv, self.stream,
                                  "resynced from REST snapshot", None, sid, True))
        self._had_gap = False
        return SyncStep(events, synced=True)

    def snapshot_failed(self) -> None:
        """The snapshot request failed: ask again at the next delta."""
        self._snapshot_requested = False

    def on_disconnect(self, ts: int, ts_recv: int, reason: str = "connection lost") -> SyncStep:
        """The socket dropped: whatever was sent meanwhile is lost until a new snapshot."""
        expected = None if self.last_id is None else self.last_id + 1
        return self._gap(ts, ts_recv, reason, expected, None)


class OrderBook:
    """A local book rebuilt from the tape: snapshot, then deltas by Binance's rules."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.last_id: int | None = None

    def apply_snapshot(self, snap: BookSnapshot) -> None:
        self.bids = {lv.price: lv.size for lv in snap.bids if lv.size > 0}
        self.asks = {lv.price: lv.size for lv in snap.asks if lv.size > 0}
        self.last_id = snap.last_update_id

    def apply_delta(self, delta: BookDelta) -> bool:
        """Apply one delta; False when it is stale (already in the book) or the book has no snapshot.

        Raises ValueError on a gap (the caller should wait for the next snapshot).
        """
        if self.last_id is None or delta.last_update_id <= self.last_id:
            return False
        if delta.first_update_id > self.last_id + 1:
            raise ValueError(f"{self.symbol}: gap in depth updates, expected {self.last_id + 1}, "
                             f"got {delta.first_update_id}")
        for side, levels in ((self.bids, delta.bids), (self.asks, delta.asks)):
            for lv in levels:
                if lv.size == 0:
                    side.pop(lv.price, None)
                else:
                    side[lv.price] = lv.size
        self.last_id = delta.last_update_id
        return True

    @classmethod
    def rebuilt(cls, symbol: str, events: Iterable[object]) -> OrderBook:
        """The book a consumer rebuilds from a tape's book topic: each snapshot, then the deltas
        that continue it; after a gap, nothing applies until the next snapshot (as recorded)."""
        book = cls(symbol)
        for event in events:
            if isinstance(event, BookSnapshot) and event.instrument == symbol:
                book.apply_snapshot(event)
            elif isinstance(event, BookDelta) and event.instrument == symbol:
                try:
                    book.apply_delta(event)
                except ValueError:
                    book.last_id = None  # wait for the next snapshot
        return book

    def best(self, depth: int = 1) -> tuple[list[PriceSize], list[PriceSize]]:
        """Best `depth` bids (highest first) and asks (lowest first)."""
        bids = [PriceSize(p, self.bids[p]) for p in sorted(self.bids, reverse=True)[:depth]]
        asks = [PriceSize(p, self.asks[p]) for p in sorted(self.asks)[:depth]]
        return bids, asks
