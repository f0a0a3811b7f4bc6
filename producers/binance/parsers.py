"""Pure parsers for Binance's documented websocket payloads: `payload, ts_recv -> [(topic, event)]`.

No I/O, no clock: `ts_recv` is given by the caller (the live recorder stamps it at the edge;
tests pass recorded values). The same functions run live and on recorded payloads.

Payloads handled (spot and USD-M futures field layouts):

| payload `e`               | event(s)                      | topic                |
| ------------------------- | ----------------------------- | -------------------- |
| `trade`                   | Trade (is_best_match `M`)     | md.binance.trade     |
| `aggTrade`                | Trade (trade_id = agg id, first/last trade id `f`/`l`, `M`) | md.binance.aggtrade |
| bookTicker (no `e` spot)  | Quote                         | md.binance.quote     |
| `depthUpdate`             | BookDelta                     | md.binance.book      |
| partial depth snapshot    | BookSnapshot                  | md.binance.book      |
| `kline` (closed only)     | Bar (+ `q`, `n`, `V`, `Q`)    | md.binance.bar       |
| `executionReport`         | OrderAccepted/Filled/...      | orders.event         |
| `outboundAccountPosition` | Balance per asset             | account.balance      |
| `balanceUpdate`           | CustomData (a delta)          | account.balance_update |
| `ORDER_TRADE_UPDATE` (futures) | OrderAccepted/Filled/...  | orders.event         |
| `ACCOUNT_UPDATE` (futures) | Balance per asset, PositionSnapshot per symbol | account.balance, account.position |

Times: Binance sends ms, or µs when a stream/file asks for microseconds; `to_ns` tells them
apart by magnitude. Spot `bookTicker` carries no venue time, so its ts_event is ts_recv.
A kline's ts_event is its close boundary (Binance's close time + 1 ms = next open), so a
1m bar opened at 12:00:00 has ts_event 12:01:00. In-progress kline updates (`x` false) are
superseded by the closed one and are not recorded as bars.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from robots.live.exchange import CLIENT_ORDER_ID
from ticktape.codec import finite
from ticktape.errors import ValidationError
from ticktape.events import (
    AggressorSide,
    Balance,
    Bar,
    BookDelta,
    BookSnapshot,
    CustomData,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionSnapshot,
    PriceSize,
    Quote,
    Trade,
)

VENUE = "binance"
TOPIC_TRADE = "md.binance.trade"
TOPIC_AGGTRADE = "md.binance.aggtrade"
TOPIC_QUOTE = "md.binance.quote"
TOPIC_BOOK = "md.binance.book"
TOPIC_BAR = "md.binance.bar"
TOPIC_ORDERS = "orders.event"
TOPIC_BALANCE = "account.balance"
TOPIC_BALANCE_UPDATE = "account.balance_update"
TOPIC_POSITION = "account.position"

Parsed = list[tuple[str, Event]]
RobotOf = Callable[[str], str]


class BinanceParseError(ValidationError):
    """A Binance payload that does not have the documented shape; names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)  # the message already names the field
        self.field = field


def to_ns(value: Any) -> int:
    """A Binance time (ms, or µs when requested; ns passes through) as integer ns since the epoch."""
    t = int(value)
    if t < 0:
        raise ValueError(f"negative time {t}")
    if t < 100_000_000_000_000:  # below 1e14: milliseconds (until the year 5138)
        return t * 1_000_000
    if t < 100_000_000_000_000_000:  # below 1e17: microseconds
        return t * 1_000
    return t


def _field(p: Mapping[str, Any], name: str, conv: Callable[[Any], Any], what: str) -> Any:
    try:
        value = p[name]
    except KeyError:
        raise BinanceParseError(f"{what}: missing field {name!r}", field=name) from None
    try:
        return conv(value)
    except (TypeError, ValueError) as exc:
        raise BinanceParseError(f"{what}: field {name!r}={value!r}: {exc}", field=name) from exc


