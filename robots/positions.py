"""Exact position, PnL and fee accounting in integer fixed point.

Events carry prices and sizes as doubles; money must not be summed as floats. Everything here
is integers:

- quantities and prices in *units* of 1e-9 (`to_units(0.1) == 100_000_000`), converted from
  the float's shortest decimal representation, so `0.1` is exactly one tenth;
- money (cash, notional, fees, PnL) in *money units* of 1e-18, because the product of a price
  unit and a quantity unit is exact at 1e-18 (`price_units * size_units`);
- the average entry price, needed only to split PnL into realized and unrealized, is a
  `Fraction` (exact; an average of prices is not a finite decimal in general).

Total PnL (`cash + quantity * mark - fees`) needs no division at all, so the equity curve and
the drawdown are exact integers. Reports convert at the edge with `money_to_decimal` /
`money_to_float`.

The same ledger serves the crypto venue (fees), the controls (positions), the runner's summary
and the analyzer. Betfair settlement (commission on net market profit) is a venue concern and
lives with the Betfair venue; it books its cash through `Ledger.apply_cash`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from ticktape.events import OrderFilled, PositionSnapshot

SCALE = 1_000_000_000
"""Units per 1.0 of price or quantity (1e-9 resolution)."""

MONEY_SCALE = SCALE * SCALE
"""Money units per 1.0 of quote currency (1e-18 resolution: price units x quantity units)."""

# Below this magnitude `round(x * SCALE)` is exact for any double with at most 9 decimals: the
# product stays under 2**50, where the float's spacing (<= 1/8) is far below the 0.5 rounding margin.
_FAST_LIMIT = 1_000_000.0


def to_units(x: float) -> int:
    """Convert a float price or quantity to integer units of 1e-9 (nearest; ties to even).

    Uses the float's shortest decimal form, so `to_units(0.1) == 100_000_000` exactly.
    """
    if -_FAST_LIMIT < x < _FAST_LIMIT:
        return round(x * SCALE)
    return int((Decimal(repr(x)) * SCALE).to_integral_value())


def from_units(n: int) -> float:
    """Integer units of 1e-9 back to the nearest float (correctly rounded)."""
    return n / SCALE


def money_to_decimal(m: int | Fraction) -> Decimal:
    """Money units (1e-18) as a `Decimal` of quote currency (exact for ints; Fractions to 28 digits)."""
    if isinstance(m, Fraction):
        return Decimal(m.numerator) / Decimal(m.denominator) / MONEY_SCALE
    return Decimal(m).scaleb(-18)


def money_to_float(m: int | Fraction) -> float:
    """Money units (1e-18) as the nearest float (for summaries and frames, never for sums)."""
    return float(Fraction(m) / MONEY_SCALE)


def units_to_money(n: int) -> int:
    """A 1e-9 amount of money (a fee as the venue reports it) in 1e-18 money units."""
    return n * SCALE


def fee_units(price_u: int, size_u: int, rate: Fraction) -> int:
    """The fee on a fill, in 1e-9 units of quote currency, rounded half to even.

    `rate` is a fraction of notional (0.001 = 0.1%); negative rates are rebates.
    """
    # notional (1e-18) * rate / 1e9, in integers: Fraction arithmetic is ~20x slower.
    num = price_u * size_u * rate.numerator
    den = rate.denominator * SCALE
    q, r = divmod(num, den)
    twice = 2 * r
    if twice > den or (twice == den and q % 2 == 1):
        q += 1
    return q


def parse_rate(value: str | float | int | Fraction | Decimal) -> Fraction:
    """A fee rate from config: `"0.001"`, `"1/1000"`, `0.001`, `Decimal("0.001")` or a Fraction, exactly.

    Raises ValueError on text that is not a number.
    """
    if isinstance(value, Fraction):
        return value
    if isinstance(value, float):
        return Fraction(Decimal(repr(value)))
    if isinstance(value, str):
        return Fraction(value.strip())  # decimal, exponent or "p/q" text, exactly
    return Fraction(value)


@dataclass(slots=True)
class Position:
    """One instrument's position for one account (robot): exact integers, mutable fold state."""

    quantity: int = 0
    """Signed quantity in units (1e-9); positive = long."""
    cash: int = 0
    """Cash flow from fills in money units (1e-18): sells add, buys subtract; fees excluded."""
    fees: int = 0
    """Fees paid in money units (negative = rebates received)."""
    cost: int | Fraction = 0
    """Entry cost of the open quantity in money units (signed like quantity); a Fraction only
    after a partial close at an average that is not a whole number of money units."""
    realized: int | Fraction = 0
    """Realized PnL (average-cost method) in money units, before fees (int unless cost was a Fraction)."""
    traded: int = 0
    """Absolute traded quantity in units."""
    fills: int = 0
    mark: int | None = None
    """Last mark price in units (from a trade, a mid or a fill), None before any."""

    def apply(self, side: str, price_u: int, size_u: int, fee_money: int) -> None:
        """Book one fill: `side` BUY/SELL, price and size in units, fee in money units."""
        signed = size_u if side == "BUY" else -size_u
        notional = price_u * size_u
        self.cash += -notional if side == "BUY" else notional
        self.fees += fee_money
        self.traded += size_u
        self.fills += 1
        q = self.quantity
        if q == 0 or (q > 0) == (signed > 0):
            self.cost += price_u * signed
        else:
            closed = min(size_u, abs(q))
            # avg * closed = cost * closed / q: an int whenever it divides (the common case), else a Fraction.
            num = self.cost * closed
            closed_cost: int | Fraction = num // q if (type(num) is int and num % q == 0) else Fraction(num) / q
            direction = 1 if q > 0 else -1
            # Closing a long at p realizes (p - avg) * closed; closing a short realizes (avg - p) * closed.
            self.realized += (price_u * closed - closed_cost) * direction
            self.cost -= closed_cost * direction
            rest = size_u - closed
            if rest:  # the fill flips the position: the remainder opens at this price
                self.cost = price_u * (rest if signed > 0 else -rest)
        self.quantity = q + signed
        if self.quantity == 0:
            self.cost = 0
        if self.mark is None:
            self.mark = price_u

    def avg_price(self) -> Fraction | None:
        """Average entry price of the open quantity in units, None when flat."""
        return Fraction(self.cost) / self.quantity if self.quantity else None

    def unrealized(self, mark_u: int | None = None) -> int | Fraction:
        """Unrealized PnL at `mark_u` (default: the last mark) in money units."""
        mark = self.mark if mark_u is None else mark_u
        if not self.quantity or mark is None:
            return 0
        return mark * self.quantity - self.cost

    def total_pnl(self, mark_u: int | None = None) -> int:
        """Realized + unrealized - fees, in money units, exact without division."""
        mark = self.mark if mark_u is None else mark_u
        value = self.quantity * mark if (self.quantity and mark is not None) else 0
        return self.cash + value - self.fees

    def notional(self, mark_u: int | None = None) -> int:
        """Absolute market value of the open quantity in money units."""
        mark = self.mark if mark_u is None else mark_u
        return abs(self.quantity * mark) if mark is not None else 0


