"""Binance's request-weight and order-count limits, kept on our side so a request that would break one
waits for its window to roll instead of earning a 429 (and, repeated, a 418 IP ban).

Binance declares its limits in `exchangeInfo.rateLimits` (REQUEST_WEIGHT and ORDERS, each per
`intervalNum` x SECOND/MINUTE/HOUR/DAY) and reports what is used in every answer's headers
(`X-MBX-USED-WEIGHT-1M`, `X-MBX-ORDER-COUNT-10S`, ...). Windows are fixed and aligned to the
epoch (a 1-minute window resets on the minute), so the limiter needs the wall clock, injected
with `sleep` so tests run it on a virtual clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

INTERVAL_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
HEADER_UNIT = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}

# (weight, orders) per request, as Binance documents them (2024-2025). A request not listed weighs 1.
WEIGHTS: dict[str, dict[str, tuple[int, int]]] = {
    "spot": {
        "place": (1, 1), "cancel": (1, 0), "replace": (1, 1), "query": (4, 0), "trades": (20, 0),
        "open_orders": (80, 0),  # without a symbol
        "account": (20, 0), "exchange_info": (20, 0), "order_count": (40, 0), "all_orders": (20, 0),
    },
    "futures": {
        "place": (0, 1), "cancel": (1, 0), "replace": (1, 1), "query": (1, 0), "trades": (5, 0),
        "open_orders": (40, 0), "account": (5, 0), "exchange_info": (1, 0), "listen_key": (1, 0),
        "all_orders": (5, 0),
    },
}


@dataclass(frozen=True)
class Limit:
    """One declared limit: `kind` REQUEST_WEIGHT or ORDERS, `limit` per `num` x `interval`."""

    kind: str
    interval: str
    num: int
    limit: int

    @property
    def seconds(self) -> int:
        """The window's length."""
        return self.num * INTERVAL_SECONDS[self.interval]

    @property
    def header(self) -> str:
        """The answer header reporting this window's use, lower case (`x-mbx-used-weight-1m`)."""
        stem = "x-mbx-used-weight-" if self.kind == "REQUEST_WEIGHT" else "x-mbx-order-count-"
        return f"{stem}{self.num}{HEADER_UNIT[self.interval]}".lower()


def limits_from_rules(rate_limits: Sequence[Mapping[str, Any]]) -> list[Limit]:
    """The REQUEST_WEIGHT and ORDERS limits of `exchangeInfo.rateLimits` (RAW_REQUESTS are not tracked)."""
    return [Limit(str(r["rateLimitType"]), str(r["interval"]), int(r["intervalNum"]), int(r["limit"]))
            for r in rate_limits if r.get("rateLimitType") in ("REQUEST_WEIGHT", "ORDERS")
            and r.get("interval") in INTERVAL_SECONDS]


class RateLimiter:
    """Counts weight and orders per window; `acquire` sleeps until a request fits, `update` takes the venue's counts.

    Thread-safe (the sender and the stream's listen-key keepalive share it). `clock()` is epoch
    seconds; `margin` is slept past a window's end, for the venue's clock being slightly behind.
    """

    def __init__(self, limits: Sequence[Limit] = (), *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, margin: float = 0.05) -> None:
        self.clock = clock
        self.sleep = sleep
        self.margin = margin
        self._lock = threading.Lock()
        self._used: dict[Limit, tuple[int, int]] = {}  # limit -> (window index, used in it)
        self.limits: list[Limit] = []
        self.waited = 0.0  # seconds slept in total (for the operator, and tests)
        self.set_limits(limits)

    def set_limits(self, limits: Sequence[Limit]) -> None:
        """Track these limits from now on (the rules are fetched after the limiter is made)."""
        with self._lock:
            self.limits = list(limits)

    def _window(self, lim: Limit, now: float) -> int:
        return int(now // lim.seconds)

    def _cost(self, lim: Limit, weight: int, orders: int) -> int:
        return weight if lim.kind == "REQUEST_WEIGHT" else orders

    def wait_needed(self, weight: int, orders: int) -> float:
        """Seconds until a request of this cost fits every window (0: now). Pure read of the counts."""
        now = self.clock()
        wait = 0.0
        for lim in self.limits:
            cost = self._cost(lim, weight, orders)
            if cost == 0:
                continue
            window, used = self._used.get(lim, (-1, 0))
            if window != self._window(lim, now):
                used = 0
            if used + cost > lim.limit:
                wait = max(wait, (self._window(lim, now) + 1) * lim.seconds - now + self.margin)
        return wait

    def acquire(self, weight: int, orders: int = 0) -> None:
        """Sleep until the request fits, then count it (the answer's headers correct the count)."""
        while True:
            with self._lock:
                wait = self.wait_needed(weight, orders)
                if wait <= 0:
                    now = self.clock()
                    for lim in self.limits:
                        window = self._window(lim, now)
                        old_window, used = self._used.get(lim, (-1, 0))
                        self._used[lim] = (window, (used if old_window == window else 0)
                                           + self._cost(lim, weight, orders))
                    return
            self.waited += wait
            self.sleep(wait)

    def seed(self, counts: Sequence[Mapping[str, Any]]) -> None:
        """Start from the venue's own order counts (spot `GET /api/v3/rateLimit/order`: rows of
        rateLimitType, interval, intervalNum, count): a restarted process does not know what the one
        before it sent in the windows still running."""
        with self._lock:
            now = self.clock()
            for row in counts:
                for lim in self.limits:
                    if (lim.kind, lim.interval, lim.num) == (row.get("rateLimitType"), row.get("interval"),
                                                             row.get("intervalNum")) and "count" in row:
                        self._used[lim] = (self._window(lim, now), int(row["count"]))

    def update(self, headers: Mapping[str, str]) -> None:
        """Take the venue's own counts from an answer's headers (case-insensitive names)."""
        lower = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            now = self.clock()
            for lim in self.limits:
                value = lower.get(lim.header)
                if value is None:
                    continue
                try:
                    used = int(value)
                except ValueError:
                    continue
                window = self._window(lim, now)
                old_window, ours = self._used.get(lim, (-1, 0))
                # Requests in flight on other threads are counted in `ours` but maybe not yet in the header.
                self._used[lim] = (window, max(used, ours) if old_window == window else used)
