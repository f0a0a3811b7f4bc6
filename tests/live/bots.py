"""Small robots for the live tests (a module of its own: robots pass the purity check)."""

from __future__ import annotations

from dataclasses import dataclass

from robots.api import Context, Params, Robot, Subscription
from ticktape.events import Event, Timer, Trade


@dataclass(frozen=True)
class EveryNthParams(Params):
    """Trade every `n`-th input of `topic`; set a timer `timer_ms` later on each order (0: none); every other
    order a limit `limit_below` under the trade's price instead of a market order (0: market orders only)."""

    n: int = 10
    topic: str = "md.binance.trade"
    timer_ms: int = 0
    limit_below: float = 0.0


@dataclass
class EveryNthState:
    seen: int = 0
    orders: int = 0
    timers: int = 0
    answers: int = 0


class EveryNth(Robot[EveryNthParams, EveryNthState]):
    """Buys 0.001 at market on every n-th trade, whatever answers come back (many intents, no waiting)."""

    name = "every_nth"
    params_type = EveryNthParams

    def subscriptions(self) -> Subscription:
        return Subscription(topics=(self.params.topic,))

    def init_state(self) -> EveryNthState:
        return EveryNthState()

    def on_trade(self, state: EveryNthState, event: Trade, ctx: Context) -> None:
        state.seen += 1
        if state.seen % self.params.n == 0:
            if self.params.limit_below and state.orders % 2:
                ctx.buy(event.instrument, 0.001, price=round(event.price - self.params.limit_below, 2))
            else:
                ctx.buy(event.instrument, 0.001)
            state.orders += 1
            if self.params.timer_ms:
                ctx.set_timer("check", event.ts_event + self.params.timer_ms * 1_000_000, str(state.orders))

    def on_timer(self, state: EveryNthState, event: Timer, ctx: Context) -> None:
        state.timers += 1

    def on_order_update(self, state: EveryNthState, event: Event, ctx: Context) -> None:
        state.answers += 1


class Boom(EveryNth):
    """Fails on its third trade (a robot bug)."""

    name = "boom"

    def on_trade(self, state: EveryNthState, event: Trade, ctx: Context) -> None:
        state.seen += 1
        if state.seen == 3:
            raise ZeroDivisionError("division by zero")


@dataclass(frozen=True)
class EveryNthBetParams(Params):
    """Back `instrument` at `price` for `size` (a limit order on Betfair) on every `n`-th trade of `topic`."""

    n: int = 10
    topic: str = "md.test.tick"
    instrument: str = "1.100:11"
    price: float = 2.0
    size: float = 2.0


class EveryNthBet(Robot[EveryNthBetParams, EveryNthState]):
    """Places a Betfair back bet on every n-th trade of its topic, whatever answers come back."""

    name = "every_nth_bet"
    params_type = EveryNthBetParams
    venue = "betfair"

    def subscriptions(self) -> Subscription:
        return Subscription(topics=(self.params.topic,))

    def init_state(self) -> EveryNthState:
        return EveryNthState()

    def on_trade(self, state: EveryNthState, event: Trade, ctx: Context) -> None:
        state.seen += 1
        if state.seen % self.params.n == 0:
            ctx.buy(self.params.instrument, self.params.size, price=self.params.price)
            state.orders += 1

    def on_order_update(self, state: EveryNthState, event: Event, ctx: Context) -> None:
        state.answers += 1
