"""A local Betfair over real TLS sockets: the Stream API, the login/JSON-RPC APIs, and a small exchange.

`LocalBetfairExchange` (at the end) is the live venue's test double: orders, matching, the order
stream and scripted faults behind Betfair's documented request and answer shapes. The servers
below it also replay recorded market streams for the recorder's tests.

It speaks the Stream API's wire protocol as Betfair documents it: TLS, one JSON message per
CRLF-terminated line, a `connection` message on connect, `status` answers to `authentication`
and `marketSubscription`, then `mcm` market changes numbered by `clk`, `HEARTBEAT`s when idle.
A subscription that carries `clk` resumes after that change (`ct` = `RESUB_DELTA`), as Betfair
does, so a recorder that resubscribes correctly loses nothing across a dropped connection.

It replays a recorded market's changes and can cut a connection in the middle of a message.
`BetfairApiServer` answers the HTTPS side the recorder uses: the interactive login and the
betting API's `listMarketCatalogue` (JSON-RPC), checking the app key and session token.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from robots.sim.betfair_money import is_valid_price
from tests.venues.local_http import JsonHandler


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 (trusted by pointing REQUESTS_CA_BUNDLE at it;
    betfairlightweight's stream client does not verify certificates at all)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class ApingError(Exception):
    """An APINGException answer (JSON-RPC error) with Betfair's `errorCode`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class RpcBackend(Protocol):
    """What `BetfairApiServer` asks a stateful exchange: faults to play and methods to run."""

    def take_fault(self, method: str) -> Fault | None: ...

    def rpc(self, method: str, params: dict[str, Any]) -> Any: ...


@dataclass
class Fault:
    """One scripted fault for the next request of `method` (None: any method); see `LocalBetfairExchange`."""

    kind: str
    method: str | None = None
    delay: float = 1.0  # timeout_after: how long the answer waits (longer than the client's timeout)


RPC_FAULTS = frozenset({"drop_after", "error_5xx_before", "error_5xx_after", "timeout_after", "too_many_requests"})
STREAM_FAULTS = frozenset({"duplicate_update", "silent_stream"})


def _aping_error(request_id: Any, code: str) -> dict[str, Any]:
    # Betfair's JSON-RPC error shape for an APINGException (HTTP 200)
    return {"jsonrpc": "2.0", "id": request_id, "error": {
        "code": -32099, "message": "ANGX-0003" if code == "INVALID_SESSION_INFORMATION" else "ANGX-0006",
        "data": {"exceptionname": "APINGException",
                 "APINGException": {"errorCode": code, "errorDetails": "", "requestUUID": "local"}}}}


class BetfairApiServer:
    """Betfair's HTTPS endpoints: `POST {identity}login` (interactive login), `{identity}keepAlive`,
    `POST {api}betting/json-rpc/v1` and `{api}account/json-rpc/v1` (JSON-RPC).

    Logs in `username`/`password` for `app_key` only and issues session tokens (the first is
    `TOKEN`); every API call wants that app key and a live token (`expire_sessions` ends them all:
    INVALID_SESSION_INFORMATION). `listMarketCatalogue` answers `catalogues`; other methods go to
    `backend` (a `LocalBetfairExchange`), with its scripted faults. `calls` keeps every request.
    """

    TOKEN = "session-from-login"

    def __init__(self, catalogues: list[dict[str, Any]], username: str, password: str, app_key: str,
                 cert: Path, key: Path, backend: RpcBackend | None = None) -> None:
        self.calls: list[tuple[str, dict[str, str], Any]] = []  # (path, headers, body)
        self.tokens: set[str] = set()
        self.logins = 0
        self.backend = backend
        server = self
        expected_login = {"username": username, "password": password}

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # http.server's name for POST handlers
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                headers = dict(self.headers.items())
                if self.path == "/api/login":
                    form = {k: v[0] for k, v in parse_qs(body).items()}
                    server.calls.append((self.path, headers, form))
                    ok = form == expected_login and headers.get("X-Application") == app_key
                    token = server.issue_token() if ok else ""
                    self.reply_json({"token": token, "product": app_key,
                                     "status": "SUCCESS" if ok else "FAIL", "error": "" if ok else "INVALID_USERNAME"})
                elif self.path == "/api/keepAlive":
                    server.calls.append((self.path, headers, None))
                    token = headers.get("X-Authentication", "")
                    ok = token in server.tokens and headers.get("X-Application") == app_key
                    self.reply_json({"token": token, "product": app_key, "status": "SUCCESS" if ok else "FAIL",
                                     "error": "" if ok else "NO_SESSION"})
                elif self.path in ("/exchange/betting/json-rpc/v1", "/exchange/account/json-rpc/v1"):
                    request = json.loads(body)
                    server.calls.append((self.path, headers, request))
                    self._rpc(request, headers)
                else:
                    self.send_error(404)

            def _rpc(self, request: dict[str, Any], headers: dict[str, str]) -> None:
                rid = request.get("id")
                method = str(request.get("method", "")).rsplit("/", 1)[-1]
                if headers.get("X-Authentication") not in server.tokens or headers.get("X-Application") != app_key:
                    self.reply_json(_aping_error(rid, "INVALID_SESSION_INFORMATION"))
                    return
                if method == "listMarketCatalogue":
                    self.reply_json({"jsonrpc": "2.0", "id": rid, "result": catalogues})
                    return
                if server.backend is None:
                    self.reply_json({"jsonrpc": "2.0", "id": rid,
                                     "error": {"code": -32601, "message": "unknown method"}})
                    return
                fault = server.backend.take_fault(method)
                kind = fault.kind if fault else ""
                if kind == "error_5xx_before":
                    self.reply_json({"error": "service unavailable"}, 503)
                    return
                if kind == "too_many_requests":
                    self.reply_json(_aping_error(rid, "TOO_MANY_REQUESTS"))
                    return
                try:
                    answer: dict[str, Any] = {"jsonrpc": "2.0", "id": rid,
                                              "result": server.backend.rpc(method, request.get("params") or {})}
                except ApingError as exc:
                    answer = _aping_error(rid, exc.code)
                if kind == "drop_after":  # executed; the connection closes before any answer
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if kind == "error_5xx_after":
                    self.reply_json({"error": "internal error"}, 500)
                    return
                if kind == "timeout_after" and fault is not None:
                    time.sleep(fault.delay)
                with contextlib.suppress(OSError):  # a timed-out client is gone
                    self.reply_json(answer)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        port = self._http.server_address[1]
        self.identity_url = f"https://127.0.0.1:{port}/api/"
        self.api_url = f"https://127.0.0.1:{port}/exchange/"
        self._thread = threading.Thread(target=self._http.serve_forever, name="betfair-api-server", daemon=True)
        self._thread.start()

    def issue_token(self) -> str:
        """A new session token (the first one is `TOKEN`)."""
        token = self.TOKEN if self.logins == 0 else f"{self.TOKEN}-{self.logins}"
        self.logins += 1
        self.tokens.add(token)
        return token

    def expire_sessions(self) -> None:
        """Every session token issued so far stops working (as after Betfair's session lifetime)."""
        self.tokens.clear()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)


