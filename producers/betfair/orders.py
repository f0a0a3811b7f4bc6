"""Betfair order stream changes (`ocm`) -> order events. Pure: state is the orders seen so far.

Betfair sends each order's whole current state (`uo`: status E executable / EC complete, size
matched `sm`, remaining `sr`, cancelled `sc`, lapsed `sl`, voided `sv`, average price matched
`avp`); ticktape records what changed as events:

| Betfair, for one bet id                          | event                                         |
| ------------------------------------------------ | --------------------------------------------- |
| first seen (any status)                          | `OrderAccepted`                               |
| `sm` grew                                        | `OrderFilled` for the increase (see below)    |
| became EC with `sc`/`sl`/`sv` > 0, nothing left  | `OrderCancelled`, reason names the amounts    |
| first seen with status EXECUTION_COMPLETE        | `OrderAccepted` then the fill / cancellation  |

Fill price: the price of the increase, from the change of `avp * sm` (exact in `Decimal`, as
Betfair's 2-decimal sizes allow), falling back to the order price when `avp` is absent.
Liquidity: TAKER when the matching shows up in the same update the order is first seen (it
matched on arrival), MAKER when it matched later while resting. Commission is charged at
settlement, so `fee` is 0. Identity: `robot` = `rfs` (customer strategy ref), `client_order_id` =
`rfo` (customer order ref) or the bet id, `venue_order_id` = bet id, `instrument` =
`<market_id>:<selection_id>` (`:<handicap>` appended when the handicap is not 0).

Not events of their own: a partial cancellation (size reduced while the order stays
executable) and price/size replacements (Betfair gives the replacement a new bet id, which then
shows up as a new order); the final `OrderCancelled` reason carries the total cancelled.
The fill price is rounded to 6 decimals (the Decimal division can have more).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ticktape.events import Event, OrderAccepted, OrderCancelled, OrderFilled, Side

VENUE = "betfair"


def instrument_id(market_id: str, selection_id: int, handicap: float = 0) -> str:
    """`<market_id>:<selection_id>`, with `:<handicap>` when the runner has one."""
    if handicap:
        return f"{market_id}:{selection_id}:{handicap:g}"
    return f"{market_id}:{selection_id}"


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


class _Seen:
    __slots__ = ("client_id", "done", "matched", "notional", "robot")

    def __init__(self, robot: str, client_id: str) -> None:
        # Identity is fixed when the order is first seen: later updates may carry other refs.
        self.robot = robot
        self.client_id = client_id
        self.matched = Decimal(0)
        self.notional = Decimal(0)  # avp * sm so far: the fill price of an increase is d(notional)/d(sm)
        self.done = False


class OrderCache:
    """Every order of the stream by bet id; `apply` turns one `oc` entry into events."""

    def __init__(self) -> None:
        self.orders: dict[str, _Seen] = {}

    def apply(self, oc: dict[str, Any], ts_event: int, ts_recv: int) -> list[Event]:
        """Events for one order-market change (`oc` entry of an `ocm`)."""
        market_id = str(oc["id"])
        out: list[Event] = []
        for orc in oc.get("orc") or ():
            selection_id = int(orc["id"])
            instrument = instrument_id(market_id, selection_id, orc.get("hc", 0) or 0)
            for uo in orc.get("uo") or ():
                self._order(uo, instrument, ts_event, ts_recv, out)
        return out

    def _order(self, uo: dict[str, Any], instrument: str, ts_event: int, ts_recv: int, out: list[Event]) -> None:
        bet_id = str(uo["id"])
        seen = self.orders.get(bet_id)
        new = seen is None
        if seen is None:
            seen = self.orders[bet_id] = _Seen(str(uo.get("rfs") or ""), str(uo.get("rfo") or bet_id))
        robot, client_id = seen.robot, seen.client_id
        if new:
            out.append(OrderAccepted(robot, client_id, bet_id, VENUE, instrument, ts_event, ts_recv))
        if seen.done:
            return
        matched = _dec(uo.get("sm"))
        if matched > seen.matched:
            avp = uo.get("avp")
            notional = matched * _dec(avp) if avp is not None else seen.notional + (matched - seen.matched) * _dec(
                uo["p"])
            price = (notional - seen.notional) / (matched - seen.matched)
            side: Side = "BUY" if uo.get("side") == "B" else "SELL"
            out.append(OrderFilled(
                robot, client_id, bet_id, VENUE, instrument, ts_event, ts_recv, f"{bet_id}:{matched}", side,
                float(round(price, 6)), float(matched - seen.matched), 0.0, "TAKER" if new else "MAKER",
                float(uo.get("sr") or 0)))
            seen.matched, seen.notional = matched, notional
        if uo.get("status") == "EC":
            seen.done = True
            parts = [f"{name} {uo[key]:g}" for key, name in (("sc", "cancelled"), ("sl", "lapsed"), ("sv", "voided"))
                     if uo.get(key)]
            if parts:
                out.append(OrderCancelled(robot, client_id, bet_id, VENUE, instrument, ts_event, ts_recv,
                                          ", ".join(parts)))
