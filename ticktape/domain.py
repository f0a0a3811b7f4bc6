"""Domain rules that every part of ticktape shares and robots may import: pure, no I/O.

- **Instrument ids.** A Betfair runner is `<market_id>:<selection_id>`, with `:<handicap>` (`%g`)
  when the runner has a handicap; the market stream, the order stream, controls, the analyzer's
  marks and settlement all build and read it here (`betfair_instrument_sql` is the same rule in SQL).
- **The intent digest.** A run's fingerprint (`RunFinished.intents_sha256`): sha256 over the
  single-object encoding of every intent, in order. Backtests, live runs, replays, audits and the
  demo all compute it through `IntentDigest`, so "bit for bit" means one thing.
- **Topic names** live in `ticktape.topics` and are re-exported here.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ticktape.codec import default_codec
from ticktape.topics import CONTROLS_TOPIC, EVENT_TOPIC, INTENT_TOPIC, RUNS_TOPIC

__all__ = ["CONTROLS_TOPIC", "EVENT_TOPIC", "INTENT_TOPIC", "RUNS_TOPIC", "IntentDigest", "betfair_instrument",
           "betfair_instrument_sql", "parse_betfair_instrument"]


def betfair_instrument(market_id: str, selection_id: int, handicap: float = 0.0) -> str:
    """`<market_id>:<selection_id>`, with `:<handicap>` when the runner has one (`1.2:47972:-1.5`)."""
    if handicap:
        return f"{market_id}:{selection_id}:{handicap:g}"
    return f"{market_id}:{selection_id}"


def parse_betfair_instrument(instrument: str) -> tuple[str, int, float]:
    """(market id, selection id, handicap) of a Betfair instrument id; ValueError naming it otherwise."""
    parts = instrument.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"not a Betfair instrument id (market:selection[:handicap]): {instrument!r}")
    try:
        return parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0
    except ValueError:
        raise ValueError(f"not a Betfair instrument id (market:selection[:handicap]): {instrument!r}") from None


def betfair_instrument_sql(market: str, selection: str, handicap: str) -> str:
    """`betfair_instrument` as a DuckDB expression over the given column expressions."""
    return (f"({market} || ':' || {selection} || CASE WHEN coalesce({handicap}, 0) <> 0 "
            f"THEN ':' || printf('%g', {handicap}) ELSE '' END)")


_DEFER_BATCH = 512
"""Intents `IntentDigest.defer` queues before encoding them in one go."""


class IntentDigest:
    """sha256 over the single-object encoding of every intent added, in order (a run's intents_sha256).

    `add` encodes and hashes at once (and returns the bytes); `defer` only queues the intent, which is
    encoded and hashed with the next batch, before anything added later: the digest is the same
    either way. (A backtest's runner defers: it never needs the bytes, and encoding a few hundred
    intents in a row runs with the codec warm, not once per ~30 market events; an intent that cannot
    be encoded then raises at the batch, still before the run's digest is read.)
    """

    __slots__ = ("_encode", "_queued", "_sha", "count")

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._encode = default_codec().encode
        self._queued: list[Any] = []
        self.count = 0

    def add(self, intent: Any) -> bytes:
        """Fold one intent in; returns its encoding (audits compare it with the recorded bytes)."""
        if self._queued:
            self._flush()
        data: bytes = self._encode(intent)
        self._sha.update(data)
        self.count += 1
        return data

    def defer(self, intent: Any) -> None:
        """Fold one intent in later (with the next batch, before anything added after it)."""
        queued = self._queued
        queued.append(intent)
        self.count += 1
        if len(queued) >= _DEFER_BATCH:
            self._flush()

    def _flush(self) -> None:
        encode = self._encode
        update = self._sha.update
        queued = self._queued
        self._queued = []  # an EncodeError leaves the digest short, not double-counting a retry
        for intent in queued:
            update(encode(intent))

    def add_encoded(self, data: bytes) -> None:
        """Fold in an intent already encoded as a single object (as it is stored on the tape)."""
        if self._queued:
            self._flush()
        self._sha.update(data)
        self.count += 1

    def hexdigest(self) -> str:
        """The digest of everything added so far."""
        if self._queued:
            self._flush()
        return self._sha.hexdigest()
