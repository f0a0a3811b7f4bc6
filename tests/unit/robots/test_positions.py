"""Exact fixed-point accounting: hand-computed positions, PnL, fees and drawdowns."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robots.positions import (
    MONEY_SCALE,
    SCALE,
    DrawdownTracker,
    Ledger,
    Position,
    fee_units,
    from_units,
    max_drawdown,
    money_to_decimal,
    money_to_float,
    parse_rate,
    snapshot,
    to_units,
)
from ticktape.events import OrderFilled, PositionSnapshot


def fill(side: str, price: float, size: float, fee: float = 0.0, robot: str = "r",
         inst: str = "BTCUSDT") -> OrderFilled:
    return OrderFilled(robot, "c", None, "sim", inst, 0, 0, "f", side, price, size, fee, "TAKER", 0.0)  # type: ignore[arg-type]


def money(x: str) -> int:
    """A decimal amount as money units (1e-18)."""
    return int(Decimal(x) * MONEY_SCALE)


def test_to_units_is_exact_for_decimal_floats() -> None:
    assert to_units(0.1) == 100_000_000
    assert to_units(0.3) == 300_000_000
    assert to_units(0.1) + to_units(0.2) == to_units(0.3)  # unlike 0.1 + 0.2 != 0.3 in floats
    assert to_units(63512.37) == 63_512_370_000_000
    assert to_units(12_345_678.12345) == 12_345_678_123_450_000  # the slow (Decimal) path
    assert to_units(-2.5) == -2_500_000_000
    assert from_units(to_units(0.1)) == 0.1


@given(st.decimals(min_value=Decimal("-9999999"), max_value=Decimal("9999999"), places=9))
def test_to_units_round_trips_every_nine_decimal_value(d: Decimal) -> None:
    x = float(d)
    assert to_units(x) == int(Decimal(repr(x)).scaleb(9).to_integral_value())
    assert from_units(to_units(x)) == x


def test_fee_is_rate_times_notional_rounded_to_1e9() -> None:
    # 1 @ 100 + 1 @ 101 + 1 @ 102 at 0.1%: fees 0.1 + 0.101 + 0.102 = 0.303
    rate = parse_rate("0.001")
    assert rate == Fraction(1, 1000)
    total = sum(fee_units(to_units(p), to_units(1.0), rate) for p in (100.0, 101.0, 102.0))
    assert total == 303_000_000
    # 0.00033 * 1.5 * 0.001 = 4.95e-7 -> 495 units exactly
    assert fee_units(to_units(0.00033), to_units(1.5), rate) == 495
    # rounding half to even at the 1e-9 boundary: 0.0000005 * 1 * 0.001 = 5e-10 -> 0
    assert fee_units(to_units(0.0000005), to_units(1.0), rate) == 0
    assert parse_rate(0.00075) == Fraction(75, 100_000)
    assert parse_rate("-0.0001") == Fraction(-1, 10_000)  # rebate
    assert parse_rate("1/1000") == parse_rate("1e-3") == parse_rate(Decimal("0.001")) == Fraction(1, 1000)
    with pytest.raises(ValueError):
        parse_rate("ten bp")


def test_round_trip_long_realizes_and_counts_fees() -> None:
    led = Ledger()
    led.apply_fill(fill("BUY", 100.0, 2.0, fee=0.2))
    led.apply_fill(fill("BUY", 103.0, 1.0, fee=0.103))
    pos = led.position("r", "BTCUSDT")
    assert pos.quantity == to_units(3.0)
    assert pos.avg_price() == Fraction(to_units(101.0))  # (200 + 103) / 3 = 101
    led.mark("BTCUSDT", to_units(105.0))
    assert pos.unrealized() == money("12")  # (105 - 101) * 3
    led.apply_fill(fill("SELL", 110.0, 3.0, fee=0.33))
    assert pos.quantity == 0
    assert pos.realized == money("27")  # (110 - 101) * 3
    assert pos.fees == money("0.633")
    assert pos.total_pnl() == money("26.367")
    assert led.equity() == money("26.367")
    assert money_to_decimal(led.equity()) == Decimal("26.367")
    assert money_to_float(led.equity()) == 26.367


def test_flip_from_long_to_short_opens_remainder_at_fill_price() -> None:
    pos = Position()
    pos.apply("BUY", to_units(10.0), to_units(2.0), 0)
    pos.apply("SELL", to_units(12.0), to_units(5.0), 0)
    assert pos.quantity == to_units(-3.0)
    assert pos.realized == money("4")  # (12 - 10) * 2
    assert pos.avg_price() == Fraction(to_units(12.0))
    assert pos.unrealized(to_units(11.0)) == money("3")  # short 3 from 12, mark 11
    assert pos.total_pnl(to_units(11.0)) == money("7")
    assert pos.traded == to_units(7.0)
    assert pos.fills == 2


def test_short_cover_in_pieces() -> None:
    pos = Position()
    pos.apply("SELL", to_units(50.0), to_units(3.0), 0)
    pos.apply("BUY", to_units(47.0), to_units(1.0), 0)
    pos.apply("BUY", to_units(52.0), to_units(2.0), 0)
    assert pos.quantity == 0
    assert pos.realized == money("-1")  # +3 on the first, -2 * 2 on the rest
    assert pos.cost == 0


def test_average_price_that_is_not_a_finite_decimal_stays_exact() -> None:
    pos = Position()
    for p in (1.0, 1.0, 2.0):
        pos.apply("BUY", to_units(p), to_units(1.0), 0)
    assert pos.avg_price() == Fraction(4, 3) * SCALE
    pos.apply("SELL", to_units(2.0), to_units(1.0), 0)
    assert pos.realized == Fraction(2, 3) * MONEY_SCALE
    pos.apply("SELL", to_units(2.0), to_units(2.0), 0)
    assert pos.realized == money("2")  # 6 proceeds - 4 cost, no residue from 4/3


@given(st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 500), st.integers(1, 50)), max_size=40),
       st.integers(1, 500))
def test_realized_plus_unrealized_equals_cash_plus_value(trades: list[tuple[str, int, int]], mark: int) -> None:
    pos = Position()
    for side, price, size in trades:
        pos.apply(side, price * SCALE, size * SCALE, 0)
    assert pos.realized + pos.unrealized(mark * SCALE) == pos.total_pnl(mark * SCALE)


def test_accounts_and_instruments_are_separate() -> None:
    led = Ledger()
    led.apply_fill(fill("BUY", 10.0, 1.0, robot="a"))
    led.apply_fill(fill("SELL", 10.0, 1.0, robot="b"))
    led.apply_fill(fill("BUY", 5.0, 2.0, robot="a", inst="ETHUSDT"))
    led.mark("BTCUSDT", to_units(11.0))
    assert led.position("a", "BTCUSDT").quantity == to_units(1.0)
    assert led.position("b", "BTCUSDT").quantity == to_units(-1.0)
    assert led.equity("a") == money("1")
    assert led.equity("b") == money("-1")
    assert [k for k, _ in led.items()] == [("a", "BTCUSDT"), ("a", "ETHUSDT"), ("b", "BTCUSDT")]


def test_max_drawdown() -> None:
    assert max_drawdown([]) == 0
    assert max_drawdown([0, 5, 3, 8, 1, 4, 9]) == 7  # 8 -> 1
    assert max_drawdown([10, 9, 8]) == 2
    assert max_drawdown([1, 2, 3]) == 0
    tracker = DrawdownTracker()
    for v in (0, -4, 2, -1):
        tracker.update(v)
    assert tracker.max_drawdown == 4
    assert tracker.peak == 2


@given(st.integers(1, 10**15), st.integers(1, 10**13), st.fractions(min_value=-1, max_value=1, max_denominator=10**6))
def test_fee_units_rounds_half_even_like_exact_arithmetic(price_u: int, size_u: int, rate: Fraction) -> None:
    assert fee_units(price_u, size_u, rate) == round(Fraction(price_u * size_u) * rate / SCALE)


def test_fee_units_ties() -> None:
    half = Fraction(1, 2)  # price p units * size SCALE units * 1/2 / SCALE -> exactly p/2 units
    assert fee_units(1, SCALE, half) == 0
    assert fee_units(3, SCALE, half) == 2  # 1.5 -> 2
    assert fee_units(5, SCALE, half) == 2  # 2.5 -> 2
    assert fee_units(5, SCALE, -half) == -2


def test_position_snapshot_event() -> None:
    pos = Position()
    pos.apply("BUY", to_units(100.0), to_units(2.0), 0)
    pos.apply("BUY", to_units(101.0), to_units(1.0), 0)
    pos.apply("SELL", to_units(103.0), to_units(1.0), 0)
    avg = Fraction(301, 3)  # (2 x 100 + 101) / 3
    pos.mark = to_units(102.0)
    snap = snapshot("r1", "sim", "BTCUSDT", pos, 42)
    assert snap == PositionSnapshot("r1", "sim", "BTCUSDT", 42, 42, 2.0, float(avg), float(103 - avg),
                                    float((102 - avg) * 2))
