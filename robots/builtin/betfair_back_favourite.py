"""`betfair_back_favourite`: back the favourite shortly before the off, one bet per market.

The favourite is the ACTIVE runner with the lowest best available-to-back price (ties: the
first in the book's runner order). From `seconds_before_off` seconds before the market's
scheduled start (its `MarketDefinition.market_time`) and while the market is OPEN and not
in-play, the robot backs the favourite once per market: a LIMIT back of `stake` at that best
price (so it takes the price on offer), when the price lies in [`min_price`, `max_price`]. A
market whose favourite is outside the band is looked at again on the next book. One attempt
per market: a rejected or lapsed bet is not retried.

This module also holds the parameters and state shared with `betfair_lay_lowest`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from robots.api import Context, Params, Robot, RobotError, Subscription
from robots.sim.betfair_money import MAX_PRICE, MIN_PRICE, is_valid_price
from ticktape.domain import betfair_instrument
from ticktape.events import Event, MarketBook, MarketDefinition, MarketSettled, OrderFilled, RunnerBook

SEC = 1_000_000_000


@dataclass(frozen=True)
class BetfairParams(Params):
    """Stake, price band, timing and market filter of the pre-off Betfair robots."""

    stake: float = 2.0
    min_price: float = MIN_PRICE
    max_price: float = MAX_PRICE
    seconds_before_off: float = 60.0
    time_in_force: Literal["GTC", "IOC", "FOK"] = "GTC"
    topic: str = "md.betfair.market"
    market_types: tuple[str, ...] = ()
    event_type_ids: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.stake <= 0 or round(self.stake, 2) != self.stake:
            raise RobotError(f"stake must be positive with at most two decimals, got {self.stake}")
        if not MIN_PRICE <= self.min_price <= self.max_price <= MAX_PRICE:
            raise RobotError(f"need {MIN_PRICE} <= min_price <= max_price <= {MAX_PRICE}, "
                             f"got {self.min_price}..{self.max_price}")
        if self.seconds_before_off < 0:
            raise RobotError(f"seconds_before_off must be >= 0, got {self.seconds_before_off}")


@dataclass
class BetfairState:
    """Scheduled starts of the markets seen, the bet placed per market, and what it matched."""

    market_time: dict[str, int] = field(default_factory=dict)  # market id -> scheduled start, ns
    bets: dict[str, str] = field(default_factory=dict)  # market id -> client order id
    matched: dict[str, float] = field(default_factory=dict)  # client order id -> stake matched
    settled: int = 0  # markets settled


class PreOffBetfairRobot(Robot[BetfairParams, BetfairState]):
    """One bet per market, placed before the off; subclasses pick the runner, side and price."""

    params_type = BetfairParams
    venue = "betfair"
    side: ClassVar[Literal["BUY", "SELL"]] = "BUY"

    def __init__(self, params: BetfairParams | None = None, *, robot_id: str | None = None) -> None:
        super().__init__(params, robot_id=robot_id)
        self._window_ns = round(self.params.seconds_before_off * SEC)

    def subscriptions(self) -> Subscription:
        p = self.params
        return Subscription(topics=(p.topic,), market_types=p.market_types, event_type_ids=p.event_type_ids,
                            countries=p.countries)

    def init_state(self) -> BetfairState:
        return BetfairState()

    def check(self, event: Event) -> bool:
        """Only books of open, pre-off markets (and definitions, for the start times) get through."""
        if type(event) is MarketBook:
            return event.status == "OPEN" and not event.in_play
        return True

    def on_market_definition(self, state: BetfairState, event: MarketDefinition, ctx: Context) -> None:
        if event.market_id not in state.bets:
            state.market_time[event.market_id] = event.market_time

    def on_market_book(self, state: BetfairState, event: MarketBook, ctx: Context) -> None:
        market_id = event.market_id
        if market_id in state.bets:
            return
        start = state.market_time.get(market_id)
        if start is None or event.ts_event < start - self._window_ns:
            return
        pick = self.pick(event)
        if pick is None:
            return
        runner, price = pick
        p = self.params
        if not (p.min_price <= price <= p.max_price) or not is_valid_price(price):
            return
        instrument = betfair_instrument(market_id, runner.selection_id, runner.handicap)
        state.bets[market_id] = ctx.place(instrument, self.side, p.stake, order_type="LIMIT", price=price,
                                          time_in_force=p.time_in_force, reason=self.reason(runner, price))
        del state.market_time[market_id]  # not needed any more: keeps the state small

    def on_order_update(self, state: BetfairState, event: Event, ctx: Context) -> None:
        if type(event) is OrderFilled:
            fill: OrderFilled = event
            state.matched[fill.client_order_id] = round(state.matched.get(fill.client_order_id, 0.0) + fill.size, 2)
        elif type(event) is MarketSettled:
            state.settled += 1

    def pick(self, book: MarketBook) -> tuple[RunnerBook, float] | None:
        """The runner to bet on and the price (override)."""
        raise NotImplementedError

    def reason(self, runner: RunnerBook, price: float) -> str:
        """The intent's reason text (override)."""
        return ""


def lowest_priced(book: MarketBook, ladder: str) -> tuple[RunnerBook, float] | None:
    """The ACTIVE runner whose best price on `ladder` (available_to_back or available_to_lay)
    is lowest, with that price; ties go to the first in the book's runner order."""
    best: RunnerBook | None = None
    best_price = 0.0
    for r in book.runners:
        levels = getattr(r, ladder)
        if r.status == "ACTIVE" and levels:
            price = levels[0].price
            if best is None or price < best_price:
                best, best_price = r, price
    return None if best is None else (best, best_price)


class BetfairBackFavourite(PreOffBetfairRobot):
    """Backs the runner with the lowest best back price at that price, once per market."""

    name = "betfair_back_favourite"
    side = "BUY"

    def pick(self, book: MarketBook) -> tuple[RunnerBook, float] | None:
        return lowest_priced(book, "available_to_back")

    def reason(self, runner: RunnerBook, price: float) -> str:
        return f"back favourite {runner.selection_id} at {price}"
