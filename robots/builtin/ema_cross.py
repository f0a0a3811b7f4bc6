"""`ema_cross`: long when the fast EMA crosses above the slow one, flat when it crosses below.

Works on trades (price) or bars (close). EMAs use alpha = 2 / (n + 1), seeded with the first
price. A cross is judged on the sign of (fast - slow): going from <= 0 to > 0 is a cross up
(buy `size` at market when flat), going from >= 0 to < 0 a cross down (sell the position at
market). No signal before `warmup` prices (default: the slow period) have been seen.
Orders are market orders; the position is tracked from fills, so a rejected order leaves the
robot flat and an in-flight order is not duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass

from robots.api import Context, Params, Robot, RobotError, Subscription
from ticktape.events import Bar, Event, OrderFilled, Trade


@dataclass(frozen=True)
class EmaCrossParams(Params):
    """Periods, order size, instrument filter and topics."""

    fast: int = 10
    slow: int = 50
    size: float = 1.0
    instrument: str = ""
    topic: str = "md.sim.trade"
    warmup: int = 0

    def validate(self) -> None:
        if not 0 < self.fast < self.slow:
            raise RobotError(f"ema_cross needs 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        if self.size <= 0:
            raise RobotError(f"ema_cross size must be > 0, got {self.size}")


@dataclass
class EmaCrossState:
    """EMAs, the sign of the last difference, the position from fills and the order in flight."""

    fast: float = 0.0
    slow: float = 0.0
    seen: int = 0
    above: int = 0  # sign of fast - slow after the last price: 1, -1 or 0
    position: float = 0.0
    pending: str = ""  # client order id in flight ('' if none)


class EmaCross(Robot[EmaCrossParams, EmaCrossState]):
    """EMA(fast) / EMA(slow) crossover, long-only, market orders."""

    name = "ema_cross"
    params_type = EmaCrossParams

    def __init__(self, params: EmaCrossParams | None = None, *, robot_id: str | None = None) -> None:
        super().__init__(params, robot_id=robot_id)
        p = self.params
        self._af = 2.0 / (p.fast + 1)
        self._as = 2.0 / (p.slow + 1)
        self._warmup = p.warmup or p.slow

    def subscriptions(self) -> Subscription:
        p = self.params
        return Subscription(topics=(p.topic,), instruments=(p.instrument,) if p.instrument else ())

    def init_state(self) -> EmaCrossState:
        return EmaCrossState()

    def on_trade(self, s: EmaCrossState, event: Trade, ctx: Context) -> None:
        # the per-trade hot path: `on_price` inlined (same arithmetic, same order)
        price = event.price
        if s.seen:
            fast = s.fast = s.fast + self._af * (price - s.fast)
            slow = s.slow = s.slow + self._as * (price - s.slow)
        else:
            fast = slow = s.fast = s.slow = price
        s.seen += 1
        sign = 1 if fast > slow else (-1 if fast < slow else 0)
        if sign != s.above:
            self._cross(s, sign, event.instrument, ctx)

    def on_bar(self, state: EmaCrossState, event: Bar, ctx: Context) -> None:
        self.on_price(state, event.close, event.instrument, ctx)

    def on_price(self, s: EmaCrossState, price: float, instrument: str, ctx: Context) -> None:
        """One price: update both EMAs, then act on a cross (see the module doc)."""
        if s.seen:
            fast = s.fast = s.fast + self._af * (price - s.fast)
            slow = s.slow = s.slow + self._as * (price - s.slow)
        else:
            fast = slow = s.fast = s.slow = price
        s.seen += 1
        sign = 1 if fast > slow else (-1 if fast < slow else 0)
        if sign != s.above:
            self._cross(s, sign, instrument, ctx)

    def _cross(self, s: EmaCrossState, sign: int, instrument: str, ctx: Context) -> None:
        prev = s.above
        s.above = sign
        if s.seen < self._warmup or s.pending:
            return
        if sign > 0 >= prev and s.position <= 0:
            s.pending = ctx.buy(instrument, self.params.size, reason="ema cross up")
        elif sign < 0 <= prev and s.position > 0:
            s.pending = ctx.sell(instrument, s.position, reason="ema cross down")

    def on_order_update(self, state: EmaCrossState, event: Event, ctx: Context) -> None:
        if type(event) is OrderFilled:
            fill: OrderFilled = event
            state.position += fill.size if fill.side == "BUY" else -fill.size
            state.position = round(state.position, 9)
            if fill.leaves_size <= 0 and fill.client_order_id == state.pending:
                state.pending = ""
        elif getattr(event, "client_order_id", None) == state.pending and type(event).__name__ != "OrderAccepted":
            state.pending = ""  # rejected, cancelled or expired: nothing in flight any more
