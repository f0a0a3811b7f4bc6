"""Betfair's trading rules and messages for the live venue, pure: intents -> instructions, answers -> reports.

`producers.betfair.trading.BetfairVenue` does the I/O; everything it decides about what a Betfair
message means is here, tested without sockets.

Mapping of an intent (`PlaceOrder`) to a Betfair `PlaceInstruction`:

| intent                              | Betfair                                                            |
| ----------------------------------- | ------------------------------------------------------------------ |
| side BUY / SELL                     | BACK / LAY                                                         |
| LIMIT, DAY / GTC                    | `limitOrder` {size, price, persistenceType LAPSE / PERSIST}       |
| LIMIT, IOC                          | `limitOrder` timeInForce FILL_OR_KILL, minFillSize 0               |
| LIMIT, FOK                          | `limitOrder` timeInForce FILL_OR_KILL, minFillSize = size          |
| MARKET                              | `marketOnCloseOrder` {liability: size} (BSP: a BACK's liability is |
|                                     | its stake, a LAY's is what it can lose; the intent's size is that) |
| LIMIT_ON_CLOSE                      | `limitOnCloseOrder` {liability: size, price} (BSP with a limit: a  |
|                                     | BACK takes an SP of at least price, a LAY of at most price)        |
| LIMIT_MAKER                         | refused: Betfair has no post-only order                            |
| client order id / run ref           | `customerOrderRef` / `customerStrategyRef` (<= 32 / 15 chars)      |

A report's status from Betfair's order state: EXECUTABLE -> "open" (partly matched or not);
EXECUTION_COMPLETE -> "filled" when nothing was cancelled, lapsed or voided, "expired" when the
unmatched rest lapsed (market turned in-play, FILL_OR_KILL rest), else "cancelled" (the reason
names the cancelled/lapsed/voided sizes). `matched`/`avg_price` are Betfair's cumulative
`sizeMatched`/`averagePriceMatched` of that bet.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from producers.betfair.orders import instrument_id
from robots.live.exchange import OrderReport, Refusal, Status, is_client_order_id
from robots.sim.betfair_money import CLASSIC_LADDER
from robots.sim.betfair_state import parse_instrument
from ticktape.events import PlaceOrder, ReplaceOrder, Side

__all__ = [
    "CONTROL",
    "check",
    "customer_ref",
    "place_instruction",
    "report_from_current",
    "report_from_instruction",
    "reports_from_ocm",
    "rules",
    "status_of",
]

CONTROL = "exchange_filters"
"""The name a refusal of Betfair's rules carries (the gateway's pre-trade control)."""

"""Client order ids made by ticktape (`<run>-<robot seq>-<k>`): orders of other origin are not ours."""

MAX_REF = 32  # Betfair: customerRef and customerOrderRef hold at most 32 characters
_REF_CHARS = re.compile(r"^[A-Za-z0-9:\-._+*;~]+$")  # what Betfair accepts in a customerRef


def rules(*, currency: str = "GBP", min_stake: float = 1.0, min_bsp_liability: float = 10.0) -> dict[str, Any]:
    """Betfair's trading rules as JSON-able data (what the gateway journals and `check` reads).

    Defaults: GBP accounts, minimum bet size 1.00 and minimum BSP (lay) liability 10.00 (Betfair's
    currency parameters; set others per account currency). The ladder is the CLASSIC odds ladder,
    as (upper bound, increment) pairs in hundredths of a price.
    """
    return {
        "venue": "betfair",
        "currency": currency,
        "min_stake": min_stake,
        "min_bsp_liability": min_bsp_liability,
        "min_price": 1.01,
        "max_price": 1000.0,
        "size_decimals": 2,
        "price_ladder_hundredths": [[high, step] for high, step in CLASSIC_LADDER],
    }


def _off_ladder(price: float, ladder: list[list[int]]) -> str | None:
    """Why `price` is not a tick of `ladder` (None if it is)."""
    h = round(price * 100)
    if abs(h - price * 100) > 1e-6:
        return f"price {price} has more than 2 decimals"
    low = 100
    for high, step in ladder:
        if h <= high:
            if (h - low) % step:
                below = h - (h - low) % step
                return (f"price {price} is not on Betfair's ladder: between {low / 100:g} and {high / 100:g} the "
                        f"increment is {step / 100:g} (nearest ticks {below / 100:g} and {(below + step) / 100:g})")
            return None
        low = high
    return f"price {price} is above the ladder"


def _decimals_over(size: float, decimals: int) -> bool:
    scaled = size * 10.0 ** decimals
    return abs(round(scaled) - scaled) > 1e-6


def check(rules: Mapping[str, Any], intent: PlaceOrder | ReplaceOrder) -> Refusal | None:
    """The exchange-filters control, pure: the Betfair rule `intent` breaks, or None."""
    def refuse(why: str) -> Refusal:
        return Refusal(CONTROL, why)

    if parse_instrument(intent.instrument) is None:
        return refuse(f"instrument {intent.instrument!r} is not '<market_id>:<selection_id>[:<handicap>]'")
    decimals = int(rules["size_decimals"])
    if intent.size <= 0 or _decimals_over(intent.size, decimals):
        return refuse(f"size {intent.size} must be positive with at most {decimals} decimals")
    if intent.order_type in ("MARKET", "LIMIT_ON_CLOSE"):
        # A BSP bet: the size is a liability, with its own minimum for lays.
        least = float(rules["min_stake"] if intent.side == "BUY" else rules["min_bsp_liability"])
        if intent.size < least:
            side = "back stake" if intent.side == "BUY" else "lay liability"
            return refuse(f"BSP {side} {intent.size} is below the minimum {least:g} {rules['currency']}")
        if intent.order_type == "MARKET":
            return None
        if intent.time_in_force in ("IOC", "FOK"):
            return refuse(f"a LIMIT_ON_CLOSE bet waits for the starting price: it cannot be {intent.time_in_force}")
    elif intent.order_type != "LIMIT":
        return refuse(f"order type {intent.order_type} is not offered by Betfair "
                      "(LIMIT, MARKET and LIMIT_ON_CLOSE for BSP)")
    low, high = float(rules["min_price"]), float(rules["max_price"])
    if not low <= intent.price <= high:
        return refuse(f"price {intent.price} is outside Betfair's {low:g}..{high:g}")
    off = _off_ladder(intent.price, rules["price_ladder_hundredths"])
    if off:
        return refuse(off)
    if intent.size < float(rules["min_stake"]):
        return refuse(f"size {intent.size} is below the minimum stake {float(rules['min_stake']):g} "
                      f"{rules['currency']}")
    return None


def customer_ref(raw: str) -> str:
    """A customerRef (de-duplication key) from a deterministic command id: `raw` itself when Betfair
    accepts it (<= 32 chars of its alphabet), else a stable 32-character digest of it."""
    if len(raw) <= MAX_REF and _REF_CHARS.match(raw):
        return raw
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def place_instruction(order: PlaceOrder) -> dict[str, Any]:
    """The `PlaceInstruction` of an intent (see the module table); raises ValueError for a malformed instrument."""
    parsed = parse_instrument(order.instrument)
    if parsed is None:
        raise ValueError(f"instrument {order.instrument!r} is not '<market_id>:<selection_id>[:<handicap>]'")
    _, selection_id, handicap = parsed
    instruction: dict[str, Any] = {
        "selectionId": selection_id,
        "handicap": handicap,
        "side": "BACK" if order.side == "BUY" else "LAY",
        "customerOrderRef": order.client_order_id,
    }
    if order.order_type == "MARKET":
        instruction["orderType"] = "MARKET_ON_CLOSE"
        instruction["marketOnCloseOrder"] = {"liability": order.size}
        return instruction
    if order.order_type == "LIMIT_ON_CLOSE":
        instruction["orderType"] = "LIMIT_ON_CLOSE"
        instruction["limitOnCloseOrder"] = {"liability": order.size, "price": order.price}
        return instruction
    limit: dict[str, Any] = {"size": order.size, "price": order.price}
    if order.time_in_force in ("IOC", "FOK"):
        limit["timeInForce"] = "FILL_OR_KILL"
        limit["minFillSize"] = order.size if order.time_in_force == "FOK" else 0
    else:
        limit["persistenceType"] = "PERSIST" if order.time_in_force == "GTC" else "LAPSE"
    instruction["orderType"] = "LIMIT"
    instruction["limitOrder"] = limit
    return instruction


def persistence_of(order: PlaceOrder) -> str | None:
    """The persistenceType an order rests with (None for FILL_OR_KILL and BSP orders)."""
    if order.order_type != "LIMIT" or order.time_in_force in ("IOC", "FOK"):
        return None
    return "PERSIST" if order.time_in_force == "GTC" else "LAPSE"


def status_of(complete: bool, matched: float, cancelled: float, lapsed: float, voided: float) -> tuple[Status, str]:
    """(status, reason) of a bet from Betfair's state: executable or complete, and its size breakdown."""
    parts = [f"{name} {size:g}" for name, size in (("cancelled", cancelled), ("lapsed", lapsed),
                                                    ("voided", voided)) if size]
    reason = ", ".join(parts)
    if not complete:
        return "open", reason
    if not parts:
        return ("filled", "") if matched > 0 else ("cancelled", "complete with nothing matched")
    if lapsed and not cancelled:
        return "expired", reason
    return "cancelled", reason


