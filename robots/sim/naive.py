"""A minimal venue: fills at the last traded price (or quote mid). For tests and quick looks only.

The realistic crypto venue (book walking, queue position, stop orders) is `robots.sim.crypto`.
This one is deliberately simple so the runner can be tested without it: a market order fills
in full at the last price seen at its arrival; a limit order fills at once when the last price
is at or through its limit, else rests until a trade prints at or through its limit, then fills
in full at the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from robots.sim.base import Intent
from ticktape.events import (
    Bar,
    CancelOrder,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    Quote,
    Trade,
)


@dataclass
class NaiveVenue:
    """Fill-at-last-price venue with fixed latency and a fee in basis points of notional."""

    latency: int = 0
    fee_bps: float = 0.0
    name: str = "naive"

    def __post_init__(self) -> None:
        self._last: dict[str, float] = {}
        self._resting: dict[str, PlaceOrder] = {}
        self._fills = 0

    def config(self) -> dict[str, object]:
        """What the run manifest records."""
        return {"venue": self.name, "latency_ns": self.latency, "fee_bps": self.fee_bps}

    def latency_ns(self, intent: Intent) -> int:
        """The same latency for every intent."""
        return self.latency

    def on_market(self, event: Event) -> Sequence[Event]:
        """Remember the last price; fill resting limits the print crosses."""
        t = type(event)
        if t is Trade:
            price: float = event.price  # type: ignore[union-attr,assignment]
        elif t is Quote:
            price = (event.bid_price + event.ask_price) / 2  # type: ignore[union-attr]
        elif t is Bar:
            price = event.close  # type: ignore[union-attr]
        else:
            return ()
        instrument: str = event.instrument  # type: ignore[union-attr]
        self._last[instrument] = price
        if not self._resting:
            return ()
        out: list[Event] = []
        for coid, order in list(self._resting.items()):
            if order.instrument == instrument and self._crosses(order, price):
                del self._resting[coid]
                out.append(self._fill(order, order.price, event.ts_event, "MAKER"))
        return out

    @staticmethod
    def _crosses(order: PlaceOrder, price: float) -> bool:
        return price <= order.price if order.side == "BUY" else price >= order.price

    def _fill(self, order: PlaceOrder, price: float, ts: int, liquidity: str) -> OrderFilled:
        self._fills += 1
        fee = round(price * order.size * self.fee_bps / 10_000, 9)
        return OrderFilled(order.robot, order.client_order_id, None, order.venue, order.instrument, ts, ts,
                           f"{self.name}-{self._fills}", order.side, price, order.size, fee,
                           liquidity, 0.0)  # type: ignore[arg-type]

    def on_intent(self, intent: Intent, arrival_ts: int) -> Sequence[Event]:
        """Accept and fill (or rest) orders; cancel or replace resting ones."""
        ts = arrival_ts
        if type(intent) is PlaceOrder:
            order: PlaceOrder = intent
            last = self._last.get(order.instrument)
            if order.order_type == "MARKET":
                if last is None:
                    return [OrderRejected(order.robot, order.client_order_id, None, order.venue, order.instrument,
                                          ts, ts, "no market price yet")]
                return [self._accepted(order, ts), self._fill(order, last, ts, "TAKER")]
            if order.order_type != "LIMIT":
                return [OrderRejected(order.robot, order.client_order_id, None, order.venue, order.instrument,
                                      ts, ts, f"{order.order_type} not supported by the naive venue")]
            if last is not None and self._crosses(order, last):
                return [self._accepted(order, ts), self._fill(order, last, ts, "TAKER")]
            self._resting[order.client_order_id] = order
            return [self._accepted(order, ts)]
        resting = self._resting.pop(intent.client_order_id, None)
        if resting is None:
            return [OrderRejected(intent.robot, intent.client_order_id, None, intent.venue, intent.instrument, ts, ts,
                                  "unknown or already closed order")]
        if type(intent) is CancelOrder:
            return [OrderCancelled(intent.robot, intent.client_order_id, None, intent.venue, intent.instrument, ts, ts,
                                   "cancelled by request")]
        replaced = resting._replace(price=intent.price, size=intent.size)  # type: ignore[union-attr]
        self._resting[intent.client_order_id] = replaced
        return [self._accepted(replaced, ts)]

    @staticmethod
    def _accepted(order: PlaceOrder, ts: int) -> OrderAccepted:
        return OrderAccepted(order.robot, order.client_order_id, None, order.venue, order.instrument, ts, ts)
