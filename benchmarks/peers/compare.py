"""Equal strategies must make equal decisions: checked before any speed ratio is printed.

A ratio between engines means something only when both ran the same strategy to the same
decisions. `check_orders` compares buy/sell counts of the EMA runs; `check_bets` compares every
Betfair bet (market, runner, price, size, matched). Each returns the differences as text (empty
when the engines agree); `require_equal` turns differences into `DecisionMismatch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class DecisionMismatch(Exception):
    """Two engines that should have made the same decisions did not (the message lists how)."""


@dataclass(frozen=True)
class Bet:
    """One Betfair bet as every engine reports it."""

    market_id: str
    selection_id: int
    price: float
    size: float
    matched: float

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Bet:
        """From a child's JSON dict (prices and sizes rounded to cents: Betfair's own precision)."""
        return cls(str(raw["market_id"]), int(raw["selection_id"]), round(float(raw["price"]), 2),
                   round(float(raw["size"]), 2), round(float(raw["matched"]), 2))


def side_counts(fills: Sequence[Sequence[Any]]) -> tuple[int, int]:
    """(buys, sells) of a list of [time, side, price, size] fills."""
    buys = sum(1 for f in fills if f[1] == "BUY")
    return buys, len(fills) - buys


def check_orders(counts: Mapping[str, tuple[int, int]]) -> list[str]:
    """Differences between engines' (buys, sells); the first engine is the reference."""
    items = list(counts.items())
    if not items:
        return []
    ref_name, ref = items[0]
    return [f"{name}: {b} buys / {s} sells, {ref_name}: {ref[0]} buys / {ref[1]} sells"
            for name, (b, s) in items[1:] if (b, s) != ref]


def check_bets(ours: Sequence[Bet], theirs: Sequence[Bet], names: tuple[str, str] = ("ticktape", "flumine"),
               ) -> list[str]:
    """Differences between two engines' bets, per market (one bet per market expected)."""
    diffs: list[str] = []
    a: dict[str, list[Bet]] = {}
    b: dict[str, list[Bet]] = {}
    for bet in ours:
        a.setdefault(bet.market_id, []).append(bet)
    for bet in theirs:
        b.setdefault(bet.market_id, []).append(bet)
    for m in sorted(set(a) | set(b)):
        if sorted(a.get(m, []), key=repr) != sorted(b.get(m, []), key=repr):
            diffs.append(f"{m}: {names[0]} {a.get(m, [])} {names[1]} {b.get(m, [])}")
    return diffs


def fill_price_differences(a: Sequence[Sequence[Any]], b: Sequence[Sequence[Any]]) -> int:
    """How many fills (in order) differ in price by more than half a cent: reported, not refused."""
    return sum(1 for x, y in zip(a, b, strict=False) if abs(float(x[2]) - float(y[2])) > 0.005) + abs(len(a) - len(b))


def require_equal(what: str, diffs: Sequence[str]) -> None:
    """Raise `DecisionMismatch` naming `what` and the first differences when there are any."""
    if diffs:
        shown = "\n  ".join(diffs[:20])
        more = f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else ""
        raise DecisionMismatch(f"{what}: engines disagree ({len(diffs)} differences):\n  {shown}{more}")
