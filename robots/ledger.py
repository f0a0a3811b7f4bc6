"""A run's money: positions, PnL, fees and max drawdown, in exact fixed point.

The arithmetic is `robots.positions` (integers: quantities and prices in 1e-9 units, money in
1e-18 units; Decimal only at report time). This module adds what a run needs on top: an equity
curve kept current incrementally (a mark moves equity by quantity x price change, O(1) per
event) so the max drawdown is sampled on every market event while a position is open.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any, Protocol

from robots.performance import DAY_NS
from robots.positions import SCALE, DrawdownTracker, money_to_decimal, to_units, units_to_money
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
    """Linear instruments (spot, perpetuals; money in the quote asset): cash + quantity x mark - fees.

    Equity between two fills of a single open instrument is `K + q * price` with `K`, `q` fixed,
    so the hot path (one call per market event) only compares float prices: it keeps the
    segment's lowest and highest price and its largest adverse move. At the next fill (or the
    summary) those few prices are converted to exact units and the drawdown is updated in exact
    integers. With several instruments open at once every mark is applied exactly instead.
    """

    def __init__(self) -> None:
        self.book = Book()
        self.open = False
        self.fills = 0
        self.peak = 0  # money units: the highest equity so far (the run starts at 0)
        self.max_drawdown = 0  # money units
        self._net: dict[str, int] = {}  # net quantity (units) per instrument over all accounts
        self._mark: dict[str, int] = {}  # last exact mark (units) per traded instrument
        self._last: dict[str, float] = {}  # last mark as the float it came in as
        # the single-instrument segment: equity = k + q * price
        self._seg: str | None = None
        self._k = 0
        self._q = 0
        self._hi = self._lo = 0.0
        self._adverse = 0.0
        self._adv_from = self._adv_to = 0.0
        self._equity = 0  # exact equity when several instruments are open (else unused)
        # Daily closes for Sharpe/Sortino (robots.performance): equity at each UTC day's last point.
        # Only a day change costs anything: the hot path compares one integer.
        self._day_end = -1  # end (ns, exclusive) of the day of the last fill or mark; -1: none yet
        self._closes: dict[int, int] = {}

    def on_event(self, event: Event) -> None:
        """Any venue answer; only fills move money."""
        if type(event) is OrderFilled:
            self.on_fill(event)

    def _current_equity(self) -> int:
        """Exact equity at the last fill or mark (the segment's last price, when one instrument is open)."""
        if self._seg is not None:
            return self._k + self._q * to_units(self._last[self._seg])
        return self._equity

    def _roll_day(self, ts: int) -> None:
        """A point on a later day: the previous point's equity is its day's close."""
        if self._day_end >= 0:
            self._closes[self._day_end // DAY_NS - 1] = self._current_equity()
        self._day_end = (ts // DAY_NS + 1) * DAY_NS

    def daily_closes(self) -> dict[int, Decimal]:
        """{UTC day number: equity at that day's last fill or mark}, for `robots.performance.daily_returns`."""
        closes = dict(self._closes)
        if self._day_end >= 0:
            closes[self._day_end // DAY_NS - 1] = self._current_equity()
        return {day: money_to_decimal(v) for day, v in closes.items()}

    def on_fill(self, fill: OrderFilled) -> None:
        """Book a fill exactly and start a new mark segment (fills are rare next to market events)."""
        ts = fill.ts_event
        if ts >= self._day_end:
            self._roll_day(ts)
        if self._seg is not None:
            self._close_segment()  # also brings the segment's exact mark up to date (`_sync_marks`' part)
        self._push_marks()  # `_sync_marks` without its segment part: `_close_segment` did that
        book = self.book
        inst = fill.instrument
        price = fill.price
        price_u = to_units(price)
        size = to_units(fill.size)
        # each double converted once, for the book and for the ledger's own net and mark
        book.apply_units(fill.robot, inst, fill.side, price_u, size, units_to_money(to_units(fill.fee)))
        self._net[inst] = self._net.get(inst, 0) + (size if fill.side == "BUY" else -size)
        self._mark[inst] = price_u
        self._last[inst] = price
        self.fills += 1
        equity = book.equity()
        self._update(equity)
        held = [i for i, q in self._net.items() if q]
        self.open = bool(held)
        self._seg = None
        if len(held) == 1:
            self._start_segment(held[0], equity)
        self._equity = equity

    def _start_segment(self, inst: str, equity: int) -> None:
        self._seg = inst
        self._q = self._net[inst]
        self._k = equity - self._q * self._mark[inst]
        self._hi = self._lo = self._adv_from = self._adv_to = self._last[inst]
        self._adverse = 0.0

    def _close_segment(self) -> None:
        """Fold the segment's extremes into the exact peak and drawdown."""
        inst = self._seg
        if inst is None:
            return
        k, q = self._k, self._q
        lo_u = to_units(self._lo)
        hi_u = lo_u if self._hi == self._lo else to_units(self._hi)  # a flat segment: one conversion
        worst, best = (lo_u, hi_u) if q > 0 else (hi_u, lo_u)
        # no adverse move (from == to) is 0 without converting
        adv_from, adv_to = self._adv_from, self._adv_to
        adverse = 0 if adv_from == adv_to else abs(q) * abs(to_units(adv_from) - to_units(adv_to))
        dd = max(self.peak - (k + q * worst), adverse)
        if dd > self.max_drawdown:
            self.max_drawdown = dd
        self.peak = max(self.peak, k + q * best)
        last = self._last[inst]
        self._mark[inst] = to_units(last)
        self._hi = self._lo = self._adv_from = self._adv_to = last
        self._adverse = 0.0

    def _update(self, equity: int) -> None:
        if equity > self.peak:
            self.peak = equity
        elif self.peak - equity > self.max_drawdown:
            self.max_drawdown = self.peak - equity

    def mark(self, instrument: str, price: float) -> None:
        """Revalue an open position at a new market price."""
        if instrument == self._seg:
            self._last[instrument] = price
            if price > self._hi:
                self._hi = price
            elif price < self._lo:
                self._lo = price
            if self._q > 0:
                if self._hi - price > self._adverse:
                    self._adverse = self._hi - price
                    self._adv_from, self._adv_to = self._hi, price
            elif price - self._lo > self._adverse:
                self._adverse = price - self._lo
                self._adv_from, self._adv_to = self._lo, price
            return
        q = self._net.get(instrument)
        if not q or self._seg is not None:
            return
        p = to_units(price)  # several instruments open: exact per mark
        old = self._mark[instrument]
        if p != old:
            self._equity += q * (p - old)
            self._mark[instrument] = p
            self._last[instrument] = price
            self._update(self._equity)

    def on_market(self, event: Event) -> None:
        """Mark from a Trade price, a Quote mid or a Bar close (the runner calls it while a position is open)."""
        if event.ts_event >= self._day_end:
            self._roll_day(event.ts_event)
        t = type(event)
        if t is Trade:
            if event.instrument == self._seg:  # type: ignore[union-attr]
                # the hot case, inlined: one open instrument, a trade print (see `mark`)
                price: float = event.price  # type: ignore[union-attr,assignment]
                self._last[event.instrument] = price  # type: ignore[union-attr]
                if price > self._hi:
                    self._hi = price
                elif price < self._lo:
                    self._lo = price
                if self._q > 0:
                    if self._hi - price > self._adverse:
                        self._adverse = self._hi - price
                        self._adv_from, self._adv_to = self._hi, price
                elif price - self._lo > self._adverse:
                    self._adverse = price - self._lo
                    self._adv_from, self._adv_to = self._lo, price
            else:
                self.mark(event.instrument, event.price)  # type: ignore[union-attr,arg-type]
        elif t is Quote:
            self.mark(event.instrument, (event.bid_price + event.ask_price) / 2)  # type: ignore[union-attr]
        elif t is Bar:
            self.mark(event.instrument, event.close)  # type: ignore[union-attr]

    def _sync_marks(self) -> None:
        if self._seg is not None:
            self._mark[self._seg] = to_units(self._last[self._seg])
        self._push_marks()

    def _push_marks(self) -> None:
        """Mark the exact book at the ledger's marks where they moved."""
        book = self.book
        for inst, p in self._mark.items():
            if book.mark_price(inst) != p:
                book.mark(inst, p)

    def summary(self) -> dict[str, Any]:
        """PnL (net of fees), fees, realized/unrealized, max drawdown: exact decimals (and floats)."""
        if self._seg is not None:
            self._close_segment()
        self._sync_marks()
        book = self.book
        unrealized = sum((p.unrealized() for _, p in book.items()), Fraction(0))
        pnl = book.equity()
        fees = book.fees()
        return {"pnl": float(money_to_decimal(pnl)), "pnl_exact": exact(pnl),
                "fees": float(money_to_decimal(fees)), "fees_exact": exact(fees),
                "realized_pnl": float(money_to_decimal(book.realized())),
                "unrealized_pnl": float(money_to_decimal(unrealized)),
                "max_drawdown": float(money_to_decimal(self.max_drawdown)),
                "max_drawdown_exact": exact(self.max_drawdown), "fills": self.fills}

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


class SettlementLedger:
    """Betfair-style money: PnL is booked when a market settles (`MarketSettled`), net of commission.

    Fills are counted (and matched stake summed) but move no money until settlement, because a
    bet's value depends on the outcome. Drawdown is taken over the settled-PnL curve.
    """

    def __init__(self) -> None:
        self.open = False  # nothing to mark: bets are not marked to market
        self.fills = 0
        self.matched = 0  # units (1e-9) of stake matched
        self.pnl = 0  # units (1e-9) of money, net of commission
        self.commission = 0
        self.drawdown = DrawdownTracker()
        self.drawdown.update(0)
        self._markets: dict[tuple[str, str], dict[str, Any]] = {}
        self._closes: dict[int, int] = {}  # UTC day -> settled PnL (units) after its last settlement

    def on_fill(self, fill: OrderFilled) -> None:
        """Count a matched (part of a) bet."""
        self.fills += 1
        self.matched += to_units(fill.size)

    def on_event(self, event: Event) -> None:
        """Fills and settlements (by type name, so the venue's own event types need no import here)."""
        name = type(event).__name__
        if name == "OrderFilled":
            self.on_fill(event)  # type: ignore[arg-type]
        elif name == "MarketSettled":
            net = to_units(event.net_profit)  # type: ignore[union-attr]
            fee = to_units(event.commission)  # type: ignore[union-attr]
            self.pnl += net
            self.commission += fee
            self.drawdown.update(self.pnl)
            self._closes[event.ts_event // DAY_NS] = self.pnl
            row = self._markets.setdefault((event.robot, event.market_id),  # type: ignore[union-attr]
                                           {"profit": 0, "commission": 0, "net": 0, "bets": 0})
            row["profit"] += to_units(event.profit)  # type: ignore[union-attr]
            row["commission"] += fee
            row["net"] += net
            row["bets"] += event.bets  # type: ignore[union-attr]

    def on_market(self, event: Event) -> None:
        """Nothing is marked to market."""

    def daily_closes(self) -> dict[int, Decimal]:
        """{UTC day number: settled PnL after that day's last settlement}."""
        return {day: money_to_decimal(v * SCALE) for day, v in self._closes.items()}

    def summary(self) -> dict[str, Any]:
        """PnL net of commission (fees = commission), matched stake, drawdown over settlements."""
        dd = self.drawdown.max_drawdown * SCALE
        return {"pnl": self.pnl / SCALE, "pnl_exact": exact(self.pnl * SCALE),
                "fees": self.commission / SCALE, "fees_exact": exact(self.commission * SCALE),
                "matched_stake": self.matched / SCALE, "markets_settled": len(self._markets),
                "max_drawdown": float(money_to_decimal(dd)), "max_drawdown_exact": exact(dd), "fills": self.fills}

    def positions(self) -> list[dict[str, Any]]:
        """One row per (robot, market) settled."""
        return [{"robot": robot, "instrument": market, "bets": r["bets"], "profit": r["profit"] / SCALE,
                 "commission": r["commission"] / SCALE, "pnl": r["net"] / SCALE}
                for (robot, market), r in sorted(self._markets.items())]
