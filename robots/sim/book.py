"""A price-level order book in integer units, as the simulated venue sees the recorded market.

Levels map price units (1e-9) to size units (1e-9) exactly as recorded. The simulated orders'
own taker consumption is kept beside them (`taken`) and subtracted from what can be taken,
until the next recorded update of that level clears it (the recorded market never saw the
simulated order, so its next word on the level wins). Queue estimates use the recorded size.
"""

from __future__ import annotations

from collections.abc import Iterable

from robots.positions import to_units
from ticktape.events import PriceSize


class Book:
    """Bids and asks of one instrument: `price_u -> size_u`, plus the time of the last update."""

    __slots__ = ("asks", "bids", "taken", "ts")

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.taken: dict[tuple[str, int], int] = {}
        """(resting side, price_u) -> units taken by simulated orders since the level's last update."""
        self.ts: int | None = None

    def side(self, side: str) -> dict[int, int]:
        """The levels of `side` ("BUY" = bids, "SELL" = asks)."""
        return self.bids if side == "BUY" else self.asks

    def replace(self, bids: Iterable[PriceSize], asks: Iterable[PriceSize], ts: int) -> None:
        """Replace the whole book (a snapshot); zero-size levels are dropped."""
        self.bids = {to_units(lv.price): to_units(lv.size) for lv in bids if lv.size > 0}
        self.asks = {to_units(lv.price): to_units(lv.size) for lv in asks if lv.size > 0}
        self.taken.clear()
        self.ts = ts

    def set_top(self, bid_u: int, bid_size_u: int, ask_u: int, ask_size_u: int, ts: int) -> None:
        """Replace the book with one level per side (a top-of-book quote)."""
        self.bids = {bid_u: bid_size_u} if bid_size_u > 0 else {}
        self.asks = {ask_u: ask_size_u} if ask_size_u > 0 else {}
        self.taken.clear()
        self.ts = ts

    def update(self, side: str, levels: Iterable[PriceSize]) -> list[tuple[int, int, int]]:
        """Apply delta levels on `side` (size 0 removes); returns `(price_u, old_u, new_u)` per level."""
        book = self.bids if side == "BUY" else self.asks
        changes = []
        taken = self.taken
        for lv in levels:
            price = to_units(lv.price)
            old = book.get(price, 0)
            new = to_units(lv.size)
            if new > 0:
                book[price] = new
            else:
                book.pop(price, None)
            if taken:
                taken.pop((side, price), None)
            changes.append((price, old, new))
        return changes

    def best(self, side: str) -> int | None:
        """Best price of `side` in units, or None when the side is empty."""
        levels = self.bids if side == "BUY" else self.asks
        if not levels:
            return None
        return max(levels) if side == "BUY" else min(levels)

    def worst(self, side: str) -> int | None:
        """Deepest visible price of `side` (a depth-limited snapshot knows nothing beyond it)."""
        levels = self.bids if side == "BUY" else self.asks
        if not levels:
            return None
        return min(levels) if side == "BUY" else max(levels)

    def takeable(self, taker_side: str, limit_u: int | None) -> list[tuple[int, int]]:
        """Levels a `taker_side` order may take, best first, within `limit_u` (None = any price),
        net of what simulated orders already took."""
        resting = "SELL" if taker_side == "BUY" else "BUY"
        if taker_side == "BUY":
            levels = sorted(self.asks.items())
            levels = [lv for lv in levels if limit_u is None or lv[0] <= limit_u]
        else:
            levels = sorted(self.bids.items(), reverse=True)
            levels = [lv for lv in levels if limit_u is None or lv[0] >= limit_u]
        taken = self.taken
        if not taken:
            return levels
        out = []
        for price, size in levels:
            left = size - taken.get((resting, price), 0)
            if left > 0:
                out.append((price, left))
        return out

    def consume(self, taker_side: str, price_u: int, size_u: int) -> None:
        """Record `size_u` taken by a simulated `taker_side` order at `price_u`."""
        key = ("SELL" if taker_side == "BUY" else "BUY", price_u)
        self.taken[key] = self.taken.get(key, 0) + size_u

    def displayed(self, side: str, price_u: int) -> int:
        """Displayed size at `price_u` on `side` (0 when the level is absent)."""
        return (self.bids if side == "BUY" else self.asks).get(price_u, 0)