def ns_of(iso: object) -> int:
    """Nanoseconds of one of Betfair's ISO-8601 dates ("2023-11-14T22:30:00.000Z"); 0 when absent."""
    if not isinstance(iso, str) or not iso:
        return 0
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1_000) * 1_000_000


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _side(betfair_side: object) -> Side:
    return "BUY" if betfair_side in ("BACK", "B") else "SELL"


def report_from_current(summary: Mapping[str, Any], source: str = "query") -> OrderReport:
    """An `OrderReport` from a `CurrentOrderSummary` (listCurrentOrders)."""
    matched = _num(summary.get("sizeMatched"))
    status, reason = status_of(summary.get("status") == "EXECUTION_COMPLETE", matched,
                               _num(summary.get("sizeCancelled")), _num(summary.get("sizeLapsed")),
                               _num(summary.get("sizeVoided")))
    ts = max(ns_of(summary.get(k)) for k in ("placedDate", "matchedDate", "cancelledDate", "lapsedDate"))
    bet_id = str(summary["betId"])
    return OrderReport(
        client_order_id=str(summary.get("customerOrderRef") or bet_id), venue_order_id=bet_id,
        instrument=_instrument(summary["marketId"], summary["selectionId"], summary.get("handicap")),
        status=status, ts_event=ts, side=_side(summary.get("side")), matched=matched,
        avg_price=_num(summary.get("averagePriceMatched")) if matched else None, reason=reason, source=source)


