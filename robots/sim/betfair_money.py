"""Betfair price ladder and bet arithmetic, in exact integers.

Prices are handled as integer hundredths (`2.5 -> 250`) and stakes as integer cents, so
matching never drifts and settlement is exact: a bet's profit is computed in 1e-4 units
(cents x hundredths) and rounded once, half away from zero, to the cent.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

# Betfair's CLASSIC odds ladder: (upper bound, increment), both in hundredths (the live venue journals it).
CLASSIC_LADDER: tuple[tuple[int, int], ...] = (
    (200, 1), (300, 2), (400, 5), (600, 10), (1000, 20), (2000, 50),
    (3000, 100), (5000, 200), (10000, 500), (100000, 1000),
)
MIN_PRICE = 1.01
MAX_PRICE = 1000.0

WINNER = "WINNER"
LOSER = "LOSER"


def hundredths(price: float) -> int:
    """`price` in integer hundredths (Betfair prices have at most two decimals)."""
    return round(price * 100)


def cents(size: float) -> int:
    """A stake or ladder size in integer cents (Betfair sizes have at most two decimals)."""
    return round(size * 100)


def is_valid_price(price: float) -> bool:
    """True when `price` is a tick on Betfair's CLASSIC ladder (1.01 ... 1000)."""
    h = round(price * 100)
    if abs(h - price * 100) > 1e-6 or h < 101 or h > 100000:
        return False
    low = 100
    for high, step in CLASSIC_LADDER:
        if h <= high:
            return (h - low) % step == 0
        low = high
    return False  # pragma: no cover - h <= 100000 always meets a band


def _step_above(h: int) -> int:
    for high, step in CLASSIC_LADDER:
        if h < high:
            return step
    return 0


def _step_below(h: int) -> int:
    for high, step in CLASSIC_LADDER:
        if h <= high:
            return step
    return 0


def tick_offset(price: float, ticks: int) -> float:
    """The price `ticks` ticks above (positive) or below (negative) `price`, clamped to the ladder.

    `price` must be a valid tick (see `is_valid_price`).
    """
    h = hundredths(price)
    for _ in range(abs(ticks)):
        if ticks > 0:
            if h >= 100000:
                break
            h += _step_above(h)
        else:
            if h <= 101:
                break
            h -= _step_below(h)
    return h / 100


def _div_round(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half away from zero (denominator > 0)."""
    q, r = divmod(abs(numerator), denominator)
    if 2 * r >= denominator:
        q += 1
    return q if numerator >= 0 else -q


def bet_profit_cents(back: bool, runner_status: str, fills: Iterable[tuple[int, int]]) -> int:
    """Profit in cents, before commission, of one bet's matched `fills` ((price hundredths, cents) pairs).

    A winning back wins stake x (price - 1), a losing back loses its stake; a lay is the mirror
    image. Any other runner status (REMOVED, or an unsettled/each-way PLACED result this venue
    does not model) voids the bet: profit 0.
    """
    if runner_status == WINNER:
        exact = sum(size_c * (price_h - 100) for price_h, size_c in fills)  # 1e-4 units
        won = _div_round(exact, 100)
        return won if back else -won
    if runner_status == LOSER:
        staked = sum(size_c for _, size_c in fills)
        return -staked if back else staked
    return 0


def commission_cents(net_profit_cents: int, rate: Fraction) -> int:
    """Commission on a market's net profit: `rate` x profit when it is positive, else nothing."""
    if net_profit_cents <= 0:
        return 0
    charged = net_profit_cents * rate
    return _div_round(charged.numerator, charged.denominator)


def average_price(fills: Iterable[tuple[int, int]]) -> float:
    """Size-weighted average price of (price hundredths, cents) fills; 0.0 when nothing matched."""
    total = 0
    weighted = 0
    for price_h, size_c in fills:
        total += size_c
        weighted += price_h * size_c
    if total == 0:
        return 0.0
    return float(Fraction(weighted, total * 100))
