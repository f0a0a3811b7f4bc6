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


class IntentDigest:
    """sha256 over the single-object encoding of every intent added, in order (a run's intents_sha256)."""

    __slots__ = ("_encode", "_sha", "count")

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._encode = default_codec().encode
        self.count = 0

    def add(self, intent: Any) -> bytes:
        """Fold one intent in; returns its encoding (audits compare it with the recorded bytes)."""
        data: bytes = self._encode(intent)
        self._sha.update(data)
        self.count += 1
        return data

    def add_encoded(self, data: bytes) -> None:
        """Fold in an intent already encoded as a single object (as it is stored on the tape)."""
        self._sha.update(data)
        self.count += 1

    def hexdigest(self) -> str:
        """The digest of everything added so far."""
        return self._sha.hexdigest()