def _instrument(market_id: object, selection_id: object, handicap: object) -> str:
    return instrument_id(str(market_id), int(str(selection_id)), _num(handicap))


def report_from_instruction(order: PlaceOrder, report: Mapping[str, Any], source: str = "rest") -> OrderReport:
    """An `OrderReport` from a successful `PlaceInstructionReport` for `order` (placeOrders, replaceOrders)."""
    matched = _num(report.get("sizeMatched"))
    size = order.size
    complete = report.get("orderStatus") == "EXECUTION_COMPLETE"
    rest = max(0.0, round(size - matched, 2))
    if not complete:
        status: Status = "open"
        reason = ""
    elif rest <= 0:
        status, reason = "filled", ""
    else:  # a FILL_OR_KILL's unmatched rest lapses at once
        status, reason = "expired", f"lapsed {rest:g}"
    return OrderReport(
        client_order_id=order.client_order_id, venue_order_id=str(report["betId"]) if report.get("betId") else None,
        instrument=order.instrument, status=status, ts_event=ns_of(report.get("placedDate")), side=order.side,
        matched=matched, avg_price=_num(report.get("averagePriceMatched")) if matched else None, reason=reason,
        source=source)


def reports_from_ocm(message: Mapping[str, Any], source: str = "stream") -> list[OrderReport]:
    """One `OrderReport` per `uo` of an order-stream change message (`op=ocm`), ticktape's orders only."""
    out: list[OrderReport] = []
    pt = message.get("pt")
    ts = int(pt) * 1_000_000 if isinstance(pt, int) else 0
    for oc in message.get("oc") or ():
        for orc in oc.get("orc") or ():
            instrument = _instrument(oc["id"], orc["id"], orc.get("hc"))
            for uo in orc.get("uo") or ():
                if not is_client_order_id(uo.get("rfo")):
                    continue
                matched = _num(uo.get("sm"))
                status, reason = status_of(uo.get("status") == "EC", matched, _num(uo.get("sc")),
                                           _num(uo.get("sl")), _num(uo.get("sv")))
                out.append(OrderReport(
                    client_order_id=str(uo["rfo"]), venue_order_id=str(uo["id"]), instrument=instrument,
                    status=status, ts_event=ts, side=_side(uo.get("side")), matched=matched,
                    avg_price=_num(uo.get("avp")) if matched else None, reason=reason, source=source))
    return out