def _num(value: Any) -> float:
    # Binance sends decimals as strings; float() of a decimal string is exact to 15 digits.
    if isinstance(value, bool):
        raise ValueError("expected a number")
    return finite(float(value))


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("expected true/false")


def _optional(p: Mapping[str, Any], name: str, conv: Callable[[Any], Any], what: str) -> Any:
    """`_field`, or None when the payload has no such field (or null): e.g. futures' aggTrade has no `M`."""
    return None if p.get(name) is None else _field(p, name, conv, what)


def _int(value: Any) -> int:
    # int(True) is 1 and int(1.5) is 1: an id or a count is an integer or its decimal text, nothing else.
    if isinstance(value, bool | float):
        raise ValueError("expected an integer")
    return int(value)


def _levels(p: Mapping[str, Any], name: str, what: str) -> tuple[PriceSize, ...]:
    def conv(rows: Any) -> tuple[PriceSize, ...]:
        return tuple(PriceSize(_num(r[0]), _num(r[1])) for r in rows)

    return _field(p, name, conv, what)  # type: ignore[no-any-return]


def _aggressor(buyer_is_maker: bool) -> AggressorSide:
    # The taker is the aggressor: if the buyer made the market, a seller hit it.
    return "SELL" if buyer_is_maker else "BUY"


def parse_trade(p: Mapping[str, Any], ts_recv: int) -> Parsed:
    """`<symbol>@trade`."""
    w = "trade"
    ev = Trade(VENUE, _field(p, "s", str, w), _field(p, "T", to_ns, w), ts_recv, _field(p, "p", _num, w),
               _field(p, "q", _num, w), _aggressor(_field(p, "m", _bool, w)), str(_field(p, "t", int, w)),
               is_best_match=_optional(p, "M", _bool, w))
    return [(TOPIC_TRADE, ev)]


def parse_agg_trade(p: Mapping[str, Any], ts_recv: int) -> Parsed:
    """`<symbol>@aggTrade` (and a REST `aggTrades` row): one Trade per aggregate, trade_id = the aggregate
    id, first/last trade id from `f`/`l`, is_best_match from `M` (futures sends no `M`: null)."""
    w = "aggTrade"
    ev = Trade(VENUE, _field(p, "s", str, w), _field(p, "T", to_ns, w), ts_recv, _field(p, "p", _num, w),
               _field(p, "q", _num, w), _aggressor(_field(p, "m", _bool, w)), str(_field(p, "a", int, w)),
               first_trade_id=_optional(p, "f", _int, w), last_trade_id=_optional(p, "l", _int, w),
               is_best_match=_optional(p, "M", _bool, w))
    return [(TOPIC_AGGTRADE, ev)]


def parse_book_ticker(p: Mapping[str, Any], ts_recv: int) -> Parsed:
    """`<symbol>@bookTicker` (spot has no time: ts_event = ts_recv; futures has `T`)."""
    w = "bookTicker"
    ts = _field(p, "T", to_ns, w) if "T" in p else (_field(p, "E", to_ns, w) if "E" in p else ts_recv)
    ev = Quote(VENUE, _field(p, "s", str, w), ts, ts_recv, _field(p, "b", _num, w), _field(p, "B", _num, w),
               _field(p, "a", _num, w), _field(p, "A", _num, w))
    return [(TOPIC_QUOTE, ev)]


def parse_depth_update(p: Mapping[str, Any], ts_recv: int) -> Parsed:
    """`<symbol>@depth` diff: a BookDelta with Binance's first/last update ids (U/u)."""
    return [(TOPIC_BOOK, depth_delta(p, ts_recv))]


def depth_delta(p: Mapping[str, Any], ts_recv: int) -> BookDelta:
    """The BookDelta of a `depthUpdate` (futures' `T` transaction time preferred over `E`)."""
    w = "depthUpdate"
    ts = _field(p, "T", to_ns, w) if "T" in p else _field(p, "E", to_ns, w)
    return BookDelta(VENUE, _field(p, "s", str, w), ts, ts_recv, _field(p, "U", int, w), _field(p, "u", int, w),
                     _levels(p, "b", w), _levels(p, "a", w))


