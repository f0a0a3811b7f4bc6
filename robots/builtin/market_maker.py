"""`market_maker`: quotes a bid and an ask around the mid, within inventory limits.

On every quote (or book snapshot / delta top of book) the robot computes the mid and its
target prices: bid = mid x (1 - half_spread_bps / 1e4) rounded down to the tick, ask = mid x
(1 + half_spread_bps / 1e4) rounded up to the tick. Per side it keeps at most one limit order
(GTC):
- no order on the side and the side is allowed -> place `size` at the target;
- an order resting at a price `requote_ticks` or more ticks away from the target -> replace it;
- the side is not allowed any more -> cancel it.
A side is allowed while a fill of `size` keeps |inventory| <= `max_inventory` (the bid stops at
+max_inventory, the ask at -max_inventory). A side waits for the venue's answer to its last
request before sending another one. Inventory comes from fills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from robots.api import Context, Params, Robot, RobotError, Subscription
from ticktape.events import BookDelta, BookSnapshot, Event, OrderFilled, Quote, Side


@dataclass(frozen=True)
class MarketMakerParams(Params):
    """Quote width, size, inventory limit, tick, requote threshold, instrument and topics."""

    instrument: str = ""
    topic: str = "md.sim.quote"
    half_spread_bps: float = 10.0
    size: float = 1.0
    max_inventory: float = 5.0
    tick: float = 0.01
    requote_ticks: int = 1

    def validate(self) -> None:
        if self.half_spread_bps <= 0 or self.size <= 0 or self.tick <= 0 or self.max_inventory < 0:
            raise RobotError("market_maker needs half_spread_bps, size, tick > 0 and max_inventory >= 0")
        if self.requote_ticks < 1:
            raise RobotError("market_maker requote_ticks must be >= 1")


@dataclass
class Quoted:
    """One side's order: id, price, size, whether it rests, whether a request is in flight."""

    coid: str = ""
    price: float = 0.0
    size: float = 0.0
    live: bool = False
    pending: bool = False


@dataclass
class MarketMakerState:
    """Inventory from fills, the last mid, and the two sides."""

    inventory: float = 0.0
    mid: float = 0.0
    bid: Quoted = field(default_factory=Quoted)
    ask: Quoted = field(default_factory=Quoted)
    filled_buy: float = 0.0
    filled_sell: float = 0.0


class MarketMaker(Robot[MarketMakerParams, MarketMakerState]):
    """Two-sided quoting with inventory limits (limit orders, GTC)."""

    name = "market_maker"
    params_type = MarketMakerParams

    def subscriptions(self) -> Subscription:
        p = self.params
        return Subscription(topics=(p.topic,), instruments=(p.instrument,) if p.instrument else ())

    def init_state(self) -> MarketMakerState:
        return MarketMakerState()

    # -- market data ----------------------------------------------------------------------
    def on_quote(self, state: MarketMakerState, event: Quote, ctx: Context) -> None:
        if event.bid_price > 0 and event.ask_price > 0:
            self._quote(state, (event.bid_price + event.ask_price) / 2, event.instrument, ctx)

    def on_book(self, state: MarketMakerState, event: BookDelta | BookSnapshot, ctx: Context) -> None:
        if event.bids and event.asks:
            bid = max(lv.price for lv in event.bids if lv.size > 0) if any(lv.size > 0 for lv in event.bids) else 0
            ask = min(lv.price for lv in event.asks if lv.size > 0) if any(lv.size > 0 for lv in event.asks) else 0
            if bid > 0 and ask > 0:
                self._quote(state, (bid + ask) / 2, event.instrument, ctx)

    def targets(self, mid: float) -> tuple[float, float]:
        """(bid, ask) target prices for a mid, on the tick grid."""
        p = self.params
        h = p.half_spread_bps / 10_000
        bid_ticks = math.floor(mid * (1 - h) / p.tick + 1e-9)
        ask_ticks = math.ceil(mid * (1 + h) / p.tick - 1e-9)
        return round(bid_ticks * p.tick, 10), round(ask_ticks * p.tick, 10)

    def _quote(self, s: MarketMakerState, mid: float, instrument: str, ctx: Context) -> None:
        p = self.params
        s.mid = mid
        bid, ask = self.targets(mid)
        self._side(s.bid, "BUY", bid, s.inventory + p.size <= p.max_inventory + 1e-12, instrument, ctx)
        self._side(s.ask, "SELL", ask, s.inventory - p.size >= -p.max_inventory - 1e-12, instrument, ctx)

    def _side(self, q: Quoted, side: Side, target: float, allowed: bool, instrument: str, ctx: Context) -> None:
        p = self.params
        if q.pending:
            return
        if not q.live:
            if allowed:
                q.coid = ctx.place(instrument, side, p.size, order_type="LIMIT", price=target, reason="quote")
                q.price, q.size, q.pending = target, p.size, True
            return
        if not allowed:
            ctx.cancel(q.coid, instrument, reason="inventory limit")
            q.pending = True
        elif abs(target - q.price) >= p.requote_ticks * p.tick - 1e-12:
            ctx.replace(q.coid, instrument, side, q.size, target, reason="requote")
            q.price, q.pending = target, True

    # -- order updates ----------------------------------------------------------------------
    def on_order_update(self, state: MarketMakerState, event: Event, ctx: Context) -> None:
        coid = getattr(event, "client_order_id", None)
        q = state.bid if coid == state.bid.coid else state.ask if coid == state.ask.coid else None
        if q is None:
            return
        name = type(event).__name__
        if name == "OrderAccepted":
            q.live, q.pending = True, False
        elif name == "OrderFilled":
            fill: OrderFilled = event  # type: ignore[assignment]
            signed = fill.size if fill.side == "BUY" else -fill.size
            state.inventory = round(state.inventory + signed, 9)
            if fill.side == "BUY":
                state.filled_buy = round(state.filled_buy + fill.size, 9)
            else:
                state.filled_sell = round(state.filled_sell + fill.size, 9)
            q.size = round(fill.leaves_size, 9)
            if fill.leaves_size <= 0:
                q.live, q.pending, q.coid = False, False, ""
        elif name == "OrderRejected" and q.live:
            q.pending = False  # a refused replace or cancel: the order still rests as it was
        else:  # cancelled, expired, or a rejected new order
            q.live, q.pending, q.coid = False, False, ""
