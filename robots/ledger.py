"""Positions, PnL, fees and drawdown of a run, in exact fixed point.

Prices and sizes are doubles on the tape; every venue decimal up to 9 decimal places is
recovered exactly by `round(x * 1e9)`, so sums here are Python integers (quantities and prices
in 1e-9 units, money in 1e-18 units) and never drift. Conversion to Decimal happens at report
time only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Protocol

from ticktape.events import Bar, Event, OrderFilled, Quote, Trade

SCALE = 1_000_000_000
MONEY = SCALE * SCALE


def units(x: float) -> int:
    """A price or size as an integer of 1e-9 units (exact for decimals with <= 9 places)."""
    return round(x * SCALE)


def money(value: int | Fraction) -> Decimal:
    """1e-18 units -> Decimal (exact)."""
    if isinstance(value, Fraction):
        return Decimal(value.numerator) / Decimal(value.denominator) / Decimal(MONEY)
    return Decimal(value) / Decimal(MONEY)


class LedgerLike(Protocol):
    """What the runner needs from a ledger (a venue may bring its own, e.g. Betfair's)."""

    open: bool

    def on_fill(self, fill: OrderFilled) -> None: ...

    def on_event(self, event: Event) -> None: ...

    def on_market(self, event: Event) -> None: ...

    def summary(self) -> dict[str, Any]: ...

    def positions(self) -> list[dict[str, Any]]: ...


@dataclass
class _Position:
    qty: int = 0  # 1e-9 units, signed
    cost: Fraction = Fraction(0)  # 1e-18 money units of the open quantity (average cost basis)
    realized: Fraction = Fraction(0)
    mark: int = 0  # last price, 1e-9 units
    fees: int = 0  # 1e-9 units
    bought: int = 0
    sold: int = 0
    fills: int = 0


@dataclass
class Ledger:
    """Linear instruments (spot, perpetuals quoted in the quote asset): cash + position x mark."""

    open: bool = False
    cash: int = 0  # 1e-18 units
    fees: int = 0  # 1e-9 units
    fills: int = 0
    equity: int = 0  # 1e-18 units, cash + sum(qty * mark) - fees
    peak: int = 0
    max_drawdown: int = 0
    _pos: dict[str, _Position] = field(default_factory=dict)

    def on_event(self, event: Event) -> None:
        """Any venue answer; only fills move money."""
        if type(event) is OrderFilled:
            self.on_fill(event)

    def on_fill(self, fill: OrderFilled) -> None:
        """Apply a fill: cash, position, average cost, realized PnL, fee."""
        pos = self._pos.get(fill.instrument)
        if pos is None:
            pos = self._pos[fill.instrument] = _Position()
        q = units(fill.size) if fill.side == "BUY" else -units(fill.size)
        p = units(fill.price)
        fee = units(fill.fee)
        self.cash -= q * p
        self.fees += fee
        self.fills += 1
        pos.fees += fee
        pos.fills += 1
        if q > 0:
            pos.bought += q
        else:
            pos.sold -= q
        old = pos.qty
        if old == 0 or (old > 0) == (q > 0):
            pos.cost += q * p
        else:
            closing = min(abs(q), abs(old))
            basis = pos.cost * Fraction(closing, abs(old))
            sign = 1 if old > 0 else -1
            pos.realized += sign * (closing * p) - basis
            pos.cost -= basis
            rest = abs(q) - closing
            if rest:
                pos.cost = Fraction((1 if q > 0 else -1) * rest * p)
        # mark-to-market: the old quantity was valued at the old mark, the new one at the fill
        # price until the market moves again
        self.equity += -q * p - old * pos.mark + (old + q) * p - fee * SCALE
        pos.mark = p
        pos.qty = old + q
        self.open = any(x.qty for x in self._pos.values())
        self._drawdown()

    def mark(self, instrument: str, price: float) -> None:
        """Revalue an open position at a new market price."""
        pos = self._pos.get(instrument)
        if pos is None or not pos.qty:
            return
        p = units(price)
        if p != pos.mark:
            self.equity += pos.qty * (p - pos.mark)
            pos.mark = p
            self._drawdown()

    def on_market(self, event: Event) -> None:
        """Mark from a Trade price, a Quote mid or a Bar close (called only while a position is open)."""
        t = type(event)
        if t is Trade:
            self.mark(event.instrument, event.price)  # type: ignore[union-attr]
        elif t is Quote:
            self.mark(event.instrument, (event.bid_price + event.ask_price) / 2)  # type: ignore[union-attr]
        elif t is Bar:
            self.mark(event.instrument, event.close)  # type: ignore[union-attr]

    def _drawdown(self) -> None:
        if self.equity > self.peak:
            self.peak = self.equity
        elif self.peak - self.equity > self.max_drawdown:
            self.max_drawdown = self.peak - self.equity

    def summary(self) -> dict[str, Any]:
        """PnL (net of fees), fees, realized/unrealized, max drawdown: exact decimals as floats."""
        realized = sum((p.realized for p in self._pos.values()), Fraction(0))
        unrealized = sum((Fraction(p.qty * p.mark) - p.cost for p in self._pos.values()), Fraction(0))
        fees = money(self.fees * SCALE)
        pnl = money(realized + unrealized) - fees
        return {"pnl": float(pnl), "pnl_exact": str(pnl), "fees": float(fees), "fees_exact": str(fees),
                "realized_pnl": float(money(realized)), "unrealized_pnl": float(money(unrealized)),
                "max_drawdown": float(money(self.max_drawdown)), "fills": self.fills}

    def positions(self) -> list[dict[str, Any]]:
        """One row per instrument traded."""
        rows = []
        for name in sorted(self._pos):
            p = self._pos[name]
            avg = float(p.cost / p.qty / SCALE) if p.qty else 0.0
            rows.append({"instrument": name, "quantity": p.qty / SCALE, "avg_price": avg,
                         "realized_pnl": float(money(p.realized)),
                         "unrealized_pnl": float(money(Fraction(p.qty * p.mark) - p.cost)),
                         "fees": p.fees / SCALE, "bought": p.bought / SCALE, "sold": p.sold / SCALE,
                         "fills": p.fills, "last_price": p.mark / SCALE})
        return rows