def parse_depth_snapshot(p: Mapping[str, Any], ts_recv: int, symbol: str) -> BookSnapshot:
    """A REST `GET /api/v3/depth` answer or a partial-depth stream message, as a BookSnapshot.

    Spot snapshots carry no time (ts_event = ts_recv); futures ones carry `T`/`E`.
    """
    w = "depth snapshot"
    ts = _field(p, "T", to_ns, w) if "T" in p else (_field(p, "E", to_ns, w) if "E" in p else ts_recv)
    bids = _levels(p, "bids", w) if "bids" in p else _levels(p, "b", w)
    asks = _levels(p, "asks", w) if "asks" in p else _levels(p, "a", w)
    return BookSnapshot(VENUE, symbol, ts, ts_recv, _field(p, "lastUpdateId", int, w), bids, asks)


def parse_kline(p: Mapping[str, Any], ts_recv: int) -> Parsed:
    """`<symbol>@kline_<interval>`: a Bar when the kline is closed (`x`), nothing before."""
    w = "kline"
    k = _field(p, "k", dict, w)
    if not _field(k, "x", _bool, w):
        return []
    bar = Bar(VENUE, _field(k, "s", str, w), _field(k, "T", to_ns, w) + _unit_ns(k["T"]), ts_recv,
              _field(k, "i", str, w), _field(k, "o", _num, w), _field(k, "h", _num, w), _field(k, "l", _num, w),
              _field(k, "c", _num, w), _field(k, "v", _num, w), quote_volume=_optional(k, "q", _num, w),
              trades=_optional(k, "n", _int, w), taker_buy_base_volume=_optional(k, "V", _num, w),
              taker_buy_quote_volume=_optional(k, "Q", _num, w))
    return [(TOPIC_BAR, bar)]


def _unit_ns(value: Any) -> int:
    """One unit of a Binance time value in ns (1 ms or 1 µs): close time + 1 unit = the boundary."""
    return to_ns(1) if int(value) < 100_000_000_000_000 else 1_000


_ROBOT_COID = re.compile(r"(.+)-\d+-\d+")


def robot_of_client_order_id(client_order_id: str) -> str:
    """Robot attribution by ticktape's client order ids, `{robot_id}-{seq}-{k}` (robots.api);
    "" for orders placed outside ticktape (the Binance app, other programs)."""
    m = _ROBOT_COID.fullmatch(client_order_id)
    return m.group(1) if m else ""


# --------------------------------------------------------------------------- order updates
# One table each for what Binance's execution type `x` and order status `X` mean: the recorder's
# parsers below and the trading adapter (producers.binance.trading) both read them.

EXECUTION_KINDS: dict[str, str] = {
    "NEW": "accepted", "REPLACED": "accepted", "AMENDMENT": "accepted",
    "TRADE": "filled", "CALCULATED": "filled",  # CALCULATED: a futures liquidation's execution
    "CANCELED": "cancelled", "REJECTED": "rejected",
    "EXPIRED": "expired", "TRADE_PREVENTION": "expired",
}
"""Execution type `x` (spot executionReport, futures ORDER_TRADE_UPDATE) -> what happened to the order."""

ORDER_STATUSES: dict[str, str] = {
    "NEW": "open", "PENDING_NEW": "open", "PARTIALLY_FILLED": "open", "PENDING_CANCEL": "open",
    "FILLED": "filled", "CANCELED": "cancelled", "REJECTED": "rejected",
    "EXPIRED": "expired", "EXPIRED_IN_MATCH": "expired",
}
"""Order status `X` / `status` -> the gateway's status (robots.live.exchange.Status)."""