class BetfairStreamServer:
    """Serves `changes` (mcm messages of one recorded market, in order) to market subscriptions
    and `order_changes` (ocm messages) to order subscriptions, each connection on its own thread.

    `cuts[n]`: the n-th market subscription's connection is cut after that many changes, halfway
    through the next one (later ones run to the end, then idle until closed). `all_sent` /
    `orders_sent` are set once a connection has sent every market / order change. Every message
    a client sent is kept in `received`.
    """

    def __init__(self, changes: Sequence[dict[str, Any]], cuts: Sequence[int], cert: Path, key: Path,
                 order_changes: Sequence[dict[str, Any]] = ()) -> None:
        self.streams = {"marketSubscription": ("mcm", list(changes)), "orderSubscription": ("ocm", list(order_changes))}
        self.cuts = list(cuts)
        self.received: list[dict[str, Any]] = []
        self.all_sent = threading.Event()
        self.orders_sent = threading.Event()
        self._market_subscriptions = 0
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[ssl.SSLSocket] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, name="betfair-stream-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and drop the open connections (the client sees the server close them)."""
        self._closed.set()
        with self._changed:
            self._changed.notify_all()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close() alone does not)
        self._listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):  # already gone
                    conn.shutdown(socket.SHUT_RDWR)
        for t in [self._thread, *self._threads]:
            t.join(timeout=10)

    def _serve(self) -> None:
        connection = 0
        while not self._closed.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # closed
            t = threading.Thread(target=self._connection, args=(raw, connection), daemon=True)
            self._threads.append(t)
            t.start()
            connection += 1

    def _connection(self, raw: socket.socket, connection: int) -> None:
        try:
            with self._context.wrap_socket(raw, server_side=True) as conn:
                with self._lock:
                    self._open.add(conn)
                try:
                    self._session(conn, connection)
                finally:
                    with self._lock:
                        self._open.discard(conn)
        except OSError:
            pass  # the client went away, or close() cut us off

    def _session(self, conn: ssl.SSLSocket, connection: int) -> None:
        def send(message: dict[str, Any], whole: bool = True) -> None:
            data = json.dumps(message, separators=(",", ":")).encode() + b"\r\n"
            conn.sendall(data if whole else data[:len(data) // 2])

        send({"op": "connection", "connectionId": f"002-{connection:06d}"})
        with conn.makefile("rb") as lines:
            for line in lines:
                msg = json.loads(line)
                self.received.append(msg)
                send({"op": "status", "id": msg.get("id"), "statusCode": "SUCCESS", "connectionClosed": False})
                if msg.get("op") in self.streams and not self._stream(send, msg):
                    return  # cut

    def publish(self, change: dict[str, Any]) -> None:
        """Append one order change (`ocm` fields) to the order stream: subscribed connections send it now."""
        with self._changed:
            self.streams["orderSubscription"][1].append(change)
            self._changed.notify_all()

    def cut(self) -> None:
        """Drop every open connection (the clients see the server close them) and keep listening."""
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _stream(self, send: Any, sub: dict[str, Any]) -> bool:
        """Send the changes after the subscription's clk; False if this connection is cut.

        The order stream stays live: later `publish`ed changes follow, and a heartbeat every
        `heartbeatMs` when there are none (as Betfair does), until the server closes.
        """
        op, changes = self.streams[sub["op"]]
        cut = None
        if op == "mcm":
            with self._lock:
                n = self._market_subscriptions
                self._market_subscriptions += 1
            cut = self.cuts[n] if n < len(self.cuts) else None
        resume = sub.get("clk")
        start = int(resume) + 1 if resume else 0
        for i in range(start, len(changes)):
            message = dict(changes[i], op=op, id=sub["id"], clk=str(i))
            if i == start and "ct" not in message:  # (a recorded heartbeat stays one)
                message["ct"] = "RESUB_DELTA" if resume else "SUB_IMAGE"
                if not resume:
                    message["initialClk"] = "initial"
            if cut is not None and i - start == cut:
                send(message, whole=False)
                return False
            send(message)
        if op == "mcm":
            if changes:
                send({"op": op, "id": sub["id"], "clk": str(len(changes) - 1), "ct": "HEARTBEAT",
                      "pt": changes[-1]["pt"]})
            self.all_sent.set()
            return True
        sent = len(changes)
        if not changes:  # an empty image still starts the stream's clocks
            send({"op": op, "id": sub["id"], "ct": "SUB_IMAGE", "initialClk": "initial", "clk": "-1",
                  "pt": int(time.time() * 1000)})
        self.orders_sent.set()
        heartbeat = max(0.1, (sub.get("heartbeatMs") or 5000) / 1000)
        while not self._closed.is_set():
            with self._changed:
                if len(changes) == sent:
                    self._changed.wait(heartbeat)
                fresh = list(enumerate(changes))[sent:]
            for i, change in fresh:
                send(dict(change, op=op, id=sub["id"], clk=str(i)))
            sent += len(fresh)
            if not fresh:
                send({"op": op, "id": sub["id"], "clk": str(sent - 1), "ct": "HEARTBEAT",
                      "pt": int(time.time() * 1000)})
        return True


# ---------------------------------------------------------------------------------------------- the exchange

def _execution_report(params: dict[str, Any], market_id: str, ok: bool, reports: list[Any]) -> dict[str, Any]:
    """A cancel/replace/update execution report: SUCCESS, or FAILURE (BET_ACTION_ERROR) if an instruction failed."""
    return {"customerRef": params.get("customerRef"), "status": "SUCCESS" if ok else "FAILURE",
            **({} if ok else {"errorCode": "BET_ACTION_ERROR"}), "marketId": market_id, "instructionReports": reports}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _c(size: Any) -> int:
    """A size in integer cents."""
    return round(float(size) * 100)


@dataclass
class Bet:
    """One bet in the ledger, in integer cents and hundredths."""

    bet_id: str
    market_id: str
    selection_id: int
    handicap: float
    side: str  # BACK / LAY
    order_type: str  # LIMIT / MARKET_ON_CLOSE / LIMIT_ON_CLOSE (BSP: size_c is the liability)
    price_h: int
    size_c: int
    persistence: str
    fill_or_kill: bool
    min_fill_c: int
    rfo: str | None
    rfs: str | None
    placed_ms: int
    matched_c: int = 0
    notional: int = 0  # sum of price_h * cents over the matches: avp = notional / matched
    cancelled_c: int = 0
    lapsed_c: int = 0
    voided_c: int = 0
    complete: bool = False
    matched_ms: int = 0
    fills: list[tuple[int, int, str]] = field(default_factory=list)  # (price_h, cents, MAKER/TAKER)
    outcome: str | None = None  # WON / LOST once settled
    settled_ms: int = 0

    @property
    def profit(self) -> float:
        """Profit of the matched part once settled (before commission): a winning back wins (price - 1) x
        stake per match; a winning lay keeps the stakes; losing ones pay the other side's."""
        winnings_c = round(self.notional / 100) - self.matched_c  # sum of (price - 1) x size, in cents
        if self.side == "BACK":
            return (winnings_c if self.outcome == "WON" else -self.matched_c) / 100
        return (self.matched_c if self.outcome == "WON" else -winnings_c) / 100

    @property
    def remaining_c(self) -> int:
        return self.size_c - self.matched_c - self.cancelled_c - self.lapsed_c - self.voided_c

    @property
    def avp(self) -> float:
        return round(self.notional / self.matched_c / 100, 2) if self.matched_c else 0.0


class LocalBetfairExchange:
    """Betfair for the live venue's tests: login, keepAlive, JSON-RPC betting/account APIs and the order stream.

    Matching model (deterministic): `set_prices(market, selection, back, lay)` sets the best price
    available to back and to lay (with optional sizes; None = unlimited). A BACK at price <= the
    available back price matches at once at that price (TAKER); a LAY at price >= the available lay
    price likewise; otherwise the bet rests and matches at its own price (MAKER) when a later
    `set_prices` makes it marketable. `turn_in_play` lapses unmatched LAPSE bets; `settle` clears a
    market (matched parts SETTLED, unmatched ones lapse; the bets leave listCurrentOrders for
    listClearedOrders). `suspend`/`resume` a market: placing is refused with MARKET_SUSPENDED.
    BSP bets (MARKET_ON_CLOSE, LIMIT_ON_CLOSE) wait for `reconcile_bsp(market, {selection: SP})`.

    `customerRef` de-duplication: a second request with a customerRef seen in the last
    `dedup_window` seconds is refused (status FAILURE, errorCode DUPLICATE_TRANSACTION).

    Faults (`inject(kind, method=None)`: a queue, each taken by the next request it matches):
    drop_after (run it, close the connection unanswered), error_5xx_before (HTTP 503, nothing run),
    error_5xx_after (run it, HTTP 500), timeout_after (run it, answer after `delay` s),
    too_many_requests (TOO_MANY_REQUESTS, nothing run); for the order stream, taken by the next
    update: duplicate_update (sent twice), silent_stream (that update and later ones are held until
    `resume_stream()`). `cut_stream()` drops the stream connections.

    Ground truth: `bets` (bet id -> `Bet`, with every fill), `executed` (every request that ran).
    """

    def __init__(self, cert: Path, key: Path, *, username: str = "user", password: str = "pa55word",
                 app_key: str = "app-key", balance: float = 1000.0, dedup_window: float = 60.0,
                 min_stake: float = 1.0) -> None:
        self.username, self.password, self.app_key = username, password, app_key
        self.balance_c = _c(balance)
        self.dedup_window = dedup_window
        self.min_stake_c = _c(min_stake)
        self.lock = threading.RLock()
        self.bets: dict[str, Bet] = {}
        self.executed: list[tuple[str, dict[str, Any]]] = []
        self.faults: list[Fault] = []
        self.prices: dict[tuple[str, int], list[Any]] = {}  # (market, selection) -> [back, lay, back_c, lay_c]
        self.suspended: set[str] = set()
        self.settled: set[str] = set()
        self._refs: dict[str, float] = {}
        self._next_bet = 100_000_000_000
        self._silent = False
        self._held: list[dict[str, Any]] = []
        self.api = BetfairApiServer([], username, password, app_key, cert, key, backend=self)
        self.stream = BetfairStreamServer([], [], cert, key)

    def close(self) -> None:
        """Stop both servers."""
        self.stream.close()
        self.api.close()

    def settings(self, ca_bundle: Path, **overrides: object) -> dict[str, object]:
        """`BetfairVenue.from_settings` settings pointing at this exchange."""
        return {"identity_url": self.api.identity_url, "api_url": self.api.api_url, "stream_address": "127.0.0.1",
                "stream_port": self.stream.port, "ca_bundle": str(ca_bundle), "heartbeat_ms": 500,
                "backoff_initial": 0.05, "backoff_max": 0.2, **overrides}

    def credentials_env(self) -> dict[str, str]:
        """The environment `load_credentials` reads for this exchange's account."""
        return {"BETFAIR_USERNAME": self.username, "BETFAIR_PASSWORD": self.password, "BETFAIR_APP_KEY": self.app_key}

    # ---------------------------------------------------------------- test controls

    def inject(self, kind: str, method: str | None = None, delay: float = 1.0) -> None:
        """Queue one fault (see the class docstring)."""
        if kind not in RPC_FAULTS | STREAM_FAULTS:
            raise ValueError(f"unknown fault {kind!r}")
        with self.lock:
            self.faults.append(Fault(kind, method, delay))

    def take_fault(self, method: str) -> Fault | None:
        """The first queued request fault for `method`, removed from the queue."""
        return self._take(lambda f: f.kind in RPC_FAULTS and f.method in (None, method))

    def _take(self, match: Any) -> Fault | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if match(fault):
                    return self.faults.pop(i)
        return None

    def expire_sessions(self) -> None:
        """End every session (the next call gets INVALID_SESSION_INFORMATION)."""
        self.api.expire_sessions()

    def resume_stream(self) -> None:
        """Send the order updates held since a silent_stream fault, and the next ones at once."""
        with self.lock:
            self._silent = False
            held, self._held = self._held, []
        for message in held:
            self.stream.publish(message)

    def cut_stream(self) -> None:
        """Drop the order stream connections (a client resubscribes from its clk)."""
        self.stream.cut()

    def set_prices(self, market_id: str, selection_id: int, back: float | None, lay: float | None,
                   back_size: float | None = None, lay_size: float | None = None) -> None:
        """The best prices available to back and to lay now (sizes None: unlimited); resting bets made
        marketable match at their own price."""
        with self.lock:
            book = [back, lay, None if back_size is None else _c(back_size), None if lay_size is None else _c(lay_size)]
            self.prices[(market_id, selection_id)] = book
            now = self._ms()
            for bet in list(self.bets.values()):
                if (bet.market_id, bet.selection_id) == (market_id, selection_id) and not bet.complete \
                        and bet.order_type == "LIMIT" and self._match(bet, book, now, maker=True):
                    self._publish(bet, now)

    def suspend(self, market_id: str) -> None:
        """The market is suspended: placements are refused."""
        with self.lock:
            self.suspended.add(market_id)

    def turn_in_play(self, market_id: str) -> None:
        """Unmatched LAPSE bets of the market lapse."""
        with self.lock:
            now = self._ms()
            for bet in self.bets.values():
                if bet.market_id == market_id and not bet.complete and bet.persistence == "LAPSE":
                    bet.lapsed_c += bet.remaining_c
                    bet.complete = True
                    self._publish(bet, now)

    def reconcile_bsp(self, market_id: str, starting_prices: dict[int, float]) -> None:
        """The off: the starting price of each selection is set and BSP bets are matched at it in full
        (MARKET_ON_CLOSE always; LIMIT_ON_CLOSE when the SP is no worse than its limit: a BACK's SP at
        least its price, a LAY's at most), the others lapse. A BACK's liability is its stake; a LAY's
        stake is its liability / (SP - 1), to the cent."""
        with self.lock:
            now = self._ms()
            for bet in self.bets.values():
                sp = starting_prices.get(bet.selection_id)
                if bet.market_id != market_id or bet.complete or bet.order_type == "LIMIT" or sp is None:
                    continue
                sp_h = round(sp * 100)
                limited = bet.order_type == "LIMIT_ON_CLOSE"
                if limited and (sp_h < bet.price_h if bet.side == "BACK" else sp_h > bet.price_h):
                    bet.lapsed_c += bet.remaining_c
                else:
                    stake_c = bet.size_c if bet.side == "BACK" else round(bet.size_c * 100 / (sp_h - 100))
                    bet.size_c = stake_c  # Betfair reports the matched stake as the bet's size from here on
                    bet.matched_c, bet.notional, bet.matched_ms = stake_c, sp_h * stake_c, now
                    bet.fills.append((sp_h, stake_c, "TAKER"))
                bet.complete = True
                self._publish(bet, now)

    def settle(self, market_id: str, winner: int) -> None:
        """Close the market: unmatched parts lapse, matched bets are settled (`winner` is the winning selection)."""
        with self.lock:
            now = self._ms()
            for bet in self.bets.values():
                if bet.market_id != market_id:
                    continue
                if not bet.complete:
                    bet.lapsed_c += bet.remaining_c
                    bet.complete = True
                    self._publish(bet, now)
                won = (bet.selection_id == winner) == (bet.side == "BACK")
                bet.outcome = "WON" if won else "LOST"
                bet.settled_ms = now
            self.settled.add(market_id)

    def bets_for(self, customer_order_ref: str) -> list[Bet]:
        """Every bet placed with this customerOrderRef (ground truth)."""
        with self.lock:
            return [b for b in self.bets.values() if b.rfo == customer_order_ref]

    # ---------------------------------------------------------------- JSON-RPC

    def rpc(self, method: str, params: dict[str, Any]) -> Any:
        """Run one JSON-RPC method (raises `ApingError` for Betfair's APINGExceptions)."""
        handler = {"placeOrders": self._place_orders, "cancelOrders": self._cancel_orders,
                   "replaceOrders": self._replace_orders, "updateOrders": self._update_orders,
                   "listCurrentOrders": self._list_current, "listClearedOrders": self._list_cleared,
                   "getAccountFunds": self._funds}.get(method)
        if handler is None:
            raise ApingError("INVALID_INPUT_DATA")
        with self.lock:
            self.executed.append((method, params))
            return handler(params)

    @staticmethod
    def _ms() -> int:
        return int(time.time() * 1000)

    def _duplicate(self, params: dict[str, Any]) -> dict[str, Any] | None:
        ref = params.get("customerRef")
        if not ref:
            return None
        now = time.monotonic()
        seen = self._refs.get(ref)
        if seen is not None and now - seen < self.dedup_window:
            return {"customerRef": ref, "status": "FAILURE", "errorCode": "DUPLICATE_TRANSACTION",
                    "marketId": params.get("marketId"), "instructionReports": []}
        self._refs[ref] = now
        return None

    def _failure(self, params: dict[str, Any], code: str, instruction: dict[str, Any], inner: str) -> dict[str, Any]:
        return {"customerRef": params.get("customerRef"), "status": "FAILURE", "errorCode": code,
                "marketId": params.get("marketId"),
                "instructionReports": [{"status": "FAILURE", "errorCode": inner, "instruction": instruction}]}

    def _place_orders(self, params: dict[str, Any]) -> dict[str, Any]:
        duplicate = self._duplicate(params)
        if duplicate:
            return duplicate
        market_id = str(params["marketId"])
        instructions = params.get("instructions") or []
        if len(instructions) != 1:
            raise ApingError("INVALID_INPUT_DATA")  # the venue sends one instruction per call
        ins = instructions[0]
        if market_id in self.suspended or market_id in self.settled:
            return self._failure(params, "MARKET_SUSPENDED", ins, "ERROR_IN_ORDER")
        problem = self._invalid(ins)
        if problem:
            return self._failure(params, "BET_ACTION_ERROR", ins, problem)
        bet = self._new_bet(market_id, ins, params.get("customerStrategyRef"))
        return {"customerRef": params.get("customerRef"), "status": "SUCCESS", "marketId": market_id,
                "instructionReports": [self._place_report(bet, ins)]}

    def _invalid(self, ins: dict[str, Any]) -> str | None:
        if ins.get("orderType") == "MARKET_ON_CLOSE":
            return None if _c((ins.get("marketOnCloseOrder") or {}).get("liability", 0)) > 0 else "INVALID_BET_SIZE"
        if ins.get("orderType") == "LIMIT_ON_CLOSE":
            loc = ins.get("limitOnCloseOrder") or {}
            if not is_valid_price(float(loc.get("price", 0))):
                return "INVALID_ODDS"
            return None if _c(loc.get("liability", 0)) > 0 else "INVALID_BET_SIZE"
        if ins.get("orderType") != "LIMIT":
            return "INVALID_ORDER_TYPE"  # hypothetical code: the test venue refuses what it does not model
        limit = ins.get("limitOrder") or {}
        if not is_valid_price(float(limit.get("price", 0))):
            return "INVALID_ODDS"
        size = float(limit.get("size", 0))
        if _c(size) < self.min_stake_c or abs(_c(size) - size * 100) > 1e-6:
            return "INVALID_BET_SIZE"
        return None

    def _new_bet(self, market_id: str, ins: dict[str, Any], rfs: str | None, size_c: int | None = None,
                 price_h: int | None = None, persistence: str | None = None) -> Bet:
        now = self._ms()
        self._next_bet += 1
        order_type = str(ins.get("orderType"))
        bsp = order_type in ("MARKET_ON_CLOSE", "LIMIT_ON_CLOSE")
        limit = ins.get("limitOnCloseOrder" if order_type == "LIMIT_ON_CLOSE" else "limitOrder") or {}
        fok = limit.get("timeInForce") == "FILL_OR_KILL"
        liability = (ins.get("marketOnCloseOrder") or limit).get("liability")
        bet = Bet(
            bet_id=str(self._next_bet), market_id=market_id, selection_id=int(ins["selectionId"]),
            handicap=float(ins.get("handicap") or 0), side=str(ins["side"]), order_type=order_type,
            price_h=price_h if price_h is not None else round(float(limit.get("price", 0)) * 100),
            size_c=size_c if size_c is not None else _c(liability if bsp else limit["size"]),
            persistence=persistence or ("MARKET_ON_CLOSE" if bsp else str(limit.get("persistenceType") or "LAPSE")),
            fill_or_kill=fok, min_fill_c=_c(limit.get("minFillSize") or 0), rfo=ins.get("customerOrderRef"),
            rfs=rfs, placed_ms=now)
        self.bets[bet.bet_id] = bet
        book = self.prices.get((market_id, bet.selection_id))
        if not bsp and book is not None:
            self._match(bet, book, now, maker=False)
        if fok and not bet.complete:
            if bet.matched_c < bet.min_fill_c:  # all or nothing below the minimum fill: undo
                bet.matched_c = bet.notional = 0
                bet.fills.clear()
            bet.lapsed_c += bet.remaining_c
            bet.complete = True
        self._publish(bet, now)
        return bet

    def _match(self, bet: Bet, book: list[Any], now: int, maker: bool) -> bool:
        """Match what the book allows; True if anything matched."""
        back, lay, back_c, lay_c = book
        if bet.side == "BACK":
            marketable, price, avail, slot = back is not None and bet.price_h <= round(back * 100), back, back_c, 2
        else:
            marketable, price, avail, slot = lay is not None and bet.price_h >= round(lay * 100), lay, lay_c, 3
        if not marketable or bet.remaining_c <= 0:
            return False
        size = bet.remaining_c if avail is None else min(bet.remaining_c, avail)
        if size <= 0:
            return False
        if avail is not None:
            book[slot] = avail - size
        price_h = bet.price_h if maker else round(price * 100)
        bet.matched_c += size
        bet.notional += price_h * size
        bet.matched_ms = now
        bet.fills.append((price_h, size, "MAKER" if maker else "TAKER"))
        if bet.remaining_c == 0:
            bet.complete = True
        return True

    def _place_report(self, bet: Bet, ins: dict[str, Any]) -> dict[str, Any]:
        return {"status": "SUCCESS", "instruction": ins, "betId": bet.bet_id, "placedDate": _iso(bet.placed_ms),
                "averagePriceMatched": bet.avp, "sizeMatched": bet.matched_c / 100,
                "orderStatus": "EXECUTION_COMPLETE" if bet.complete else "EXECUTABLE"}

    def _live_bet(self, market_id: str, ins: dict[str, Any]) -> Bet | None:
        bet = self.bets.get(str(ins.get("betId")))
        if bet is None or bet.market_id != market_id or bet.complete:
            return None
        return bet

    def _cancel_orders(self, params: dict[str, Any]) -> dict[str, Any]:
        duplicate = self._duplicate(params)
        if duplicate:
            return duplicate
        market_id = str(params.get("marketId"))
        out, ok = [], True
        for ins in params.get("instructions") or []:
            bet = self._live_bet(market_id, ins)
            if bet is None:
                out.append({"status": "FAILURE", "errorCode": "BET_TAKEN_OR_LAPSED", "instruction": ins})
                ok = False
                continue
            reduce = ins.get("sizeReduction")
            size = bet.remaining_c if reduce is None else min(bet.remaining_c, _c(reduce))
            bet.cancelled_c += size
            bet.complete = bet.remaining_c == 0
            now = self._ms()
            self._publish(bet, now)
            out.append({"status": "SUCCESS", "instruction": ins, "sizeCancelled": size / 100,
                        "cancelledDate": _iso(now)})
        return _execution_report(params, market_id, ok, out)

    def _replace_orders(self, params: dict[str, Any]) -> dict[str, Any]:
        duplicate = self._duplicate(params)
        if duplicate:
            return duplicate
        market_id = str(params["marketId"])
        out, ok = [], True
        for ins in params.get("instructions") or []:
            bet = self._live_bet(market_id, ins)
            if bet is None or bet.order_type != "LIMIT" or not is_valid_price(float(ins.get("newPrice", 0))):
                code = "BET_TAKEN_OR_LAPSED" if bet is None else "INVALID_ODDS"
                out.append({"status": "FAILURE", "errorCode": code,
                            "cancelInstructionReport": {"status": "FAILURE", "errorCode": code,
                                                        "instruction": {"betId": ins.get("betId")}}})
                ok = False
                continue
            now = self._ms()
            size = bet.remaining_c
            bet.cancelled_c += size
            bet.complete = True
            self._publish(bet, now)
            place = {"selectionId": bet.selection_id, "handicap": bet.handicap, "side": bet.side,
                     "orderType": "LIMIT", "customerOrderRef": bet.rfo,
                     "limitOrder": {"size": size / 100, "price": float(ins["newPrice"]),
                                    "persistenceType": bet.persistence}}
            new = self._new_bet(market_id, place, bet.rfs, size_c=size, persistence=bet.persistence)
            out.append({"status": "SUCCESS",
                        "cancelInstructionReport": {"status": "SUCCESS", "instruction": {"betId": bet.bet_id},
                                                    "sizeCancelled": size / 100, "cancelledDate": _iso(now)},
                        "placeInstructionReport": self._place_report(new, place)})
        return _execution_report(params, market_id, ok, out)

    def _update_orders(self, params: dict[str, Any]) -> dict[str, Any]:
        duplicate = self._duplicate(params)
        if duplicate:
            return duplicate
        market_id = str(params["marketId"])
        out, ok = [], True
        for ins in params.get("instructions") or []:
            bet = self._live_bet(market_id, ins)
            if bet is None:
                out.append({"status": "FAILURE", "errorCode": "BET_TAKEN_OR_LAPSED", "instruction": ins})
                ok = False
                continue
            bet.persistence = str(ins["newPersistenceType"])
            self._publish(bet, self._ms())
            out.append({"status": "SUCCESS", "instruction": ins})
        return _execution_report(params, market_id, ok, out)

    def _summary(self, bet: Bet) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "betId": bet.bet_id, "marketId": bet.market_id, "selectionId": bet.selection_id,
            "handicap": bet.handicap, "priceSize": {"price": bet.price_h / 100, "size": bet.size_c / 100},
            "bspLiability": bet.size_c / 100 if bet.order_type != "LIMIT" else 0.0, "side": bet.side,
            "status": "EXECUTION_COMPLETE" if bet.complete else "EXECUTABLE", "persistenceType": bet.persistence,
            "orderType": bet.order_type, "placedDate": _iso(bet.placed_ms), "averagePriceMatched": bet.avp,
            "sizeMatched": bet.matched_c / 100, "sizeRemaining": bet.remaining_c / 100,
            "sizeLapsed": bet.lapsed_c / 100, "sizeCancelled": bet.cancelled_c / 100,
            "sizeVoided": bet.voided_c / 100, "regulatorCode": "GIBRALTAR REGULATOR"}
        if bet.matched_ms:
            summary["matchedDate"] = _iso(bet.matched_ms)
        if bet.rfo:
            summary["customerOrderRef"] = bet.rfo
        if bet.rfs:
            summary["customerStrategyRef"] = bet.rfs
        return summary

    def _list_current(self, params: dict[str, Any]) -> dict[str, Any]:
        projection = params.get("orderProjection") or "ALL"
        wanted = [b for b in sorted(self.bets.values(), key=lambda b: b.bet_id)
                  if b.market_id not in self.settled
                  and (projection == "ALL" or (projection == "EXECUTABLE") != b.complete)
                  and (not params.get("betIds") or b.bet_id in params["betIds"])
                  and (not params.get("marketIds") or b.market_id in params["marketIds"])
                  and (not params.get("customerOrderRefs") or b.rfo in params["customerOrderRefs"])
                  and (not params.get("customerStrategyRefs") or b.rfs in params["customerStrategyRefs"])]
        start = int(params.get("fromRecord") or 0)
        count = int(params.get("recordCount") or 1000)
        page = wanted[start:start + count]
        return {"currentOrders": [self._summary(b) for b in page], "moreAvailable": start + count < len(wanted)}

    def _list_cleared(self, params: dict[str, Any]) -> dict[str, Any]:
        status = params.get("betStatus")
        out = []
        for bet in sorted(self.bets.values(), key=lambda b: b.bet_id):
            if bet.market_id not in self.settled:
                continue
            if params.get("customerOrderRefs") and bet.rfo not in params["customerOrderRefs"]:
                continue
            if params.get("betIds") and bet.bet_id not in params["betIds"]:
                continue
            kind = "SETTLED" if bet.matched_c else ("LAPSED" if bet.lapsed_c else "CANCELLED")
            if kind != status:
                continue
            out.append({"eventTypeId": "7", "marketId": bet.market_id, "selectionId": bet.selection_id,
                        "handicap": bet.handicap, "betId": bet.bet_id, "placedDate": _iso(bet.placed_ms),
                        "persistenceType": bet.persistence, "orderType": bet.order_type, "side": bet.side,
                        "priceRequested": bet.price_h / 100, "betOutcome": bet.outcome, "priceMatched": bet.avp,
                        "sizeSettled": bet.matched_c / 100, "sizeCancelled": (bet.cancelled_c + bet.lapsed_c) / 100,
                        "customerOrderRef": bet.rfo, "customerStrategyRef": bet.rfs,
                        "settledDate": _iso(bet.settled_ms),
                        **({"profit": bet.profit} if kind == "SETTLED" else {})})
        return {"clearedOrders": out, "moreAvailable": False}

    def _funds(self, params: dict[str, Any]) -> dict[str, Any]:
        exposure = 0
        for bet in self.bets.values():
            if bet.market_id in self.settled:
                continue
            live = bet.matched_c + bet.remaining_c
            exposure += live if bet.side == "BACK" or bet.order_type != "LIMIT" else live * (bet.price_h - 100) // 100
        return {"availableToBetBalance": (self.balance_c - exposure) / 100, "exposure": -exposure / 100,
                "retainedCommission": 0.0, "exposureLimit": -10000.0, "discountRate": 0.0, "pointsBalance": 0,
                "wallet": "UK"}

    # ---------------------------------------------------------------- order stream

    def _publish(self, bet: Bet, now: int) -> None:
        uo: dict[str, Any] = {
            "id": bet.bet_id, "p": bet.price_h / 100, "s": bet.size_c / 100, "side": bet.side[0],
            "status": "EC" if bet.complete else "E", "pt": {"LAPSE": "L", "PERSIST": "P"}.get(bet.persistence, "MOC"),
            "ot": {"LIMIT": "L", "LIMIT_ON_CLOSE": "LOC"}.get(bet.order_type, "MOC"), "pd": bet.placed_ms,
            "sm": bet.matched_c / 100,
            "sr": bet.remaining_c / 100, "sl": bet.lapsed_c / 100, "sc": bet.cancelled_c / 100,
            "sv": bet.voided_c / 100, "avp": bet.avp, "rc": "REG_GGC", "rac": ""}
        if bet.matched_ms:
            uo["md"] = bet.matched_ms
        if bet.rfo:
            uo["rfo"] = bet.rfo
        if bet.rfs:
            uo["rfs"] = bet.rfs
        runner: dict[str, Any] = {"id": bet.selection_id, "uo": [uo]}
        if bet.handicap:
            runner["hc"] = bet.handicap
        message = {"pt": now, "oc": [{"id": bet.market_id, "orc": [runner]}]}
        copies = 2 if self._take(lambda f: f.kind == "duplicate_update") else 1
        if self._take(lambda f: f.kind == "silent_stream"):
            self._silent = True
        for _ in range(copies):
            if self._silent:
                self._held.append(message)
            else:
                self.stream.publish(message)
