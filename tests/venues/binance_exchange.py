"""A local Binance (spot and USD-M futures) for the trading adapter's tests, over real sockets on 127.0.0.1.

REST (`rest_url`): `/api/v3/...` (spot) and `/fapi/v1|v3/...` (futures) with Binance's documented
semantics: HMAC-SHA256 `signature` over the query string + body and the `X-MBX-APIKEY` header
(wrong: 401 -1022 / -2015), exchangeInfo with configurable filters and rateLimits, orders placed /
cancelled / queried / listed (open ones; all of a symbol) / cancel-replaced (spot) / modified
(futures), trades, account, positionRisk, balance, listen keys. A client order id must be unique
among open orders (spot 400 -2010 "Duplicate order sent.", futures -4116); filters are enforced
(-1013); a post-only order (spot LIMIT_MAKER, futures GTX) that would match on arrival is refused
(spot -2010 "Order would immediately match and take.", futures -5022); every answer carries
`X-MBX-USED-WEIGHT-<n><u>` (and `X-MBX-ORDER-COUNT-<n><u>` on order requests); a request over a
limit gets 429 -1003 with Retry-After, and after `ban_after` of those in a window, 418.

User data (`ws_url`): spot through the WebSocket API (`/ws-api/v3`, `userDataStream.subscribe.signature`,
events wrapped `{"subscriptionId", "event"}`), futures through a listen key
(`/private/ws?listenKey=`); `expire_listen_key()` sends `listenKeyExpired` and closes.

Faults (`fault(kind, method=, path=, ...)`, a queue consumed by the next matching request):
- `error_5xx_before`: 503 without executing; `error_5xx_after`: execute, then 503 -1007 "execution
  status unknown"; `drop_after`: execute, then close the connection without answering;
  `timeout_after`: execute, then answer after `delay` s (longer than the client's timeout);
- `duplicate_fill`: the next fill's stream message is sent twice;
- `silent_stream` (immediate): stream messages are dropped until `resume_stream()`.

Ground truth: `ledger.orders`, `ledger.fills`, `ledger.balances`, `ledger.positions`; `answers` lists
(method, path, status) of every REST answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

from websockets.sync.server import ServerConnection, serve

from tests.venues.binance_ledger import Ledger, Symbol, VenueOrder, now_ms, s
from tests.venues.local_http import JsonHandler

SPOT, FUTURES = "spot", "futures"
UNIT_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
UNIT_LETTER = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}
DEFAULT_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
]
# (weight, counts as an order) per (method, path): Binance's documented weights.
WEIGHTS: dict[tuple[str, str], tuple[int, bool]] = {
    ("POST", "/api/v3/order"): (1, True), ("DELETE", "/api/v3/order"): (1, False),
    ("GET", "/api/v3/order"): (4, False), ("POST", "/api/v3/order/cancelReplace"): (1, True),
    ("GET", "/api/v3/openOrders"): (80, False), ("GET", "/api/v3/myTrades"): (20, False),
    ("GET", "/api/v3/account"): (20, False), ("GET", "/api/v3/allOrders"): (20, False),
    ("GET", "/api/v3/exchangeInfo"): (20, False),
    ("GET", "/api/v3/rateLimit/order"): (40, False),
    ("POST", "/fapi/v1/order"): (0, True), ("DELETE", "/fapi/v1/order"): (1, False),
    ("GET", "/fapi/v1/order"): (1, False), ("PUT", "/fapi/v1/order"): (1, True),
    ("GET", "/fapi/v1/openOrders"): (40, False), ("GET", "/fapi/v1/allOrders"): (5, False),
    ("GET", "/fapi/v1/userTrades"): (5, False),
    ("GET", "/fapi/v3/positionRisk"): (5, False), ("GET", "/fapi/v3/balance"): (5, False),
    ("GET", "/fapi/v1/exchangeInfo"): (1, False),
}
UNSIGNED = {"/api/v3/ping", "/api/v3/time", "/api/v3/exchangeInfo", "/fapi/v1/ping", "/fapi/v1/time",
            "/fapi/v1/exchangeInfo", "/fapi/v1/listenKey"}


class ApiError(Exception):
    """An error answer: HTTP status and Binance's {code, msg} (and `data` for cancel-replace)."""

    def __init__(self, status: int, code: int, msg: str, data: Any = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.data = status, code, msg, data


@dataclass
class Fault:
    """One scripted fault for the next request matching `method`/`path` (None: any)."""

    kind: str
    method: str | None = None
    path: str | None = None
    delay: float = 2.0


class LocalBinanceExchange:
    """Binance spot + USD-M futures on 127.0.0.1 (see the module docstring). `close()` when done."""

    def __init__(self, *, api_key: str = "local-key", api_secret: str = "local-secret",
                 symbols: Mapping[str, Symbol] | None = None, rate_limits: Sequence[Mapping[str, Any]] | None = None,
                 balances: Mapping[str, str] | None = None, ban_after: int = 3, ban_seconds: float = 2.0) -> None:
        self.api_key, self.api_secret = api_key, api_secret
        self.lock = threading.RLock()
        self.ledger = Ledger(dict(symbols or {"BTCUSDT": Symbol("BTC", "USDT")}),
                             {k: Decimal(v) for k, v in (balances or {"USDT": "100000", "BTC": "10"}).items()})
        self.rate_limits = [dict(r) for r in (rate_limits or DEFAULT_LIMITS)]
        self.ban_after, self.ban_seconds = ban_after, ban_seconds
        self.faults: list[Fault] = []
        self.answers: list[tuple[str, str, int]] = []
        self.silent = False
        self.suppressed: list[dict[str, Any]] = []  # stream messages dropped while silent
        self.sent: list[dict[str, Any]] = []  # stream messages sent (each copy)
        self._dup_fill = 0
        self._used: dict[tuple[str, int], int] = {}  # (limit key, window) -> used
        self._rejected_429: dict[int, int] = {}  # second -> 429s answered
        self._banned_until = 0.0
        self._subs: list[tuple[str, ServerConnection, str]] = []  # (market, connection, spot sub id / listen key)
        self._next_sub = 0
        self.listen_keys: dict[str, bool] = {}  # key -> valid
        self._closing = threading.Event()
        self._rest = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._rest.daemon_threads = True
        self._ws = serve(self._serve_ws, "127.0.0.1", 0)
        self.rest_url = f"http://127.0.0.1:{self._rest.server_address[1]}"
        self.ws_url = f"ws://127.0.0.1:{self._ws.socket.getsockname()[1]}"
        self._threads = [threading.Thread(target=x.serve_forever, daemon=True) for x in (self._rest, self._ws)]
        for t in self._threads:
            t.start()

    # --- the test's controls ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop both servers."""
        self._closing.set()
        for _, conn, _ in list(self._subs):
            with contextlib.suppress(Exception):
                conn.close()
        self._ws.shutdown()
        self._rest.shutdown()
        self._rest.server_close()
        for t in self._threads:
            t.join(timeout=10)

    def set_price(self, symbol: str, bid: float | str, ask: float | str) -> None:
        """The market moves to (bid, ask): orders it crosses fill (both markets)."""
        with self.lock:
            self._push(self.ledger.set_price(symbol, Decimal(str(bid)), Decimal(str(ask))))

    def fault(self, kind: str, *, method: str | None = None, path: str | None = None, delay: float = 2.0) -> None:
        """Queue a fault (see the module docstring); `silent_stream` takes effect at once."""
        with self.lock:
            if kind == "silent_stream":
                self.silent = True
            elif kind == "duplicate_fill":
                self._dup_fill += 1
            elif kind in ("error_5xx_before", "error_5xx_after", "drop_after", "timeout_after"):
                self.faults.append(Fault(kind, method, path, delay))
            else:
                raise ValueError(f"unknown fault {kind!r}")

    def resume_stream(self) -> None:
        """End a `silent_stream`: messages flow again (those dropped meanwhile stay lost, as on a real gap)."""
        with self.lock:
            self.silent = False

    def drop_stream(self) -> None:
        """Cut every user-data connection without a close frame (clients must reconnect)."""
        with self.lock:
            subs, self._subs = self._subs, []
        for _, conn, _ in subs:
            with contextlib.suppress(Exception):
                conn.socket.shutdown(2)

    def expire_listen_key(self) -> None:
        """Expire every futures listen key: `listenKeyExpired` to its connections, which are then closed."""
        with self.lock:
            for key in self.listen_keys:
                self.listen_keys[key] = False
            subs = [x for x in self._subs if x[0] == FUTURES]
            self._subs = [x for x in self._subs if x[0] != FUTURES]
        for _, conn, key in subs:
            with contextlib.suppress(Exception):
                conn.send(json.dumps({"e": "listenKeyExpired", "E": now_ms(), "listenKey": key}))
                conn.close()

    def subscribers(self, market: str) -> int:
        """User-data connections listening now."""
        with self.lock:
            return sum(1 for m, _, _ in self._subs if m == market)

    def placed(self, market: str, client_id: str) -> list[VenueOrder]:
        """Every order ever placed with this client id (ground truth for "never placed twice")."""
        with self.lock:
            return [o for o in self.ledger.orders if o.market == market and o.client_order_id == client_id]

    # --- user-data stream -------------------------------------------------------------------------------

    def _push(self, msgs: Sequence[dict[str, Any]]) -> None:
        for msg in msgs:
            market = FUTURES if msg["e"] in ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE") else SPOT
            copies = 1
            if msg["e"] in ("executionReport", "ORDER_TRADE_UPDATE") and self._dup_fill:
                x = msg["x"] if msg["e"] == "executionReport" else msg["o"]["x"]
                if x == "TRADE":
                    self._dup_fill -= 1
                    copies = 2
            for _ in range(copies):
                if self.silent:
                    self.suppressed.append(msg)
                    continue
                self.sent.append(msg)
                for m, conn, sub in list(self._subs):
                    if m != market:
                        continue
                    wire = {"subscriptionId": int(sub), "event": msg} if m == SPOT else msg
                    try:
                        conn.send(json.dumps(wire))
                    except Exception:
                        self._subs = [x for x in self._subs if x[1] is not conn]

    def _serve_ws(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        url = urlparse(conn.request.path)
        if url.path == "/private/ws":
            key = dict(parse_qsl(url.query)).get("listenKey", "")
            with self.lock:
                if not self.listen_keys.get(key):
                    conn.close(1008, "invalid listen key")
                    return
                self._subs.append((FUTURES, conn, key))
            self._idle(conn)
            return
        if url.path != "/ws-api/v3":
            conn.close(1008, "unknown path")
            return
        with contextlib.suppress(Exception):
            for raw in conn:
                req = json.loads(raw)
                params = dict(req.get("params") or {})
                if req.get("method") != "userDataStream.subscribe.signature":
                    conn.send(json.dumps({"id": req.get("id"), "status": 400,
                                          "error": {"code": -1102, "msg": "unknown method"}}))
                    continue
                sig = params.pop("signature", "")
                text = urlencode(sorted((k, str(v)) for k, v in params.items()))
                good = hmac.new(self.api_secret.encode(), text.encode(), hashlib.sha256).hexdigest()
                if params.get("apiKey") != self.api_key or not hmac.compare_digest(sig, good):
                    conn.send(json.dumps({"id": req.get("id"), "status": 401,
                                          "error": {"code": -1022, "msg": "Signature for this request is not valid."}}))
                    continue
                with self.lock:
                    sub = self._next_sub
                    self._next_sub += 1
                    self._subs.append((SPOT, conn, str(sub)))
                    conn.send(json.dumps({"id": req.get("id"), "status": 200, "result": {"subscriptionId": sub}}))
        with self.lock:
            self._subs = [x for x in self._subs if x[1] is not conn]

    def _idle(self, conn: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            for _ in conn:
                pass  # clients say nothing on a listen-key stream; this returns when the connection ends
        with self.lock:
            self._subs = [x for x in self._subs if x[1] is not conn]

    # --- REST -------------------------------------------------------------------------------------------

    def _handler(self) -> type[JsonHandler]:
        venue = self

        class Handler(JsonHandler):
            def _any(self) -> None:
                venue._serve_rest(self)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        return Handler

    def _serve_rest(self, h: JsonHandler) -> None:
        url = urlparse(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length).decode() if length else ""
        method, path = h.command, url.path
        fault = self._take_fault(method, path)
        if fault is not None and fault.kind == "error_5xx_before":
            self._answer(h, method, path, 503, {"code": -1008, "msg": "Service unavailable."}, {})
            return
        headers: dict[str, str] = {}
        try:
            with self.lock:
                params = self._authenticate(h, path, url.query, body)
                weight, is_order = WEIGHTS.get((method, path), (1, False))
                headers = self._count(weight, is_order)
                answer = self._route(method, path, params)
            status = 200
        except ApiError as exc:
            status, answer = exc.status, {"code": exc.code, "msg": exc.msg}
            if exc.data is not None:
                answer["data"] = exc.data
            if exc.status in (418, 429):
                headers["Retry-After"] = str(exc.data or 1)
                answer.pop("data", None)
        if fault is not None and fault.kind == "drop_after":
            h.close_connection = True
            with self.lock:
                self.answers.append((method, path, 0))
            return
        if fault is not None and fault.kind == "timeout_after":
            time.sleep(fault.delay)
        if fault is not None and fault.kind == "error_5xx_after":
            status, answer = 503, {"code": -1007, "msg": "Timeout waiting for response from backend server. "
                                   "Send status unknown; execution status unknown."}
        self._answer(h, method, path, status, answer, headers)

    def _answer(self, h: JsonHandler, method: str, path: str, status: int, answer: Any,
                headers: Mapping[str, str]) -> None:
        with self.lock:
            self.answers.append((method, path, status))
        data = json.dumps(answer).encode()
        with contextlib.suppress(OSError):  # the client may have timed out and gone
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for i, f in enumerate(self.faults):
                if f.method in (None, method) and f.path in (None, path):
                    return self.faults.pop(i)
        return None

    def _authenticate(self, h: JsonHandler, path: str, query: str, body: str) -> dict[str, str]:
        params = dict(parse_qsl(query)) | dict(parse_qsl(body))
        if path in UNSIGNED:
            if path == "/fapi/v1/listenKey" and h.headers.get("X-MBX-APIKEY") != self.api_key:
                raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
            return params
        if h.headers.get("X-MBX-APIKEY") != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        total = query + body  # Binance signs the query string followed by the body
        parts = [p for p in total.split("&") if p and not p.startswith("signature=")]
        good = hmac.new(self.api_secret.encode(), "&".join(parts).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(params.get("signature", ""), good):
            raise ApiError(401, -1022, "Signature for this request is not valid.")
        window = int(params.get("recvWindow", 5000))
        if abs(now_ms() - int(params.get("timestamp", 0))) > window:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return params

    def _count(self, weight: int, is_order: bool) -> dict[str, str]:
        """Count the request against every limit (429/418 when over); the headers reporting the use."""
        now = time.time()
        if now < self._banned_until:
            raise ApiError(418, -1003, "Way too many requests; IP banned.", math.ceil(self._banned_until - now))
        second = int(now)
        over: float | None = None
        keys = []
        for r in self.rate_limits:
            if r["rateLimitType"] not in ("REQUEST_WEIGHT", "ORDERS"):
                continue
            cost = weight if r["rateLimitType"] == "REQUEST_WEIGHT" else int(is_order)
            span = r["intervalNum"] * UNIT_SECONDS[r["interval"]]
            key = (f"{r['rateLimitType']}-{r['intervalNum']}{r['interval']}", int(now // span))
            keys.append((r, key, cost))
            if cost and self._used.get(key, 0) + cost > r["limit"]:
                over = max(over or 0.0, (key[1] + 1) * span - now)
        if over is not None:
            self._rejected_429[second] = self._rejected_429.get(second, 0) + 1
            if self._rejected_429[second] >= self.ban_after:
                self._banned_until = now + self.ban_seconds
            raise ApiError(429, -1003, "Too much request weight used; current limit exceeded.", math.ceil(over))
        headers = {}
        for r, key, cost in keys:
            self._used[key] = self._used.get(key, 0) + cost
            unit = f"{r['intervalNum']}{UNIT_LETTER[r['interval']]}"
            if r["rateLimitType"] == "REQUEST_WEIGHT":
                headers[f"X-MBX-USED-WEIGHT-{unit}"] = str(self._used[key])
            elif is_order:
                headers[f"X-MBX-ORDER-COUNT-{unit}"] = str(self._used[key])
        return headers

    # --- endpoints ------------------------------------------------------------------------------------------

    def _route(self, method: str, path: str, p: dict[str, str]) -> Any:
        market = FUTURES if path.startswith("/fapi/") else SPOT
        endpoint = path.split("/", 3)[-1]
        if endpoint in ("ping",):
            return {}
        if endpoint == "time":
            return {"serverTime": now_ms()}
        if endpoint == "exchangeInfo":
            return self._exchange_info(market)
        if endpoint == "listenKey":
            return self._listen_key(method, p)
        if endpoint == "order":
            if method == "POST":
                return self._place(market, p)
            if method == "DELETE":
                return self._cancel(market, p)
            if method == "PUT" and market == FUTURES:
                return self._modify(p)
            return self._order_of(market, p).rest()
        if endpoint == "rateLimit/order" and market == SPOT:
            now = time.time()
            return [{**r, "count": self._used.get((f"ORDERS-{r['intervalNum']}{r['interval']}",
                                                   int(now // (r["intervalNum"] * UNIT_SECONDS[r["interval"]]))), 0)}
                    for r in self.rate_limits if r["rateLimitType"] == "ORDERS"]
        if endpoint == "order/cancelReplace" and market == SPOT and method == "POST":
            return self._cancel_replace(p)
        if endpoint == "allOrders":
            return [o.rest() for o in self.ledger.orders if o.market == market and o.symbol == p["symbol"]]
        if endpoint == "openOrders":
            return [o.rest() for o in self.ledger.open_orders(market, p.get("symbol"))]
        if endpoint in ("myTrades", "userTrades"):
            oid = int(p["orderId"]) if "orderId" in p else None
            return [f.rest() for f in self.ledger.fills if f.market == market and f.symbol == p["symbol"]
                    and oid in (None, f.order_id)]
        if endpoint == "account" and market == SPOT:
            return {"makerCommission": 10, "takerCommission": 10, "canTrade": True, "updateTime": now_ms(),
                    "accountType": "SPOT", "balances": [{"asset": a, "free": s(v), "locked": s(Decimal(0))}
                                                        for a, v in sorted(self.ledger.balances.items())]}
        if endpoint == "positionRisk":
            return [{"symbol": sym, "positionAmt": s(q), "entryPrice": "0", "positionSide": "BOTH",
                     "updateTime": now_ms()} for sym, q in sorted(self.ledger.positions.items())]
        if endpoint == "balance":
            return [{"asset": "USDT", "balance": s(self.ledger.balances.get("USDT", Decimal(0))),
                     "availableBalance": s(self.ledger.balances.get("USDT", Decimal(0)))}]
        raise ApiError(404, -1000, f"unknown endpoint {method} {path}")

    def _exchange_info(self, market: str) -> dict[str, Any]:
        return {"timezone": "UTC", "serverTime": now_ms(), "rateLimits": self.rate_limits,
                "symbols": [{"symbol": name, "status": "TRADING", "baseAsset": sym.base, "quoteAsset": sym.quote,
                             "filters": sym.filters(market)} for name, sym in self.ledger.symbols.items()]}

    def _listen_key(self, method: str, p: dict[str, str]) -> Any:
        if method == "POST":
            valid = [k for k, ok in self.listen_keys.items() if ok]
            if valid:
                return {"listenKey": valid[0]}
            key = f"lk{len(self.listen_keys) + 1:04d}" + "x" * 54
            self.listen_keys[key] = True
            return {"listenKey": key}
        if not self.listen_keys.get(p.get("listenKey", "")):
            raise ApiError(400, -1125, "This listenKey does not exist.")
        if method == "DELETE":
            self.listen_keys[p["listenKey"]] = False
        return {}

    def _order_of(self, market: str, p: Mapping[str, str]) -> VenueOrder:
        o = self.ledger.find(market, p.get("symbol", ""), client_id=p.get("origClientOrderId"),
                             order_id=int(p["orderId"]) if "orderId" in p else None)
        if o is None:
            raise ApiError(400, -2013, "Order does not exist.")
        return o

    def _checked(self, market: str, p: Mapping[str, str]) -> tuple[str, str, str, Decimal, Decimal]:
        """Validate a new order's parameters and filters: (side, type, tif, price, qty)."""
        sym = self.ledger.symbols.get(p.get("symbol", ""))
        if sym is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        side, type_ = p.get("side", ""), p.get("type", "")
        types = ("MARKET", "LIMIT", "LIMIT_MAKER") if market == SPOT else ("MARKET", "LIMIT")
        if side not in ("BUY", "SELL") or type_ not in types:
            raise ApiError(400, -1116 if type_ else -1102, "Invalid side or order type.")
        try:
            qty = Decimal(p["quantity"])
            price = Decimal(p.get("price", "0"))
        except (KeyError, InvalidOperation):
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.") \
                from None
        tif = p.get("timeInForce", "GTC")
        if type_ == "LIMIT_MAKER":  # spot's post-only type: a price, and no time in force
            if "timeInForce" in p:
                raise ApiError(400, -1106, "Parameter 'timeInForce' sent when not required.")
            if "price" not in p:
                raise ApiError(400, -1102, "Mandatory parameter 'price' was not sent.")
        if market == FUTURES and tif not in ("GTC", "IOC", "FOK", "GTX"):
            raise ApiError(400, -1115, "Invalid timeInForce.")
        if type_ in ("LIMIT", "LIMIT_MAKER"):
            if type_ == "LIMIT" and ("timeInForce" not in p or "price" not in p):
                raise ApiError(400, -1102, "Mandatory parameter 'timeInForce' or 'price' was not sent.")
            if price < Decimal(sym.min_price) or price > Decimal(sym.max_price) or \
                    (price - Decimal(sym.min_price)) % Decimal(sym.tick) != 0:
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        if qty < Decimal(sym.min_qty) or qty > Decimal(sym.max_qty) or (qty - Decimal(sym.min_qty)) % Decimal(sym.step):
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        ref = price if type_ != "MARKET" else self.ledger.prices.get(p["symbol"], (Decimal(0), Decimal(0)))[1]
        if ref and ref * qty < Decimal(sym.min_notional):
            raise ApiError(400, -1013, "Filter failure: NOTIONAL" if market == SPOT else "Filter failure: MIN_NOTIONAL")
        if market == SPOT:
            need_quote = (ref * qty) if side == "BUY" else Decimal(0)
            need_base = qty if side == "SELL" else Decimal(0)
            if need_quote > self.ledger.balances.get(sym.quote, Decimal(0)) or \
                    need_base > self.ledger.balances.get(sym.base, Decimal(0)):
                raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        return side, type_, tif, price, qty

    def _new(self, market: str, p: Mapping[str, str], client_id: str) -> VenueOrder:
        side, type_, tif, price, qty = self._checked(market, p)
        if any(o.client_order_id == client_id for o in self.ledger.open_orders(market)):
            if market == SPOT:
                raise ApiError(400, -2010, "Duplicate order sent.")
            raise ApiError(400, -4116, "ClientOrderId is duplicated.")
        self._post_only(market, p["symbol"], type_, tif, side, price)
        o, msgs = self.ledger.new_order(market, p["symbol"], client_id, side, type_, tif, price, qty)
        self._push(msgs)
        return o

    def _post_only(self, market: str, symbol: str, type_: str, tif: str, side: str, price: Decimal) -> None:
        """Refuse a post-only order (spot LIMIT_MAKER, futures GTX) that would match on arrival."""
        if type_ != "LIMIT_MAKER" and tif != "GTX":
            return
        if self.ledger.crosses(symbol, side, price):
            if market == SPOT:
                raise ApiError(400, -2010, "Order would immediately match and take.")
            raise ApiError(400, -5022, "Due to the order could not be executed as maker, the Post Only order "
                                       "will be rejected.")

    def _full(self, o: VenueOrder) -> dict[str, Any]:
        """A spot FULL answer: the order with its fills."""
        body = o.rest()
        body["transactTime"] = o.update_time
        body["fills"] = [{"price": s(f.price), "qty": s(f.qty), "commission": s(f.commission),
                          "commissionAsset": "USDT", "tradeId": f.trade_id}
                         for f in self.ledger.fills if f.market == SPOT and f.order_id == o.order_id]
        return body

    def _place(self, market: str, p: dict[str, str]) -> Any:
        client_id = p.get("newClientOrderId") or f"auto{now_ms()}"
        o = self._new(market, p, client_id)
        if market == SPOT:
            return self._full(o) if p.get("newOrderRespType", "FULL") == "FULL" else o.rest()
        return o.rest()

    def _cancel(self, market: str, p: dict[str, str]) -> Any:
        o = self.ledger.find(market, p.get("symbol", ""), client_id=p.get("origClientOrderId"),
                             order_id=int(p["orderId"]) if "orderId" in p else None)
        if o is None or not o.is_open:
            raise ApiError(400, -2011, "Unknown order sent.")
        cancel_id = p.get("newClientOrderId", f"cancel{o.order_id}")
        self._push(self.ledger.cancel(o, cancel_id))
        body = o.rest()
        if market == SPOT:
            body.update(origClientOrderId=o.client_order_id, clientOrderId=cancel_id, transactTime=o.update_time)
        return body

    def _cancel_replace(self, p: dict[str, str]) -> Any:
        if p.get("cancelReplaceMode") not in ("STOP_ON_FAILURE", "ALLOW_FAILURE"):
            raise ApiError(400, -1102, "Mandatory parameter 'cancelReplaceMode' was not sent.")
        self._checked(SPOT, p)  # filters are checked before anything is cancelled
        old = self.ledger.find(SPOT, p.get("symbol", ""), client_id=p.get("cancelOrigClientOrderId"))
        if old is None or not old.is_open:
            raise ApiError(400, -2022, "Order cancel-replace failed.", {
                "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                "cancelResponse": {"code": -2011, "msg": "Unknown order sent."}, "newOrderResponse": None})
        cancel_id = p.get("cancelNewClientOrderId", f"cancel{old.order_id}")
        self._push(self.ledger.cancel(old, cancel_id))
        cancelled = {**old.rest(), "origClientOrderId": old.client_order_id, "clientOrderId": cancel_id,
                     "transactTime": old.update_time}
        try:
            new = self._new(SPOT, {**p, "newClientOrderId": p.get("newClientOrderId", "")},
                            p.get("newClientOrderId") or f"auto{now_ms()}")
        except ApiError as exc:
            raise ApiError(409, -2021, "Order cancel-replace partially failed.", {
                "cancelResult": "SUCCESS", "newOrderResult": "FAILURE", "cancelResponse": cancelled,
                "newOrderResponse": {"code": exc.code, "msg": exc.msg}}) from None
        return {"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS", "cancelResponse": cancelled,
                "newOrderResponse": self._full(new)}

    def _modify(self, p: dict[str, str]) -> Any:
        o = self.ledger.find(FUTURES, p.get("symbol", ""), client_id=p.get("origClientOrderId"),
                             order_id=int(p["orderId"]) if "orderId" in p else None)
        if o is None or not o.is_open:
            raise ApiError(400, -2013, "Order does not exist.")
        if o.type != "LIMIT":
            raise ApiError(400, -4028, "Only LIMIT orders can be modified.")
        _, _, _, price, qty = self._checked(FUTURES, {**p, "type": "LIMIT", "timeInForce": o.time_in_force})
        if price == o.price and qty == o.qty:
            raise ApiError(400, -5027, "No need to modify the order.")
        self._post_only(FUTURES, o.symbol, o.type, o.time_in_force, o.side, price)
        self._push(self.ledger.amend(o, price, qty))
        return o.rest()
