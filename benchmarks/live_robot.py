"""The live benchmark's robot (a module of its own: robots pass the purity check)."""

from __future__ import annotations

from dataclasses import dataclass

from robots.api import Context, Params, Robot, Subscription
from ticktape.events import Event, Trade


@dataclass(frozen=True)
class EveryTradeParams(Params):
    """Which topic to follow; an order every `every` trades (0: none, the restart benchmark's run,
    which has no gateway to close its orders)."""

    topic: str = "md.bench.trade"
    every: int = 1


@dataclass
class EveryTradeState:
    trades: int = 0
    orders: int = 0
    answers: int = 0


class EveryTrade(Robot[EveryTradeParams, EveryTradeState]):
    """One tiny market buy per trade: every market event makes an intent and a venue answer."""

    name = "every_trade"
    params_type = EveryTradeParams

    def subscriptions(self) -> Subscription:
        return Subscription(topics=(self.params.topic,))

    def init_state(self) -> EveryTradeState:
        return EveryTradeState()

    def on_trade(self, state: EveryTradeState, event: Trade, ctx: Context) -> None:
        state.trades += 1
        if self.params.every and state.trades % self.params.every == 0:
            ctx.buy(event.instrument, 0.001)
            state.orders += 1

    def on_order_update(self, state: EveryTradeState, event: Event, ctx: Context) -> None:
        state.answers += 1
