"""Bar rules every layer shares: where a venue's bars live on the tape, how long an interval is,
which OHLCV values can be a bar, which bars a query selects.

Producers write bars with them, the MongoDB bars store (`ticktape.mongo.bars`) reads and writes
with them; one definition, so the two cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ticktape.events import Bar
from ticktape.timeutil import format_time

__all__ = ["BAR_TOPIC_RE", "BarSelection", "bar_problem", "bar_topic", "interval_ns"]

BAR_TOPIC_RE = re.compile(r"md\.([A-Za-z0-9_-]+)\.bar")
"""A bar topic; group 1 is the venue."""

_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}


def bar_topic(venue: str) -> str:
    """Where bars of a venue live: `md.<venue>.bar` (Binance's own bars use `md.binance.bar` too)."""
    return f"md.{venue}.bar"


def interval_ns(interval: str) -> int | None:
    """`1m` -> 60e9, `4h`, `1d`, `1w`...; None for calendar intervals (`1mo`) or unknown text."""
    m = re.fullmatch(r"(\d+)([smhdw])", interval.strip())
    return int(m.group(1)) * _UNIT_NS[m.group(2)] if m else None


def bar_problem(open_: float, high: float, low: float, close: float, volume: float) -> tuple[str, str] | None:
    """(field, why) when OHLCV values cannot be a bar, else None.

    The rules `producers.frames` applies to DataFrame rows, column-wise there for speed (high >= low,
    open and close > 0, volume >= 0); here one bar at a time, for documents read from MongoDB."""
    if high < low:
        return "high", f"high {high} below low {low}"
    for name, value in (("open", open_), ("close", close)):
        if value <= 0:
            return name, f"{name} {value} must be > 0"
    if volume < 0:
        return "volume", f"volume {volume} must be >= 0"
    return None


@dataclass(frozen=True, kw_only=True)
class BarSelection:
    """Which bars: each given field must match; `start <= ts_event < end` (ns).

    One rule for every backend: tape readers filter events with `matches`, MongoDB gets `query()`.
    """

    venue: str | None = None
    instrument: str | None = None
    interval: str | None = None
    start: int | None = None
    end: int | None = None

    def matches(self, bar: Bar) -> bool:
        """Whether `bar` is selected."""
        return ((self.venue is None or bar.venue == self.venue)
                and (self.instrument is None or bar.instrument == self.instrument)
                and (self.interval is None or bar.interval == self.interval)
                and (self.start is None or bar.ts_event >= self.start)
                and (self.end is None or bar.ts_event < self.end))

    def query(self) -> dict[str, Any]:
        """The MongoDB filter selecting the same bars (documents hold the Bar's fields by name)."""
        q: dict[str, Any] = {name: value for name in ("venue", "instrument", "interval")
                             if (value := getattr(self, name)) is not None}
        ts: dict[str, int] = {}
        if self.start is not None:
            ts["$gte"] = self.start
        if self.end is not None:
            ts["$lt"] = self.end
        if ts:
            q["ts_event"] = ts
        return q

    def topics(self, existing: list[str]) -> list[str]:
        """The bar topics to read: the venue's, or every `md.<venue>.bar` among `existing`."""
        if self.venue is not None:
            return [bar_topic(self.venue)]
        return sorted(t for t in existing if BAR_TOPIC_RE.fullmatch(t))

    def describe(self) -> str:
        """`venue=sim instrument=BTCUSDT start=...`, or `all bars`."""
        parts = [f"{n}={v}" for n in ("venue", "instrument", "interval") if (v := getattr(self, n)) is not None]
        parts += [f"{n}={format_time(v)}" for n in ("start", "end") if (v := getattr(self, n)) is not None]
        return " ".join(parts) or "all bars"
