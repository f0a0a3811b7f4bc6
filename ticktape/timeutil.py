"""Time as data: integer nanoseconds since the Unix epoch, UTC.

Only edges (a producer stamping `ts_recv`) read the wall clock, through `Clock`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

NS = 1_000_000_000


def parse_time(text: str) -> int:
    """ISO 8601 (naive means UTC; 'Z' accepted) or an integer of ns -> ns since the epoch."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or integer ns: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def format_time(ns: int | None) -> str:
    """ns since the epoch -> ISO 8601 UTC with nanoseconds ('' for None)."""
    if ns is None:
        return ""
    seconds, rest = divmod(ns, NS)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{rest:09d}Z"


class Clock(Protocol):
    """Anything that tells the time in ns. Core code takes one instead of reading the OS."""

    def now(self) -> int: ...


class WallClock:
    """The real clock, for edges only (stamping `ts_recv`)."""

    def now(self) -> int:
        return time.time_ns()


class VirtualClock:
    """Event time: set from the stream, refuses to go backwards."""

    def __init__(self, start: int = 0) -> None:
        self._now = start

    def now(self) -> int:
        return self._now

    def advance(self, ts: int) -> None:
        """Move to `ts`; a `ts` in the past raises ValueError (time never goes backwards)."""
        if ts < self._now:
            raise ValueError(f"virtual clock cannot go backwards: {ts} < {self._now}")
        self._now = ts