class Ledger:
    """Positions per (account, instrument) built from `OrderFilled` events and marks.

    Account is the robot id of the fill. `apply_fill` converts the event's doubles once;
    `mark` records a mark price per instrument (all accounts share it).
    """

    def __init__(self) -> None:
        self._positions: dict[tuple[str, str], Position] = {}
        self._by_instrument: dict[str, list[Position]] = {}
        self._by_account: dict[str, dict[str, Position]] = {}
        self._marks: dict[str, int] = {}

    def position(self, account: str, instrument: str) -> Position:
        """The position of `account` in `instrument` (created flat if unseen)."""
        key = (account, instrument)
        pos = self._positions.get(key)
        if pos is None:
            pos = self._positions[key] = Position(mark=self._marks.get(instrument))
            self._by_instrument.setdefault(instrument, []).append(pos)
            self._by_account.setdefault(account, {})[instrument] = pos
        return pos

    def apply_fill(self, fill: OrderFilled) -> Position:
        """Book a fill; the fee is converted from the event's 1e-9-rounded double."""
        return self.apply_units(fill.robot, fill.instrument, fill.side, to_units(fill.price), to_units(fill.size),
                                units_to_money(to_units(fill.fee)))

    def apply_units(self, account: str, instrument: str, side: str, price_u: int, size_u: int,
                    fee_money: int) -> Position:
        """Book a fill already in units (`apply_fill` without converting the event's doubles again)."""
        pos = self.position(account, instrument)
        pos.apply(side, price_u, size_u, fee_money)
        self.mark(instrument, price_u)
        return pos

    def apply_cash(self, account: str, instrument: str, cash_money: int, fee_money: int = 0) -> None:
        """Book a cash flow that is not a fill (e.g. settlement), in money units."""
        pos = self.position(account, instrument)
        pos.cash += cash_money
        pos.fees += fee_money

    def mark(self, instrument: str, price_u: int) -> None:
        """Set the mark price of `instrument` (units) for every account holding it."""
        self._marks[instrument] = price_u
        for pos in self._by_instrument.get(instrument, ()):
            pos.mark = price_u

    def mark_price(self, instrument: str) -> int | None:
        """The last mark of `instrument` in units, or None."""
        return self._marks.get(instrument)

    def positions_of(self, account: str) -> Mapping[str, Position]:
        """`instrument -> position` of one account (a live view; do not mutate)."""
        return self._by_account.get(account, {})

    def items(self) -> Iterator[tuple[tuple[str, str], Position]]:
        """((account, instrument), position) in a deterministic (sorted) order."""
        for key in sorted(self._positions):
            yield key, self._positions[key]

    def equity(self, account: str | None = None) -> int:
        """Total PnL net of fees over all instruments (of `account`, or all) in money units."""
        return sum(p.total_pnl() for (acc, _), p in self._positions.items() if account is None or acc == account)

    def fees(self, account: str | None = None) -> int:
        """Total fees paid (money units)."""
        return sum(p.fees for (acc, _), p in self._positions.items() if account is None or acc == account)

    def realized(self, account: str | None = None) -> int | Fraction:
        """Total realized PnL before fees (money units)."""
        return sum(p.realized for (acc, _), p in self._positions.items() if account is None or acc == account)


def snapshot(account: str, venue: str, instrument: str, pos: Position, ts: int) -> PositionSnapshot:
    """A `PositionSnapshot` event of `pos` at event time `ts` (doubles for the tape; the ledger stays exact)."""
    avg = pos.avg_price()
    return PositionSnapshot(
        account, venue, instrument, ts, ts, from_units(pos.quantity),
        float(avg / SCALE) if avg is not None else 0.0,
        money_to_float(pos.realized), money_to_float(pos.unrealized()),
    )


def max_drawdown(equity: Iterable[int]) -> int:
    """Largest peak-to-trough fall of an equity curve (same units as the input; >= 0)."""
    tracker = DrawdownTracker()
    for value in equity:
        tracker.update(value)
    return tracker.max_drawdown


@dataclass(slots=True)
class DrawdownTracker:
    """Streaming max drawdown: O(1) per point, so a run can sample equity on every event."""

    peak: int | None = None
    max_drawdown: int = 0

    def update(self, value: int) -> None:
        """Take the next equity value."""
        if self.peak is None or value > self.peak:
            self.peak = value
        elif self.peak - value > self.max_drawdown:
            self.max_drawdown = self.peak - value