TICKTAPE_VENUE_ID = re.compile(rf"^{CLIENT_ORDER_ID}(\.[0-9]+)?$")
"""A venue client order id made by a ticktape live run: `<run tag>-<seq>-<k>`, `.n` for replacement n."""

REPLACE_CANCEL = re.compile(rf"^({CLIENT_ORDER_ID})\.([0-9]+)r$")
"""The id of the cancel half of a spot cancel-replace (`<coid>.<n>r`: cancelled to make way for version n)."""


def venue_client_id(client_order_id: str, version: int) -> str:
    """Binance's `newClientOrderId` of version `version` of an order (0: the original, n: its n-th replacement)."""
    return client_order_id if version == 0 else f"{client_order_id}.{version}"


def replace_cancel_id(client_order_id: str, version: int) -> str:
    """`cancelNewClientOrderId` of the cancel-replace making version `version`: its stream message says so."""
    return f"{client_order_id}.{version}r"


def original_client_order_id(venue_id: str) -> str:
    """The intent's client order id of a venue client id (`.n` of a ticktape replacement stripped)."""
    if TICKTAPE_VENUE_ID.match(venue_id) and "." in venue_id:
        return venue_id.rsplit(".", 1)[0]
    return venue_id


def execution_kind(x: str, what: str) -> str:
    """`EXECUTION_KINDS[x]`, or a `BinanceParseError` naming the field."""
    kind = EXECUTION_KINDS.get(x)
    if kind is None:
        raise BinanceParseError(f"{what}: execution type x={x!r} has no ticktape event", field="x")
    return kind


def _order_event(o: Mapping[str, Any], ts: int, ts_recv: int, robot_of: RobotOf, w: str, *,
                 reason: str = "") -> Parsed:
    """The order event of one execution (spot executionReport or the `o` of a futures ORDER_TRADE_UPDATE)."""
    x = _field(o, "x", str, w)
    kind = execution_kind(x, w)
    if REPLACE_CANCEL.match(str(o.get("c", ""))) and x == "CANCELED":
        return []  # the cancel half of a cancel-replace: the order lives on as its next version
    symbol = _field(o, "s", str, w)
    cid = _field(o, "c", str, w)
    if x == "CANCELED" and o.get("C"):
        cid = str(o["C"])  # spot: `c` names the cancel request, `C` the order
    cid = original_client_order_id(cid)
    vid = str(_field(o, "i", int, w))
    robot = robot_of(cid)
    ev: Event
    if kind == "accepted":
        ev = OrderAccepted(robot, cid, vid, VENUE, symbol, ts, ts_recv)
    elif kind == "filled":
        qty = _field(o, "q", _num, w)
        cum = _field(o, "z", _num, w)
        side = _field(o, "S", str, w)
        if side not in ("BUY", "SELL"):
            raise BinanceParseError(f"{w}: field 'S'={side!r}: expected BUY or SELL", field="S")
        ev = OrderFilled(robot, cid, vid, VENUE, symbol, ts, ts_recv, str(_field(o, "t", int, w)), side,
                         _field(o, "L", _num, w), _field(o, "l", _num, w), _field(o, "n", _num, w),
                         "MAKER" if _field(o, "m", _bool, w) else "TAKER", max(0.0, round(qty - cum, 12)))
    elif kind == "cancelled":
        ev = OrderCancelled(robot, cid, vid, VENUE, symbol, ts, ts_recv, reason or "NONE")
    elif kind == "rejected":
        ev = OrderRejected(robot, cid, vid, VENUE, symbol, ts, ts_recv, reason or "rejected")
    else:
        ev = OrderExpired(robot, cid, vid, VENUE, symbol, ts, ts_recv,
                          "self-trade prevention" if x == "TRADE_PREVENTION" else f"expired ({reason})")
    return [(TOPIC_ORDERS, ev)]


