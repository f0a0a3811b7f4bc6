"""The gateway's view of its orders at a real venue, pure: intents become commands, reports become events.

`VenueOrders` is the part of the gateway's fold that speaks to a real venue (see
`robots.live.exchange`). It is deterministic (it reads no clock and calls nothing), so the
gateway's journal replays it exactly:

- `place` / `replace` / `cancel` record what was asked and return the `Command` for the sender.
- `apply(report)` compares what the venue says of an order with what is known and returns only
  the new facts as events for `orders.event`: the first sign of the order at the venue
  (`OrderAccepted`, or `OrderRejected`), each fill once (by the venue's fill id, or by the
  increase of a venue order's cumulative matched size), its end (`OrderCancelled`,
  `OrderExpired`), and on a venue that settles orders (Betfair) its settlement (`BetSettled`,
  once, with the venue's profit). A report seen twice, or older than what is known, adds nothing.
- `pending()` lists, after a restart, the commands whose outcome the journal does not hold:
  the sender asks the venue about each before anything is sent again.

A replacement (Binance's cancel-replace, Betfair's replaceOrders) gives the order a new venue
order id under the same client order id: reports of an earlier venue order still count for
fills, but their status (the cancellation the replacement made) does not end the order. Until
the venue answers a replacement (a new venue order id, or a rejection), a cancellation of the
current venue order is taken as the replacement's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from robots.live.exchange import DONE, Command, OrderReport, is_client_order_id
from ticktape.events import (
    BetSettled,
    CancelOrder,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    ReplaceOrder,
)

__all__ = ["LiveOrder", "VenueOrders"]

EPS = 1e-9


@dataclass
class LiveOrder:
    """One client order id at the venue, as far as the gateway knows."""

    order: PlaceOrder  # as asked (price and size of the latest replacement)
    run_id: str
    run_ref: str
    version: int = 0  # replacements asked for
    acked_version: int = 0  # the replacement the venue's current order is (a new venue order id seen)
    acked_order: PlaceOrder | None = None  # the order as the venue has it (None: as placed)
    venue_order_ids: list[str] = field(default_factory=list)  # in the order seen; the last is current
    accepted: bool = False
    done: bool = False
    settled: bool = False  # the venue settled it (Betfair: its market's result is in)
    cancel_asked: bool = False
    fill_ids: set[str] = field(default_factory=set)
    filled: float = 0.0
    matched: dict[str, tuple[float, float]] = field(default_factory=dict)  # venue order id -> (size, notional)

    @property
    def venue_order_id(self) -> str | None:
        """The current venue order id (None before the venue answered)."""
        return self.venue_order_ids[-1] if self.venue_order_ids else None


class VenueOrders:
    """Every order this gateway sent to its venue, by client order id (see the module docstring)."""

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.orders: dict[str, LiveOrder] = {}
        self.strangers: dict[str, OrderReport] = {}  # reports of ticktape client order ids no intent here explains

    # ------------------------------------------------------------------ intents -> commands
    def place(self, intent: PlaceOrder, run_id: str, run_ref: str) -> Command:
        """Record a new order; the command that sends it."""
        self.orders[intent.client_order_id] = LiveOrder(intent, run_id, run_ref)
        return Command("place", intent, intent, 0, run_ref)

    def replace(self, intent: ReplaceOrder) -> Command | OrderRejected:
        """A replacement of an open order, or the rejection of one that is not open."""
        live = self.orders.get(intent.client_order_id)
        if live is None or live.done:
            return self._not_open(intent, "replace")
        if live.acked_order is None and live.version == 0:
            live.acked_order = live.order
        live.version += 1
        live.order = live.order._replace(price=intent.price, size=intent.size)
        return Command("replace", live.order, intent, live.version, live.run_ref)

    def cancel(self, intent: CancelOrder) -> Command | OrderRejected:
        """The cancellation of an open order, or the rejection of one that is not open."""
        live = self.orders.get(intent.client_order_id)
        if live is None or live.done:
            return self._not_open(intent, "cancel")
        live.cancel_asked = True
        return Command("cancel", live.order, intent, live.version, live.run_ref)

    def _not_open(self, intent: CancelOrder | ReplaceOrder, what: str) -> OrderRejected:
        return OrderRejected(intent.robot, intent.client_order_id, None, intent.venue, intent.instrument,
                             intent.ts_event, intent.ts_event, f"{what}: no open order {intent.client_order_id}",
                             None)

    def open_orders(self) -> list[LiveOrder]:
        """Orders not known to be done, by client order id."""
        return [o for _, o in sorted(self.orders.items()) if not o.done]

    def unsettled(self) -> list[LiveOrder]:
        """Done orders with fills the venue has not settled yet (asked about at each poll, if it settles)."""
        return [o for _, o in sorted(self.orders.items()) if o.done and not o.settled and o.filled > EPS]

    def pending(self) -> list[Command]:
        """After a restart: for every order not done, a verify (the venue is asked first; the sender sends
        again only what the venue does not have), then the cancel that was asked for, if any."""
        out: list[Command] = []
        for live in self.open_orders():
            out.append(Command("verify", live.order, live.order, live.version, live.run_ref))
            if live.cancel_asked:
                cancel = CancelOrder(live.order.robot, live.order.client_order_id, live.order.venue,
                                     live.order.instrument, live.order.ts_event, live.order.ts_event,
                                     "cancel asked before the gateway restarted")
                out.append(Command("cancel", live.order, cancel, live.version, live.run_ref))
        return out

    # ------------------------------------------------------------------ reports -> events
    def apply(self, report: OrderReport, ts_recv: int) -> tuple[str | None, list[Event]]:
        """(run id, new events) for one venue report; (None, []) for an order no intent here explains."""
        live = self.orders.get(report.client_order_id)
        if live is None:
            if report.status != "unknown" and is_client_order_id(report.client_order_id):
                self.strangers[report.client_order_id] = report  # a ticktape id this gateway never sent
            return None, []
        if report.status == "unknown":
            return live.run_id, []  # the venue has no such order (yet): the sender decides what to send
        out: list[Event] = []
        o = live.order
        ts = report.ts_event or ts_recv
        vid = report.venue_order_id
        current = self._venue_order(live, vid)
        if not live.accepted:
            live.accepted = True
            if report.status == "rejected":
                live.done = True
                out.append(OrderRejected(o.robot, o.client_order_id, vid, o.venue, o.instrument, ts, ts_recv,
                                         report.reason or "rejected by the venue", None))
                return live.run_id, out
            out.append(OrderAccepted(o.robot, o.client_order_id, vid, o.venue, o.instrument, ts, ts_recv))
        elif current == "new":
            out.append(OrderAccepted(o.robot, o.client_order_id, vid, o.venue, o.instrument, ts, ts_recv))
        self._fills(live, report, ts_recv, out)
        if report.profit is not None and not live.settled and live.filled > EPS:
            live.settled = True
            out.append(self._settled(live, report, ts, ts_recv))
        if current != "old" and report.status in DONE and not live.done:
            if report.status == "rejected":  # a replacement refused: the order stands as the venue has it
                live.version = live.acked_version
                live.order = live.acked_order or live.order
                out.append(OrderRejected(o.robot, o.client_order_id, vid, o.venue, o.instrument, ts, ts_recv,
                                         report.reason or "replacement rejected by the venue", None))
            elif report.status == "cancelled" and live.acked_version < live.version:
                pass  # the replacement cancelled this venue order; its successor is reported next
            else:
                live.done = True
                if report.status == "cancelled":
                    out.append(OrderCancelled(o.robot, o.client_order_id, vid, o.venue, o.instrument, ts, ts_recv,
                                              report.reason))
                elif report.status == "expired":
                    out.append(OrderExpired(o.robot, o.client_order_id, vid, o.venue, o.instrument, ts, ts_recv,
                                            report.reason))
        return live.run_id, out

    @staticmethod
    def _settled(live: LiveOrder, report: OrderReport, ts: int, ts_recv: int) -> BetSettled:
        """The settlement of a Betfair order (instrument `<market>:<selection>[:<handicap>]`), every bet of it."""
        o = live.order
        market_id, _, rest = o.instrument.partition(":")
        notional = sum(n for _, n in live.matched.values())
        average = notional / live.filled if notional else (report.avg_price or 0.0)
        return BetSettled(o.robot, o.client_order_id, report.venue_order_id, o.venue, o.instrument, market_id,
                          int(rest.partition(":")[0] or 0), ts, ts_recv, o.side, round(live.filled, 12),
                          round(average, 6), report.runner_status, report.profit or 0.0)

    @staticmethod
    def _venue_order(live: LiveOrder, vid: str | None) -> str:
        """"current", "new" (a replacement's first report) or "old" (a venue order since replaced)."""
        if vid is None or vid == live.venue_order_id:
            return "current"
        if vid in live.venue_order_ids:
            return "old"
        live.venue_order_ids.append(vid)
        if len(live.venue_order_ids) == 1:
            return "current"
        live.acked_version = live.version
        live.acked_order = live.order
        return "new"

    def _fills(self, live: LiveOrder, report: OrderReport, ts_recv: int, out: list[Event]) -> None:
        o = live.order
        vid = report.venue_order_id
        for f in report.fills:
            if f.fill_id in live.fill_ids or f.size <= 0:
                continue
            live.fill_ids.add(f.fill_id)
            live.filled += f.size
            out.append(OrderFilled(o.robot, o.client_order_id, vid, o.venue, o.instrument, f.ts_event or
                                   report.ts_event, ts_recv, f.fill_id, o.side, f.price, f.size, f.fee,
                                   f.liquidity, max(0.0, round(o.size - live.filled, 12))))
        if report.matched is None or vid is None:
            return
        size, notional = live.matched.get(vid, (0.0, 0.0))
        if report.matched <= size + EPS:
            return  # nothing new (or an older report)
        delta = report.matched - size
        new_notional = (report.matched * report.avg_price if report.avg_price
                        else notional + delta * o.price)
        price = round((new_notional - notional) / delta, 6)
        live.matched[vid] = (report.matched, new_notional)
        live.filled += delta
        fill_id = f"{vid}:{report.matched:.2f}"
        live.fill_ids.add(fill_id)
        out.append(OrderFilled(o.robot, o.client_order_id, vid, o.venue, o.instrument, report.ts_event or ts_recv,
                               ts_recv, fill_id, o.side, price, round(delta, 12), 0.0,
                               "TAKER" if report.source == "rest" else "MAKER",
                               max(0.0, round(o.size - live.filled, 12))))
