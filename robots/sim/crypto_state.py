"""The crypto venue's state per instrument: the recorded book and quote, the last trade, and the
simulated orders resting on them (see `robots.sim.crypto` for the matching rules)."""

from __future__ import annotations

from dataclasses import dataclass

from robots.sim.book import Book
from ticktape.events import Trade


@dataclass(slots=True, eq=False)
class SimOrder:
    """A live simulated order (resting limit or untriggered stop)."""

    robot: str
    client_order_id: str
    venue: str
    instrument: str
    venue_order_id: str
    side: str
    order_type: str
    tif: str
    price_u: int
    size_u: int
    leaves_u: int
    arrival_ts: int
    priority: int = 0
    queue_u: int | None = None
    """Displayed size ahead at the order's level (units); None = unknown (treated as infinite)."""
    n_fills: int = 0


class MarketState:
    """Everything the venue knows about one instrument."""

    __slots__ = ("at", "book", "last_trade", "last_trade_taken", "quote", "resting", "stops", "traded_at")

    def __init__(self) -> None:
        self.book = Book()
        self.quote = Book()
        self.last_trade: Trade | None = None
        self.last_trade_taken = 0
        """Units of the last trade's size already taken by simulated market orders (fallback only)."""
        self.resting: list[SimOrder] = []
        self.at: dict[tuple[str, int], list[SimOrder]] = {}
        """Resting orders by (side, price_u): level updates touch only their own orders."""
        self.stops: list[SimOrder] = []
        self.traded_at: dict[int, int] = {}

    def rest(self, o: SimOrder) -> None:
        """Add a resting limit order."""
        self.resting.append(o)
        self.at.setdefault((o.side, o.price_u), []).append(o)

    def unrest(self, o: SimOrder) -> None:
        """Remove a resting limit order (before its price changes)."""
        self.resting.remove(o)
        key = (o.side, o.price_u)
        level = self.at[key]
        level.remove(o)
        if not level:
            del self.at[key]

    def source(self) -> Book | None:
        """The displayed liquidity to take from: the most recent of depth book and quote."""
        book, quote = self.book, self.quote
        if book.ts is not None and (quote.ts is None or book.ts >= quote.ts):
            return book
        return quote if quote.ts is not None else None

    def displayed(self, side: str, price_u: int) -> int | None:
        """Displayed size at a resting price, or None when the level is not visible."""
        levels = self.book.side(side)
        if self.book.ts is not None and levels:
            worst = min(levels) if side == "BUY" else max(levels)
            if (price_u >= worst) if side == "BUY" else (price_u <= worst):
                return levels.get(price_u, 0)
        quote_levels = self.quote.side(side)
        if self.quote.ts is not None and quote_levels:
            (top, size), = quote_levels.items()
            if price_u == top:
                return size
            if (price_u > top) if side == "BUY" else (price_u < top):
                return 0  # better than the best: a new level, nobody ahead
        return None