def parse_execution_report(p: Mapping[str, Any], ts_recv: int, robot_of: RobotOf = robot_of_client_order_id) -> Parsed:
    """User-data `executionReport` -> one order event by execution type `x` (`EXECUTION_KINDS`).

    NEW -> OrderAccepted, TRADE -> OrderFilled (fee in the commission asset `N`),
    CANCELED -> OrderCancelled (the original client id is `C`), REJECTED -> OrderRejected,
    EXPIRED / TRADE_PREVENTION -> OrderExpired. REPLACED (an order amended in place, e.g.
    "amend keep priority" reducing its quantity) -> OrderAccepted of the order as it now stands,
    as the simulated venue answers a ReplaceOrder. Any other type is refused (dead letter).
    A ticktape replacement's `.n` is stripped from client ids; the cancel half of a ticktape
    cancel-replace (`c` = `<coid>.<n>r`) is no event: the order goes on as version n.
    """
    w = "executionReport"
    ts = _field(p, "T", to_ns, w) if "T" in p else _field(p, "E", to_ns, w)
    x = p.get("x")
    reason = str(p.get("f", "")) if x == "EXPIRED" else str(p.get("r", ""))
    if x == "CANCELED" and reason == "":
        reason = "NONE"
    return _order_event(p, ts, ts_recv, robot_of, w, reason=reason)


def parse_order_trade_update(p: Mapping[str, Any], ts_recv: int,
                             robot_of: RobotOf = robot_of_client_order_id) -> Parsed:
    """Futures user-data `ORDER_TRADE_UPDATE` -> one order event, as `parse_execution_report` (the
    order is under `o`; ts_event is the order's trade time `o.T`, else the transaction time `T`)."""
    w = "ORDER_TRADE_UPDATE"
    o = _field(p, "o", dict, w)
    outer = _field(p, "T", to_ns, w) if "T" in p else _field(p, "E", to_ns, w)
    ts = _field(o, "T", to_ns, w) if o.get("T") else outer
    return _order_event(o, ts, ts_recv, robot_of, w, reason="NONE" if o.get("x") == "CANCELED" else "")


def parse_account_update(p: Mapping[str, Any], ts_recv: int, account: str = "futures") -> Parsed:
    """Futures user-data `ACCOUNT_UPDATE` -> a Balance per asset (`wb` wallet balance as free, nothing
    locked: futures margin is not locked per asset) and a PositionSnapshot per position (robot field =
    the account, as `robots.positions.snapshot` writes it; quantity signed `pa`, entry price `ep`,
    accumulated realized `cr`, unrealized `up`) on account.position."""
    w = "ACCOUNT_UPDATE"
    ts = _field(p, "T", to_ns, w) if "T" in p else _field(p, "E", to_ns, w)
    a = _field(p, "a", dict, w)
    out: Parsed = []
    for i, b in enumerate(a.get("B") or ()):
        where = f"{w} a.B[{i}]"
        out.append((TOPIC_BALANCE, Balance(VENUE, account, _field(b, "a", str, where), ts, ts_recv,
                                           _field(b, "wb", _num, where), 0.0)))
    for i, pos in enumerate(a.get("P") or ()):
        where = f"{w} a.P[{i}]"
        out.append((TOPIC_POSITION, PositionSnapshot(
            account, VENUE, _field(pos, "s", str, where), ts, ts_recv, _field(pos, "pa", _num, where),
            _field(pos, "ep", _num, where), _num(pos.get("cr", 0)), _num(pos.get("up", 0)))))
    return out


def parse_account_position(p: Mapping[str, Any], ts_recv: int, account: str = "spot") -> Parsed:
    """User-data `outboundAccountPosition` -> one Balance per asset (ts_event = last update `u`)."""
    w = "outboundAccountPosition"
    ts = _field(p, "u", to_ns, w) if "u" in p else _field(p, "E", to_ns, w)
    rows = _field(p, "B", list, w)
    out: Parsed = []
    for i, b in enumerate(rows):
        where = f"{w} B[{i}]"
        out.append((TOPIC_BALANCE, Balance(VENUE, account, _field(b, "a", str, where), ts, ts_recv,
                                           _field(b, "f", _num, where), _field(b, "l", _num, where))))
    return out


