"""Pure parsers for Binance's documented websocket payloads: `payload, ts_recv -> [(topic, event)]`.

No I/O, no clock: `ts_recv` is given by the caller (the live recorder stamps it at the edge;
tests pass recorded values). The same functions run live and on recorded payloads.

Payloads handled (spot and USD-M futures field layouts):

| payload `e`               | event(s)                      | topic                |
| ------------------------- | ----------------------------- | -------------------- |
| `trade`                   | Trade                         | md.binance.trade     |
| `aggTrade`                | Trade (trade_id = agg id)     | md.binance.aggtrade  |
| bookTicker (no `e` spot)  | Quote                         | md.binance.quote     |
| `depthUpdate`             | BookDelta                     | md.binance.book      |
| partial depth snapshot    | BookSnapshot                  | md.binance.book      |
| `kline` (closed only)     | Bar                           | md.binance.bar       |
| `executionReport`         | OrderAccepted/Filled/...      | orders.event         |
| `outboundAccountPosition` | Balance per asset             | account.balance      |
| `balanceUpdate`           | CustomData (a delta)          | account.balance_update |

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
               _field(p, "q", _num, w), _aggressor(_field(p, "m", _bool, w)), str(_field(p, "t", int, w)))
    return [(TOPIC_TRADE, ev)]


def parse_agg_trade(p: Mapping[str, Any], ts_recv: int) -> Parsed:
    """`<symbol>@aggTrade`: one Trade per aggregate, trade_id = the aggregate id."""
    w = "aggTrade"
    ev = Trade(VENUE, _field(p, "s", str, w), _field(p, "T", to_ns, w), ts_recv, _field(p, "p", _num, w),
               _field(p, "q", _num, w), _aggressor(_field(p, "m", _bool, w)), str(_field(p, "a", int, w)))
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
              _field(k, "c", _num, w), _field(k, "v", _num, w))
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


def parse_execution_report(p: Mapping[str, Any], ts_recv: int, robot_of: RobotOf = robot_of_client_order_id) -> Parsed:
    """User-data `executionReport` -> one order event by execution type `x`.

    NEW -> OrderAccepted, TRADE -> OrderFilled (fee in the commission asset `N`),
    CANCELED -> OrderCancelled (the original client id is `C`), REJECTED -> OrderRejected,
    EXPIRED / TRADE_PREVENTION -> OrderExpired. REPLACED (an order amended in place, e.g.
    "amend keep priority" reducing its quantity) -> OrderAccepted of the order as it now stands,
    as the simulated venue answers a ReplaceOrder. Any other type is refused (dead letter).
    """
    w = "executionReport"
    x = _field(p, "x", str, w)
    symbol = _field(p, "s", str, w)
    cid = _field(p, "c", str, w)
    if x == "CANCELED" and p.get("C"):
        cid = str(p["C"])
    vid = str(_field(p, "i", int, w))
    ts = _field(p, "T", to_ns, w) if "T" in p else _field(p, "E", to_ns, w)
    robot = robot_of(cid)
    ev: Event
    if x in ("NEW", "REPLACED"):
        ev = OrderAccepted(robot, cid, vid, VENUE, symbol, ts, ts_recv)
    elif x == "TRADE":
        qty = _field(p, "q", _num, w)
        cum = _field(p, "z", _num, w)
        side = _field(p, "S", str, w)
        if side not in ("BUY", "SELL"):
            raise BinanceParseError(f"{w}: field 'S'={side!r}: expected BUY or SELL", field="S")
        ev = OrderFilled(robot, cid, vid, VENUE, symbol, ts, ts_recv, str(_field(p, "t", int, w)), side,
                         _field(p, "L", _num, w), _field(p, "l", _num, w), _field(p, "n", _num, w),
                         "MAKER" if _field(p, "m", _bool, w) else "TAKER", max(0.0, round(qty - cum, 12)))
    elif x == "CANCELED":
        ev = OrderCancelled(robot, cid, vid, VENUE, symbol, ts, ts_recv, str(p.get("r", "NONE")))
    elif x == "REJECTED":
        ev = OrderRejected(robot, cid, vid, VENUE, symbol, ts, ts_recv, _field(p, "r", str, w))
    elif x in ("EXPIRED", "TRADE_PREVENTION"):
        reason = "self-trade prevention" if x == "TRADE_PREVENTION" else f"expired ({p.get('f', '')})"
        ev = OrderExpired(robot, cid, vid, VENUE, symbol, ts, ts_recv, reason)
    else:
        raise BinanceParseError(f"{w}: execution type x={x!r} has no ticktape event", field="x")
    return [(TOPIC_ORDERS, ev)]


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
    fn = _BY_TYPE.get(str(kind)) if kind is not None else None
    if fn is None:
        detail = f": {p.get('m')}" if kind == "error" else ""
        raise BinanceParseError(f"unsupported Binance payload type e={kind!r}{detail}", field="e")
    return fn(p, ts_recv)
