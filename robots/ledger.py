"""A run's money: positions, PnL, fees and max drawdown, in exact fixed point.

The arithmetic is `robots.positions` (integers: quantities and prices in 1e-9 units, money in
1e-18 units; Decimal only at report time). This module adds what a run needs on top: an equity
curve kept current incrementally (a mark moves equity by quantity x price change, O(1) per
event) so the max drawdown is sampled on every market event while a position is open.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Protocol

from robots.positions import SCALE, DrawdownTracker, money_to_decimal, to_units
from robots.positions import Ledger as Book
from ticktape.events import Bar, Event, OrderFilled, Quote, Trade


class LedgerLike(Protocol):
    """What the runner needs from a ledger (a venue may bring its own, e.g. Betfair's)."""

    open: bool

    def on_fill(self, fill: OrderFilled) -> None: ...

    def on_event(self, event: Event) -> None: ...

    def on_market(self, event: Event) -> None: ...

    def summary(self) -> dict[str, Any]: ...

    def positions(self) -> list[dict[str, Any]]: ...


def exact(value: int | Fraction) -> str:
    """Money units (1e-18) as a plain decimal string without trailing zeros ("-20.2", "0")."""
    d = money_to_decimal(value)
    text = format(d.normalize(), "f") if d else "0"
    return text


class Ledger:
    """Linear instruments (spot, perpetuals; money in the quote asset): cash + quantity x mark - fees."""

    def __init__(self) -> None:
        self.book = Book()
        self.open = False
        self.fills = 0
        self.equity = 0  # money units (1e-18): PnL net of fees at the current marks
        self.drawdown = DrawdownTracker()
        self.drawdown.update(0)
        self._net: dict[str, int] = {}  # net quantity (units) per instrument over all accounts
        self._mark: dict[str, int] = {}  # last mark (units) per traded instrument

    def on_event(self, event: Event) -> None:
        """Any venue answer; only fills move money."""
        if type(event) is OrderFilled:
            self.on_fill(event)

    def on_fill(self, fill: OrderFilled) -> None:
        """Book a fill and recompute equity exactly (fills are rare next to market events)."""
        self._sync_marks()
        self.book.apply_fill(fill)
        inst = fill.instrument
        size = to_units(fill.size)
        self._net[inst] = self._net.get(inst, 0) + (size if fill.side == "BUY" else -size)
        self._mark[inst] = to_units(fill.price)
        self.fills += 1
        self.open = any(self._net.values())
        self.equity = self.book.equity()
        self.drawdown.update(self.equity)

    def mark(self, instrument: str, price: float) -> None:
        """Revalue an open position at a new market price."""
        q = self._net.get(instrument)
        if not q:
            return
        p = to_units(price)
        old = self._mark[instrument]
        if p != old:
            self.equity += q * (p - old)
            self._mark[instrument] = p
            self.drawdown.update(self.equity)

    def on_market(self, event: Event) -> None:
        """Mark from a Trade price, a Quote mid or a Bar close (the runner calls it while a position is open)."""
        t = type(event)
        if t is Trade:
            self.mark(event.instrument, event.price)  # type: ignore[union-attr]
        elif t is Quote:
            self.mark(event.instrument, (event.bid_price + event.ask_price) / 2)  # type: ignore[union-attr]
        elif t is Bar:
            self.mark(event.instrument, event.close)  # type: ignore[union-attr]

    def _sync_marks(self) -> None:
        for inst, p in self._mark.items():
            if self.book.mark_price(inst) != p:
                self.book.mark(inst, p)

    def summary(self) -> dict[str, Any]:
        """PnL (net of fees), fees, realized/unrealized, max drawdown: exact decimals (and floats)."""
        self._sync_marks()
        book = self.book
        unrealized = sum((p.unrealized() for _, p in book.items()), Fraction(0))
        pnl = book.equity()
        fees = book.fees()
        return {"pnl": float(money_to_decimal(pnl)), "pnl_exact": exact(pnl),
                "fees": float(money_to_decimal(fees)), "fees_exact": exact(fees),
                "realized_pnl": float(money_to_decimal(book.realized())),
                "unrealized_pnl": float(money_to_decimal(unrealized)),
                "max_drawdown": float(money_to_decimal(self.drawdown.max_drawdown)),
                "max_drawdown_exact": exact(self.drawdown.max_drawdown), "fills": self.fills}

    def positions(self) -> list[dict[str, Any]]:
        """One row per (robot, instrument) traded."""
        self._sync_marks()
        rows = []
        for (account, inst), p in self.book.items():
            avg = p.avg_price()
            rows.append({"robot": account, "instrument": inst, "quantity": p.quantity / SCALE,
                         "avg_price": float(avg / SCALE) if avg is not None else 0.0,
                         "realized_pnl": float(money_to_decimal(p.realized)),
                         "unrealized_pnl": float(money_to_decimal(p.unrealized())),
                         "fees": float(money_to_decimal(p.fees)), "pnl": float(money_to_decimal(p.total_pnl())),
                         "traded": p.traded / SCALE, "fills": p.fills,
                         "last_price": (p.mark or 0) / SCALE})
        return rows