def parse_balance_update(p: Mapping[str, Any], ts_recv: int) -> Parsed:
    """User-data `balanceUpdate` (a deposit, withdrawal or transfer: the change `d` of asset `a`) ->
    CustomData `binance.balance_update` keyed by asset, payload `{"asset", "delta"}` (ts_event =
    clear time `T`). `Balance` events hold totals; the next `outboundAccountPosition` gives them."""
    w = "balanceUpdate"
    asset = _field(p, "a", str, w)
    delta = _field(p, "d", str, w)
    _field(p, "d", _num, w)  # must be a number; kept as Binance's decimal text, exact
    ts = _field(p, "T", to_ns, w) if "T" in p else _field(p, "E", to_ns, w)
    payload = json.dumps({"asset": asset, "delta": delta}, separators=(",", ":"))
    return [(TOPIC_BALANCE_UPDATE, CustomData("binance.balance_update", asset, ts, ts_recv, payload,
                                              "application/json"))]


_BY_TYPE: dict[str, Callable[[Mapping[str, Any], int], Parsed]] = {
    "trade": parse_trade,
    "aggTrade": parse_agg_trade,
    "bookTicker": parse_book_ticker,
    "depthUpdate": parse_depth_update,
    "kline": parse_kline,
    "executionReport": parse_execution_report,
    "outboundAccountPosition": parse_account_position,
    "ORDER_TRADE_UPDATE": parse_order_trade_update,
    "ACCOUNT_UPDATE": parse_account_update,
    "balanceUpdate": parse_balance_update,
}


def unwrap(payload: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """Strip a combined-stream wrapper (`{"stream", "data"}`) or a WebSocket-API user-data one
    (`{"subscriptionId", "event"}`): returns (stream name or None, inner payload)."""
    if "data" in payload and "stream" in payload and isinstance(payload["data"], Mapping):
        return str(payload["stream"]), payload["data"]
    if "event" in payload and isinstance(payload["event"], Mapping):
        return None, payload["event"]
    return None, payload


def parse_payload(payload: Mapping[str, Any] | str | bytes, ts_recv: int, *,
                  robot_of: RobotOf = robot_of_client_order_id, account: str = "spot") -> Parsed:
    """Any supported payload (dict or JSON text, wrapped or not) -> [(topic, event)].

    Raises `BinanceParseError` naming the field when the payload is not a documented shape
    (the caller dead-letters it). A websocket error message (`{"e": "error"}`) is refused too.
    """
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise BinanceParseError(f"not JSON: {exc}") from exc
    if not isinstance(payload, Mapping):
        raise BinanceParseError(f"expected a JSON object, got {type(payload).__name__}")
    stream, p = unwrap(payload)
    kind = p.get("e")
    if kind is None:
        if {"u", "s", "b", "B", "a", "A"} <= p.keys():
            kind = "bookTicker"
        elif "lastUpdateId" in p and stream:
            sym = stream.split("@", 1)[0].upper()
            return [(TOPIC_BOOK, parse_depth_snapshot(p, ts_recv, sym))]
    if kind == "executionReport":
        return parse_execution_report(p, ts_recv, robot_of)
    if kind == "outboundAccountPosition":
        return parse_account_position(p, ts_recv, account)
    if kind == "ORDER_TRADE_UPDATE":
        return parse_order_trade_update(p, ts_recv, robot_of)
    if kind == "ACCOUNT_UPDATE":
        return parse_account_update(p, ts_recv, account)
    fn = _BY_TYPE.get(str(kind)) if kind is not None else None
    if fn is None:
        detail = f": {p.get('m')}" if kind == "error" else ""
        raise BinanceParseError(f"unsupported Binance payload type e={kind!r}{detail}", field="e")
    return fn(p, ts_recv)
