"""`betfair_lay_lowest`: lay the lowest-priced runner under a price threshold before the off.

The lowest-priced runner is the ACTIVE runner with the lowest best available-to-lay price
(ties: the first in the book's runner order). From `seconds_before_off` seconds before the
market's scheduled start, while the market is OPEN and not in-play, the robot lays it once per
market: a LIMIT lay of `stake` (the backer's stake; the liability is stake x (price - 1)) at that
best lay price, when it lies in [`min_price`, `max_price`] — `max_price` is the threshold that
caps the liability. A market whose lowest price is above the threshold is looked at again on the
next book; one attempt per market (a rejected or lapsed bet is not retried).
"""

from __future__ import annotations

from robots.builtin.betfair_back_favourite import BetfairParams, PreOffBetfairRobot, lowest_priced
from ticktape.events import MarketBook, RunnerBook

__all__ = ["BetfairLayLowest", "BetfairParams"]


class BetfairLayLowest(PreOffBetfairRobot):
    """Lays the runner with the lowest best lay price at that price, once per market."""

    name = "betfair_lay_lowest"
    side = "SELL"

    def pick(self, book: MarketBook) -> tuple[RunnerBook, float] | None:
        return lowest_priced(book, "available_to_lay")

    def reason(self, runner: RunnerBook, price: float) -> str:
        return f"lay lowest-priced runner {runner.selection_id} at {price}"
