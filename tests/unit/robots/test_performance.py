"""The in-process daily ratios (robots.performance): days carried over, the minimum, the reasons.

That they equal the analyzer's SQL on real runs is tests/unit/analyzer/test_one_number_per_metric.py."""

from __future__ import annotations

import math
from decimal import Decimal

from robots.performance import DAY_NS, MIN_DAILY_RETURNS, daily_ratios, daily_returns, ratio_text


def test_daily_returns_carry_quiet_days_and_start_from_zero() -> None:
    closes = {10: Decimal("5"), 12: Decimal("2.5")}  # day 11 has no point, day 13 neither
    assert daily_returns(closes, 10 * DAY_NS + 5, 13 * DAY_NS + 1) == [5.0, 0.0, -2.5, 0.0]
    assert daily_returns({}, 3 * DAY_NS, 3 * DAY_NS) == [0.0]


def test_ratios_need_a_week_of_days() -> None:
    short = daily_ratios([1.0, -2.0, 3.0, 0.5, -1.0, 2.0])
    assert MIN_DAILY_RETURNS == 7 and short.days == 6
    assert short.sharpe is None and short.sortino is None
    assert short.sharpe_note == short.sortino_note == "fewer than 7 daily returns (6 days)"
    assert ratio_text(short.sharpe, short.sharpe_note) == "n/a (fewer than 7 daily returns (6 days))"
    rets = [1.0, -2.0, 3.0, 0.5, -1.0, 2.0, 0.25]
    week = daily_ratios(rets)
    mean = sum(rets) / 7
    std = math.sqrt(sum((r - mean) ** 2 for r in rets) / 6)
    down = math.sqrt((4.0 + 1.0) / 7)
    assert week.sharpe == mean / std * math.sqrt(365) and week.sortino == mean / down * math.sqrt(365)
    assert ratio_text(week.sharpe, None) == f"{mean / std * math.sqrt(365):.3f}"


def test_undefined_denominators_say_why() -> None:
    flat = daily_ratios([0.0] * 8)
    assert flat.sharpe is None and flat.sharpe_note == "daily returns do not vary"
    assert flat.sortino is None and flat.sortino_note == "no losing day"
    winning = daily_ratios([1.0, 2.0] * 4)
    assert winning.sharpe is not None and winning.sharpe > 0
    assert winning.sortino is None and winning.sortino_note == "no losing day"
