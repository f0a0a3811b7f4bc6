"""Binance's order and account answers (REST and user-data stream) as the gateway's reports: pure functions.

What an execution type or an order status means is `producers.binance.parsers`' table
(`EXECUTION_KINDS`, `ORDER_STATUSES`), shared with the recorder's parsers; so are the rules of
ticktape's venue client ids (`<coid>.<n>` for replacement n: reports carry the original coid).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from producers.binance.parsers import (
    ORDER_STATUSES,
    REPLACE_CANCEL,
    execution_kind,
    original_client_order_id,
    to_ns,
)
from robots.live.exchange import AccountReport, Fill, OrderReport, Status
from ticktape.events import Side


def status_of(x: str) -> Status:
    """The gateway's status of Binance's order status `X`/`status` ("unknown" for one not in the table)."""
    return cast(Status, ORDER_STATUSES.get(x, "unknown"))


def _side(value: Any) -> Side | None:
    return cast(Side, value) if value in ("BUY", "SELL") else None


def _ms(value: Any) -> int:
    return to_ns(value) if value not in (None, "", 0) else 0


def fill_of_trade(t: Mapping[str, Any]) -> Fill:
    """A `myTrades` (spot) or `userTrades` (futures) row as a Fill (fee in the commission asset)."""
    maker = t.get("isMaker", t.get("maker", False))
    return Fill(fill_id=str(t["id"]), price=float(t["price"]), size=float(t["qty"]),
                fee=float(t.get("commission", 0) or 0), liquidity="MAKER" if maker else "TAKER",
                ts_event=_ms(t.get("time")))


def order_report(o: Mapping[str, Any], *, source: str, fills: Iterable[Fill] = (), reason: str = "") -> OrderReport:
    """A REST order answer (place, cancel, query, open orders; spot or futures) as an OrderReport.

    Spot FULL answers list their fills (`fills`, no time or maker flag: fills in the answer of a
    new order are the taker's, at the transaction time).
    """
    coid = original_client_order_id(str(o.get("origClientOrderId") or o.get("clientOrderId", "")))
    ts = _ms(o.get("updateTime") or o.get("transactTime") or o.get("time"))
    got = list(fills)
    for f in o.get("fills") or ():
        got.append(Fill(fill_id=str(f["tradeId"]), price=float(f["price"]), size=float(f["qty"]),
                        fee=float(f.get("commission", 0) or 0), liquidity="TAKER", ts_event=ts))
    return OrderReport(client_order_id=coid, venue_order_id=str(o["orderId"]), instrument=str(o["symbol"]),
                       status=status_of(str(o.get("status", ""))), ts_event=ts, side=_side(o.get("side")),
                       fills=tuple(got), reason=reason, source=source)


def stream_reports(payload: Mapping[str, Any]) -> list[OrderReport | AccountReport]:
    """A user-data message (spot via the WebSocket API, futures via a listen key) as reports (source "stream").

    executionReport / ORDER_TRADE_UPDATE -> an OrderReport (a fill when the execution is a trade);
    outboundAccountPosition -> balances (free + locked per asset); ACCOUNT_UPDATE -> positions
    (signed `pa`) and wallet balances. Account reports of the stream name only what changed.
    Other messages (listenKeyExpired, balanceUpdate, ...) give no report: the caller handles them.
    """
    p: Mapping[str, Any] = payload.get("event", payload) if isinstance(payload.get("event"), Mapping) else payload
    kind = p.get("e")
    if kind == "executionReport":
        return _execution(p, p, str(p.get("r", "")))
    if kind == "ORDER_TRADE_UPDATE":
        return _execution(p["o"], p, "")
    if kind == "outboundAccountPosition":
        balances = {str(b["a"]): float(b["f"]) + float(b["l"]) for b in p.get("B") or ()}
        return [AccountReport(ts_event=_ms(p.get("u") or p.get("E")), balances=balances, source="stream")]
    if kind == "ACCOUNT_UPDATE":
        a = p.get("a") or {}
        return [AccountReport(ts_event=_ms(p.get("T") or p.get("E")),
                              positions={str(x["s"]): float(x["pa"]) for x in a.get("P") or ()},
                              balances={str(b["a"]): float(b["wb"]) for b in a.get("B") or ()}, source="stream")]
    return []


def _execution(o: Mapping[str, Any], outer: Mapping[str, Any], reason: str) -> list[OrderReport | AccountReport]:
    x = str(o.get("x", ""))
    what = str(outer.get("e"))
    kind = execution_kind(x, what)
    if x == "CANCELED" and REPLACE_CANCEL.match(str(o.get("c", ""))):
        return []  # the cancel half of our cancel-replace: the order goes on as its next version
    cid = str(o.get("C") or o["c"]) if x == "CANCELED" else str(o["c"])
    ts = _ms(o.get("T") or outer.get("T") or outer.get("E"))
    fills: tuple[Fill, ...] = ()
    if kind == "filled":
        fills = (Fill(fill_id=str(o["t"]), price=float(o["L"]), size=float(o["l"]), fee=float(o.get("n") or 0),
                      liquidity="MAKER" if o.get("m") else "TAKER", ts_event=ts),)
    if kind in ("rejected", "expired") and not reason:
        reason = kind
    return [OrderReport(client_order_id=original_client_order_id(cid), venue_order_id=str(o["i"]),
                        instrument=str(o["s"]), status=status_of(str(o.get("X", ""))), ts_event=ts,
                        side=_side(o.get("S")), fills=fills, reason="" if reason == "NONE" else reason,
                        source="stream")]
