"""Risk-adjusted metrics of a run: the definitions shared by the backtest summary and the analyzer.

The definition lives in SQL (`analyzer.run_metrics`: views `equity_points`, `daily_equity`,
`run_metrics`); this module is the same arithmetic in-process so `ticktape backtest` can print the
figures without DuckDB. `tests/unit/analyzer/test_one_number_per_metric.py` holds the two equal
on real runs.

- Equity is the run's PnL (quote currency) at every fill and every mark, starting at 0.
- Max drawdown: the largest fall of equity from its running peak (the peak starts at 0).
- Daily equity: equity at the end of each UTC day from the run's first to its last day (a day
  without a fill or mark carries the previous close; before the first point equity is 0).
- Daily return: the change of daily equity from the previous day's close (the first day's is
  its close). Without a starting capital this is PnL, not a percentage; the ratios below are the
  same as on returns over any fixed capital.
- Sharpe = mean / sample standard deviation of daily returns x sqrt(365); Sortino = mean /
  downside deviation (root mean square of min(return, 0) over all days) x sqrt(365). 365, not
  252: crypto trades every day and Betfair markets run at weekends.
- Both are undefined (None / NULL, printed "n/a" with the reason) with fewer than
  `MIN_DAILY_RETURNS` days, or when the denominator is 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

DAY_NS = 86_400 * 1_000_000_000
PERIODS_PER_YEAR = 365
"""Annualisation: sqrt(365) daily periods (markets open every day)."""
MIN_DAILY_RETURNS = 7
"""Fewer daily returns than this (a week) leave Sharpe and Sortino undefined. Two would be the
arithmetic minimum, but a five-hour run that crosses midnight would then get a "Sharpe" from
two partial days (the demo's ema_cross run did: -30); a week is the least we print a ratio for."""


@dataclass(frozen=True, slots=True)
class DailyRatios:
    """Sharpe and Sortino of a run's daily returns, or None with the reason."""

    days: int
    sharpe: float | None
    sortino: float | None
    sharpe_note: str | None
    sortino_note: str | None


def too_few_days_note(days: int) -> str:
    """The reason printed for an undefined ratio on a short run (the SQL view builds the same text)."""
    return f"fewer than {MIN_DAILY_RETURNS} daily returns ({days} day{'' if days == 1 else 's'})"


def daily_returns(closes: Mapping[int, Decimal], start_ts: int, end_ts: int) -> list[float]:
    """Daily returns from {UTC day number: equity at that day's last point}, over the run's days.

    Days without a point carry the last close forward, so a quiet day is a return of 0. Each
    return is the exact difference of two closes, then a float (as the SQL casts it)."""
    first, last = start_ts // DAY_NS, max(end_ts, start_ts) // DAY_NS
    out = []
    prev = close = Decimal(0)
    for day in range(first, last + 1):
        close = closes.get(day, close)
        out.append(float(close - prev))
        prev = close
    return out


def daily_ratios(returns: list[float]) -> DailyRatios:
    """Sharpe and Sortino (annualised by sqrt(PERIODS_PER_YEAR)) of daily returns, as the SQL computes them."""
    n = len(returns)
    if n < MIN_DAILY_RETURNS:
        note = too_few_days_note(n)
        return DailyRatios(n, None, None, note, note)
    mean = sum(returns) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1))
    down = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / n)
    scale = math.sqrt(PERIODS_PER_YEAR)
    sharpe = mean / std * scale if std > 0 else None
    sortino = mean / down * scale if down > 0 else None
    return DailyRatios(n, sharpe, sortino, None if sharpe is not None else "daily returns do not vary",
                       None if sortino is not None else "no losing day")


def ratio_text(value: float | None, note: str | None) -> str:
    """A ratio for people: 3 decimals, or 'n/a (reason)'."""
    return f"{value:.3f}" if value is not None else f"n/a ({note})"
