"""`BinanceVenue`: the gateway's `LiveVenue` on Binance spot or USD-M futures, through python-binance's `Client`.

The thin I/O shell; what answers mean is `producers.binance.reports` (pure), the exchange filters
are `producers.binance.rules` (pure), the weight and order-count limits `producers.binance.limits`,
the user-data stream `producers.binance.userdata`.

Client order ids: version 0 of an order is sent with the intent's client order id, replacement n
with `<coid>.<n>` on spot (a cancel-replace makes a new venue order); futures modify the order in
place (`PUT /fapi/v1/order`, LIMIT only) and keep `<coid>`. Reports always carry `<coid>`.

Order types: MARKET and LIMIT as they are; LIMIT_MAKER (post-only) is spot's `LIMIT_MAKER` type and
futures' LIMIT with time in force `GTX`. One that would match on arrival is refused by Binance
(spot -2010 "Order would immediately match and take.", futures -5022) and becomes OrderRejected.

python-binance raises `BinanceAPIException` for every non-2xx answer (its `.response` holds the
headers), lets `requests`' timeouts and connection errors through, and keeps the last answer in
`client.response`; each call here reads that answer's weight headers into the limiter.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from binance import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException

from producers.binance import rules as rules_mod
from producers.binance.credentials import load_binance_keys
from producers.binance.limits import WEIGHTS, RateLimiter, limits_from_rules
from producers.binance.parsers import TICKTAPE_VENUE_ID, replace_cancel_id, venue_client_id
from producers.binance.reports import fill_of_trade, order_report, stream_reports
from producers.binance.rules import dec
from producers.binance.userdata import FUTURES_STREAM, SPOT_WS_API, UserDataStream, ws_api_signature
from robots.live.exchange import (
    AccountReport,
    Command,
    Fill,
    OrderReport,
    OutcomeUnknown,
    Refusal,
    ReportSink,
    VenueBusy,
)
from ticktape.config import Secret
from ticktape.errors import ConfigError
from ticktape.events import PlaceOrder, ReplaceOrder
from ticktape.timeutil import Clock, WallClock

log = logging.getLogger(__name__)

MARKETS = ("spot", "futures")
UNKNOWN_ORDER = (-2013, -2011)  # "Order does not exist." / "Unknown order sent."
UNKNOWN_OUTCOME = (-1006, -1007)  # "unexpected response" / "Timeout waiting for response from backend"


def _num(x: float) -> str:
    """A price or quantity as Binance wants it: plain decimal text, no exponent (1e-05 -> 0.00001)."""
    return format(dec(x).normalize(), "f")


def _duplicate(exc: BinanceAPIException) -> bool:
    # spot: -2010 "Duplicate order sent."; futures: -4116 "ClientOrderId is duplicated."
    return exc.code == -4116 or (exc.code == -2010 and "duplicate" in str(exc.message).lower())


def _reason(exc: BinanceAPIException) -> str:
    return f"{exc.code} {exc.message}"


class BinanceVenue:
    """Binance spot (`market="spot"`) or USD-M futures (`"futures"`) behind the gateway (see `LiveVenue`)."""

    name = "binance"
    settles = False  # a fill is final: nothing to ask about afterwards

    def __init__(self, *, api_key: Secret, api_secret: Secret, market: str = "spot", testnet: bool = False,
                 rest_url: str | None = None, ws_url: str | None = None, timeout: float = 10.0,
                 recv_window: int = 5000, clock: Clock | None = None,
                 limiter: RateLimiter | None = None, keepalive_every: float = 1800.0,
                 stream_backoff: tuple[float, float] = (0.05, 10.0)) -> None:
        if market not in MARKETS:
            raise ConfigError(f"binance market must be spot or futures, not {market!r}")
        self.market = market
        self.testnet = testnet
        self.rest_url = rest_url
        self.timeout = timeout
        self._secret = api_secret
        self._key = api_key
        self.clock: Clock = clock or WallClock()
        self.limiter = limiter or RateLimiter()
        self.keepalive_every = keepalive_every
        self.stream_backoff = stream_backoff
        self._lock = threading.Lock()  # one request at a time: `client.response` is the client's only answer slot
        self._rules: dict[str, Any] | None = None
        self._stream: UserDataStream | None = None
        self._client = Client(api_key.get(), api_secret.get(), testnet=testnet, ping=False)
        self._client.REQUEST_TIMEOUT = timeout
        self._client.REQUEST_RECVWINDOW = recv_window
        if rest_url:  # the local venue in tests, or a proxy: both markets' paths under one base
            base = rest_url.rstrip("/")
            for attr, path in (("API_URL", "/api"), ("API_TESTNET_URL", "/api"), ("FUTURES_URL", "/fapi"),
                               ("FUTURES_TESTNET_URL", "/fapi")):
                setattr(self._client, attr, base + path)
        if ws_url:
            self.ws_url = ws_url.rstrip("/") + ("/ws-api/v3" if market == "spot" else "/private/ws")
        else:
            self.ws_url = (SPOT_WS_API if market == "spot" else FUTURES_STREAM)[testnet]

    def __repr__(self) -> str:
        return (f"BinanceVenue(market={self.market!r}, testnet={self.testnet}, rest_url={self.rest_url!r}, "
                f"api_key={self._key!r})")

    # ------------------------------------------------------------------ settings

    @classmethod
    def from_settings(cls, settings: Mapping[str, object], env: Mapping[str, str] | None = None,
                      credentials_file: str | None = None) -> BinanceVenue:
        """A venue from settings (market, testnet, rest_url, ws_url, timeout, recv_window) and credentials.

        The keys come from `credentials_file` (TOML, `[binance] api_key/api_secret`, which must
        lie outside any git repository), else BINANCE_API_KEY / BINANCE_API_SECRET in `env`
        (default: the process environment). Missing keys or a bad setting raise `ConfigError`.
        """
        keys = load_binance_keys(credentials_file, env)
        assert keys is not None
        known = {"market", "testnet", "rest_url", "ws_url", "timeout", "recv_window"}
        unknown = set(settings) - known
        if unknown:
            raise ConfigError(f"binance settings: unknown {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        for name, want in (("market", str), ("testnet", bool), ("rest_url", str), ("ws_url", str),
                           ("timeout", (int, float)), ("recv_window", int)):
            if name in settings and settings[name] is not None:
                value = settings[name]
                if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                    raise ConfigError(f"binance settings: {name}={value!r} has the wrong type")
                kwargs[name] = float(value) if name == "timeout" else value
        return cls(api_key=keys.api_key, api_secret=keys.api_secret, **kwargs)

    # ------------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Callable[..., Any], **params: Any) -> Any:
        """One REST request under the rate limiter; 429/418 -> VenueBusy, 5xx/timeouts -> OutcomeUnknown.

        A venue refusal (other 4xx) is raised as python-binance's `BinanceAPIException` for the caller.
        """
        weight, orders = WEIGHTS[self.market].get(what, (1, 0))
        self.limiter.acquire(weight, orders)
        with self._lock:
            self._client.response = None
            try:
                return fn(**params)
            except BinanceAPIException as exc:
                if exc.status_code in (418, 429):
                    after = _retry_after(exc.response)
                    raise VenueBusy(f"binance {exc.status_code} {_reason(exc)}", after) from None
                if exc.status_code >= 500 or exc.code in UNKNOWN_OUTCOME:
                    raise OutcomeUnknown(f"binance {what}: HTTP {exc.status_code} {_reason(exc)}") from None
                raise
            except (requests.Timeout, requests.ConnectionError) as exc:
                raise OutcomeUnknown(f"binance {what}: {type(exc).__name__}") from None
            except BinanceRequestException as exc:  # a 2xx answer that is not JSON
                raise OutcomeUnknown(f"binance {what}: {exc.message[:200]}") from None
            finally:
                answer = self._client.response
                if answer is not None:
                    self.limiter.update(answer.headers)

    def _vid(self, coid: str, version: int) -> str:
        return venue_client_id(coid, version) if self.market == "spot" else coid

    def _order_params(self, order: PlaceOrder | ReplaceOrder) -> dict[str, Any]:
        params: dict[str, Any] = {"symbol": order.instrument, "side": order.side, "type": order.order_type,
                                  "quantity": _num(order.size)}
        if order.order_type == "LIMIT":
            params["price"] = _num(order.price)
            params["timeInForce"] = "GTC" if order.time_in_force == "DAY" else order.time_in_force
        elif order.order_type == "LIMIT_MAKER":  # post-only: spot has the type, futures the time in force GTX
            params["price"] = _num(order.price)
            if self.market == "futures":
                params.update(type="LIMIT", timeInForce="GTX")
        return params

    def _rejected(self, command: Command, reason: str) -> OrderReport:
        return OrderReport(client_order_id=command.order.client_order_id, venue_order_id=None,
                           instrument=command.order.instrument, status="rejected", ts_event=self.clock.now(),
                           side=command.order.side, reason=reason, source="rest")

    def _trades(self, symbol: str, order_id: int | str) -> list[Fill]:
        fn = self._client.get_my_trades if self.market == "spot" else self._client.futures_account_trades
        rows = self._call("trades", fn, symbol=symbol, orderId=int(order_id))
        return [fill_of_trade(t) for t in rows]

    def _get_order(self, symbol: str, vid: str) -> dict[str, Any] | None:
        fn = self._client.get_order if self.market == "spot" else self._client.futures_get_order
        try:
            answer: dict[str, Any] = self._call("query", fn, symbol=symbol, origClientOrderId=vid)
        except BinanceAPIException as exc:
            if exc.code in UNKNOWN_ORDER:
                return None
            raise OutcomeUnknown(f"binance query {vid}: {_reason(exc)}") from None
        return answer

    def _with_fills(self, o: Mapping[str, Any], source: str) -> OrderReport:
        fills = self._trades(str(o["symbol"]), o["orderId"]) if float(o.get("executedQty", 0) or 0) > 0 else []
        return order_report(o, source=source, fills=fills)

    # ------------------------------------------------------------------ LiveVenue

    def start(self, sink: ReportSink) -> None:
        """Fetch the rules (and so the rate limits), then open the user-data stream delivering to `sink`."""
        self.rules()

        def handle(event: Mapping[str, Any]) -> None:
            try:
                reports = stream_reports(event)
            except Exception:  # a message of an unexpected shape must not kill the stream thread
                log.exception("binance user-data message not understood: %.300s", event)
                return
            for r in reports:
                sink(r)

        if self.market == "spot":
            self._stream = UserDataStream(url=self.ws_url, handler=handle, market="spot",
                                          subscribe_params=self._subscribe_params, backoff=self.stream_backoff,
                                          open_timeout=self.timeout)
        else:
            self._stream = UserDataStream(
                url=self.ws_url, handler=handle, market="futures", backoff=self.stream_backoff,
                listen_key=lambda: str(self._call("listen_key", self._client.futures_stream_get_listen_key)),
                keepalive=lambda key: self._call("listen_key", self._client.futures_stream_keepalive, listenKey=key),
                keepalive_every=self.keepalive_every, open_timeout=self.timeout)
        self._stream.start()

    def _subscribe_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"apiKey": self._key.get(), "timestamp": int(time.time() * 1000)}
        params["signature"] = ws_api_signature(params, self._secret.get())
        return params

    @property
    def stream(self) -> UserDataStream | None:
        """The user-data stream once `start`ed (for the operator's status and tests)."""
        return self._stream

    def rules(self) -> dict[str, Any]:
        """`exchangeInfo` as `rules_from_exchange_info` keeps it; its rate limits go to the limiter."""
        fn = self._client.get_exchange_info if self.market == "spot" else self._client.futures_exchange_info
        info = self._call("exchange_info", fn)
        self._rules = rules_mod.rules_from_exchange_info(info, self.market)
        self.limiter.set_limits(limits_from_rules(self._rules["rate_limits"]))
        if self.market == "spot":  # futures does not report its counts: its first order's answer headers do
            self.limiter.seed(self._call("order_count", self._client.get_current_order_count))
        return self._rules

    @staticmethod
    def check(rules: Mapping[str, Any], intent: PlaceOrder | ReplaceOrder) -> Refusal | None:
        """The exchange-filters control (pure): see `producers.binance.rules.check`."""
        return rules_mod.check(rules, intent)

    def place(self, command: Command) -> Sequence[OrderReport]:
        """POST the order (spot: FULL answer with its fills); a duplicate client id is the order itself: query it."""
        order = command.order
        params = self._order_params(order)
        params["newClientOrderId"] = self._vid(order.client_order_id, command.version)
        if self.market == "spot":
            params["newOrderRespType"] = "FULL"
            fn = self._client.create_order
        else:
            params["newOrderRespType"] = "RESULT"
            fn = self._client.futures_create_order
        try:
            answer = self._call("place", fn, **params)
        except BinanceAPIException as exc:
            if _duplicate(exc):
                return [self._query_one(command)]
            return [self._rejected(command, _reason(exc))]
        if self.market == "futures":  # the futures answer has no fills: fetch those it already has
            return [self._with_fills(answer, "rest")]
        return [order_report(answer, source="rest")]

    def cancel(self, command: Command) -> Sequence[OrderReport]:
        """DELETE the order by its venue client id; one no longer open -> its final report (a query)."""
        order = command.order
        fn = self._client.cancel_order if self.market == "spot" else self._client.futures_cancel_order
        try:
            answer = self._call("cancel", fn, symbol=order.instrument,
                                origClientOrderId=self._vid(order.client_order_id, command.version))
        except BinanceAPIException as exc:
            if exc.code in UNKNOWN_ORDER:
                return [self._query_one(command)]
            return [self._rejected(command, _reason(exc))]
        return [order_report(answer, source="rest")]

    def replace(self, command: Command) -> Sequence[OrderReport]:
        """Spot: cancel-replace version n-1 by version n. Futures: modify the LIMIT order in place."""
        if self.market == "futures":
            return self._modify(command)
        order, n = command.order, command.version
        coid = order.client_order_id
        params = self._order_params(order)
        params.update(cancelReplaceMode="STOP_ON_FAILURE", cancelOrigClientOrderId=self._vid(coid, n - 1),
                      newClientOrderId=self._vid(coid, n), cancelNewClientOrderId=replace_cancel_id(coid, n),
                      newOrderRespType="FULL")
        try:
            answer = self._call("replace", self._client.cancel_replace_order, **params)
        except BinanceAPIException as exc:
            return self._replace_failed(command, exc)
        return [order_report(answer["newOrderResponse"], source="rest")]

    def _replace_failed(self, command: Command, exc: BinanceAPIException) -> list[OrderReport]:
        data: Mapping[str, Any] = {}
        with contextlib.suppress(ValueError, AttributeError):  # no JSON body: nothing more is known
            data = exc.response.json().get("data") or {}
        cancel, new = data.get("cancelResult"), data.get("newOrderResult")
        if cancel == "SUCCESS" and new == "FAILURE":
            # The old version is gone and the new one was refused: a rejected replace, then the order's end.
            err = data.get("newOrderResponse") or {}
            old = order_report(data["cancelResponse"], source="rest",
                               reason="cancelled by a cancel-replace whose new order was refused")
            return [self._rejected(command, f"{err.get('code')} {err.get('msg')}"), old]
        if cancel == "FAILURE":
            # Not open any more: maybe our earlier attempt replaced it already (then version n exists).
            now = self._get_order(command.order.instrument, self._vid(command.order.client_order_id,
                                                                      command.version))
            if now is not None:
                return [self._with_fills(now, "query")]
            previous = Command(kind="verify", order=command.order, intent=command.intent, version=command.version - 1,
                               run_ref=command.run_ref)
            report = self._query_one(previous)
            if report.status == "open":  # still open, the cancel failed for another reason: refuse the replace
                return [self._rejected(command, _reason(exc))]
            return [report]
        return [self._rejected(command, _reason(exc))]

    def _modify(self, command: Command) -> list[OrderReport]:
        order = command.order
        if order.order_type not in ("LIMIT", "LIMIT_MAKER"):
            return [self._rejected(command, "only LIMIT orders can be modified on Binance futures")]
        try:
            answer = self._call("replace", self._client.futures_modify_order, symbol=order.instrument,
                                origClientOrderId=order.client_order_id, side=order.side,
                                quantity=_num(order.size), price=_num(order.price))
        except BinanceAPIException as exc:
            if exc.code in (*UNKNOWN_ORDER, -5027):  # gone, or already as asked (-5027 "No need to modify")
                return [self._query_one(command)]
            return [self._rejected(command, _reason(exc))]
        return [order_report(answer, source="rest")]

    def query(self, command: Command) -> Sequence[OrderReport]:
        """[The order's version `command.version` now, with every fill (of earlier spot versions too)]: one
        report, since fills carry trade ids whatever version made them (status "unknown": no such version)."""
        return [self._query_one(command)]

    def _query_one(self, command: Command) -> OrderReport:
        order = command.order
        o = self._get_order(order.instrument, self._vid(order.client_order_id, command.version))
        if o is None:
            return OrderReport(client_order_id=order.client_order_id, venue_order_id=None,
                               instrument=order.instrument, status="unknown", ts_event=0, side=order.side,
                               source="query")
        report = self._with_fills(o, "query")
        if self.market == "spot" and command.version > 0:
            earlier: list[Fill] = []
            for v in range(command.version):
                old = self._get_order(order.instrument, self._vid(order.client_order_id, v))
                if old is not None and float(old.get("executedQty", 0) or 0) > 0:
                    earlier.extend(self._trades(order.instrument, old["orderId"]))
            report = OrderReport(**{**report.__dict__, "fills": (*earlier, *report.fills)})
        return report

    def open_orders(self) -> Sequence[OrderReport]:
        """Open orders whose client ids are ticktape's (`TICKTAPE_VENUE_ID`), with their fills so far."""
        fn = self._client.get_open_orders if self.market == "spot" else self._client.futures_get_open_orders
        rows = self._call("open_orders", fn)
        return [self._with_fills(o, "reconcile") for o in rows if TICKTAPE_VENUE_ID.match(str(o["clientOrderId"]))]

    def recent_orders(self, instruments: Sequence[str]) -> Sequence[OrderReport]:
        """The latest orders (Binance's `allOrders` page: up to 500 per symbol, any status) of ticktape client
        ids on each of `instruments`, without their fills (one report per venue order)."""
        fn = self._client.get_all_orders if self.market == "spot" else self._client.futures_get_all_orders
        out: list[OrderReport] = []
        for symbol in sorted(set(instruments)):
            rows = self._call("all_orders", fn, symbol=symbol)
            out.extend(order_report(o, source="reconcile") for o in rows
                       if TICKTAPE_VENUE_ID.match(str(o.get("clientOrderId", ""))))
        return out

    def account(self) -> AccountReport:
        """Spot: free + locked per asset. Futures: signed position per symbol (positionRisk), wallet balances."""
        if self.market == "spot":
            a = self._call("account", self._client.get_account)
            balances = {str(b["asset"]): float(b["free"]) + float(b["locked"]) for b in a.get("balances") or ()}
            ts = int(a.get("updateTime") or 0) * 1_000_000 or self.clock.now()
            return AccountReport(ts_event=ts, balances=balances, source="rest")
        rows = self._call("account", self._client.futures_position_information)
        bal = self._call("account", self._client.futures_account_balance)
        positions = {str(r["symbol"]): float(r["positionAmt"]) for r in rows}
        balances = {str(b["asset"]): float(b["balance"]) for b in bal}
        return AccountReport(ts_event=self.clock.now(), positions=positions, balances=balances, source="rest")

    def close(self) -> None:
        """Stop the user-data stream and the HTTP session."""
        if self._stream is not None:
            self._stream.stop()
        self._client.close_connection()


def _retry_after(response: Any) -> float:
    """Seconds from a 429/418 answer's Retry-After header (1 s when absent or unreadable)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", 1)))
    except (AttributeError, TypeError, ValueError):
        return 1.0
