"""`BetfairVenue`: the gateway's port (`robots.live.exchange.LiveVenue`) to the Betfair exchange.

Thin I/O over betfairlightweight (JSON-RPC betting and account APIs, the order stream); what a
message means is decided in `producers.betfair.execution` (pure). Outcomes of a call:

- Betfair answered: an `OrderReport` (accepted, matched at once, or `rejected` with Betfair's
  error codes). A `DUPLICATE_TRANSACTION` answer means the same command (same `customerRef`)
  already ran: the order is looked up and reported instead.
- Betfair may or may not have run it (a timeout, a connection dropped after sending, HTTP 5xx, an
  execution report with status TIMEOUT, APING TIMEOUT_ERROR/UNEXPECTED_ERROR): `OutcomeUnknown`.
- Betfair refused to run it (TOO_MANY_REQUESTS, SERVICE_BUSY, HTTP 429) or this venue's own
  hourly transaction budget is spent: `VenueBusy`.
- An expired session (INVALID_SESSION_INFORMATION, NO_SESSION) is refused before anything runs:
  log in again and repeat the call once.

Cancel and replace act on the bet's state as Betfair has it now (read first with
listCurrentOrders, which is not a charged transaction), so repeating one after an
`OutcomeUnknown` does nothing twice: a bet already cancelled is reported, a price already
replaced is not replaced again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import betfairlightweight
import requests
from betfairlightweight.exceptions import APIError, BetfairError, InvalidResponse, KeepAliveError, StatusCodeError

from producers.betfair import execution
from producers.betfair.live import (
    Credentials,
    RecordOptions,
    betfairlightweight_connect,
    load_credentials,
    log_in,
    run_stream,
)
from producers.betfair.session import StreamSession
from robots.live.exchange import (
    AccountReport,
    Command,
    OrderReport,
    OutcomeUnknown,
    Refusal,
    ReportSink,
    VenueBusy,
    is_client_order_id,
)
from robots.sim.betfair_state import parse_instrument
from ticktape.errors import TicktapeError
from ticktape.events import FeedGap, PlaceOrder, ReplaceOrder
from ticktape.retry import backoff_delays
from ticktape.timeutil import Clock, WallClock

log = logging.getLogger(__name__)

T = TypeVar("T")

SESSION_ERRORS = frozenset({"INVALID_SESSION_INFORMATION", "NO_SESSION"})
BUSY_ERRORS = frozenset({"TOO_MANY_REQUESTS", "SERVICE_BUSY"})
UNKNOWN_ERRORS = frozenset({"TIMEOUT_ERROR", "UNEXPECTED_ERROR"})  # Betfair may have run the request
CLEARED_STATUSES = ("SETTLED", "VOIDED", "LAPSED", "CANCELLED")


class BetfairRefused(TicktapeError):
    """Betfair answered with an error: the request did not run (`code`: its APINGException error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class BetfairVenueSettings:
    """Where and how `BetfairVenue` talks to Betfair (all optional; the defaults are Betfair's .com exchange)."""

    locale: str | None = None  # betfairlightweight's jurisdiction (spain, italy, ...); None: .com
    identity_url: str | None = None  # overrides of the login and API base URLs (tests: a local server)
    api_url: str | None = None
    stream_host: str | None = None  # betfairlightweight's stream host name (None: production, "integration")
    stream_address: str | None = None  # with stream_port: connect there instead (tests: a local server)
    stream_port: int | None = None
    ca_bundle: str | None = None  # a CA file to trust for HTTPS (tests: the local server's certificate)
    timeout: float = 16.0  # read timeout of a call, seconds: past it the outcome is unknown
    connect_timeout: float = 3.05
    transactions_per_hour: int = 5000  # Betfair charges beyond 5000 per hour: never more in any rolling hour
    keep_alive_interval: float = 15 * 60.0  # sessions last hours (20 min in Italy); keepAlive well before
    heartbeat_ms: int = 5000  # order stream heartbeat (500..5000): also how fast `close` ends the stream
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    currency: str = "GBP"
    min_stake: float = 1.0
    min_bsp_liability: float = 10.0

    @classmethod
    def from_mapping(cls, settings: Mapping[str, object]) -> BetfairVenueSettings:
        """Settings from a mapping (a config file's table): unknown keys are an error, not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TicktapeError(f"unknown Betfair venue settings: {', '.join(unknown)} "
                                f"(known: {', '.join(sorted(known))})")
        return cls(**settings)  # type: ignore[arg-type]


class TransactionBudget:
    """At most `per_hour` transactions in any rolling hour: `take` refuses (VenueBusy) rather than exceed it.

    A rolling hour is stricter than Betfair's calendar hours, so staying inside it never incurs the charge.
    """

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic, window: float = 3600.0) -> None:
        self.per_hour = per_hour
        self.window = window
        self._clock = clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self, n: int = 1) -> None:
        """Count `n` transactions now, or raise `VenueBusy` with the wait until they fit."""
        with self._lock:
            now = self._clock()
            while self._sent and self._sent[0] <= now - self.window:
                self._sent.popleft()
            if len(self._sent) + n > self.per_hour:
                # the wait until enough of the oldest leave the window
                free_at = self._sent[len(self._sent) + n - self.per_hour - 1] + self.window
                raise VenueBusy(f"Betfair transaction budget: {len(self._sent)} of {self.per_hour} used in the "
                                f"last hour", retry_after=max(0.0, free_at - now))
            self._sent.extend([now] * n)

    @property
    def used(self) -> int:
        """Transactions counted in the current window."""
        with self._lock:
            now = self._clock()
            return sum(1 for t in self._sent if t > now - self.window)


class _SecretsFilter(logging.Filter):
    """betfairlightweight logs every stream message it sends at DEBUG, the authentication (app key and session
    token) included: drop that record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "authentication" not in str(record.args)


logging.getLogger("betfairlightweight.streaming.betfairstream").addFilter(_SecretsFilter())


def _aping_code(exc: APIError) -> tuple[str, str]:
    """(errorCode, message) of a JSON-RPC error answer."""
    error = (exc.response or {}).get("error") or {}
    data = error.get("data") or {}
    detail = data.get("APINGException") or data.get("AccountAPINGException") or {}
    return str(detail.get("errorCode") or error.get("message") or "UNKNOWN"), str(detail.get("errorDetails") or "")


class BetfairVenue:
    """The Betfair exchange behind the gateway (implements `robots.live.exchange.LiveVenue`)."""

    name = "betfair"
    settles = True  # matched bets are settled when their market is: `query` reports the profit then

    def __init__(self, client: Any, credentials: Credentials, settings: BetfairVenueSettings, *,
                 clock: Clock | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._credentials = credentials
        self.settings = settings
        self._clock = clock or WallClock()
        self._monotonic = monotonic
        self.budget = TransactionBudget(settings.transactions_per_hour, monotonic)
        self._session_lock = threading.Lock()
        self._last_keep_alive: float | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sink: ReportSink | None = None
        self._stream_needs_login = False
        self.logins = 0

    @classmethod
    def from_settings(cls, settings: Mapping[str, object], env: dict[str, str] | None = None,
                      credentials_file: str | None = None) -> BetfairVenue:
        """A venue from settings (see `BetfairVenueSettings`) and credentials (`load_credentials`: the file, else
        BETFAIR_USERNAME / BETFAIR_PASSWORD / BETFAIR_APP_KEY / BETFAIR_CERTS in `env` or the environment)."""
        options = BetfairVenueSettings.from_mapping(settings)
        credentials = load_credentials(credentials_file, env)
        session = requests.Session()
        if options.ca_bundle:
            session.verify = options.ca_bundle
            # requests prefers REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment over Session.verify:
            # an explicit CA must not be overridden by the process environment.
            session.trust_env = False
        client = betfairlightweight.APIClient(credentials.username, credentials.password.get(),
                                              app_key=credentials.app_key.get(), certs=credentials.certs,
                                              locale=options.locale, lightweight=True, session=session)
        # The base URLs are per-client attributes set from the locale: overriding them on this client
        # points it elsewhere without touching betfairlightweight's class tables.
        if options.identity_url:
            client.identity_uri = client.identity_cert_uri = options.identity_url
        if options.api_url:
            client.api_uri = options.api_url
        for endpoint in (client.betting, client.account, client.login, client.login_interactive, client.keep_alive):
            endpoint.connect_timeout = options.connect_timeout
            endpoint.read_timeout = options.timeout
        return cls(client, credentials, options)

    def __repr__(self) -> str:
        return f"BetfairVenue(locale={self.settings.locale!r}, api_url={self.settings.api_url!r})"

    # ------------------------------------------------------------------ session

    def _login(self) -> None:
        with self._session_lock:
            log.info("betfair: logging in")
            try:
                log_in(self._client, self._credentials)
            except APIError as exc:
                raise OutcomeUnknown(f"betfair login failed to connect: {type(exc.exception).__name__}") from None
            except BetfairError as exc:
                raise TicktapeError(f"betfair login refused: {type(exc).__name__}") from None
            self._last_keep_alive = self._monotonic()
            self.logins += 1

    def keep_alive(self) -> None:
        """Extend the session (Betfair's keepAlive); log in again if it has expired."""
        try:
            with self._session_lock:
                self._client.keep_alive()
                self._last_keep_alive = self._monotonic()
        except KeepAliveError:
            self._login()

    def _ensure_session(self) -> None:
        if self._last_keep_alive is None:
            self._login()
        elif self._monotonic() - self._last_keep_alive > self.settings.keep_alive_interval:
            self.keep_alive()

    def _call(self, what: str, call: Callable[[], T], transactions: int = 0) -> T:
        """One API call with the session handled and errors translated (see the module docstring)."""
        self._ensure_session()
        for attempt in (0, 1):
            if transactions:
                self.budget.take(transactions)
            try:
                return call()
            except APIError as exc:
                if exc.response is None:  # no answer: timeout, connection refused or dropped
                    raise OutcomeUnknown(f"betfair {what}: no answer ({type(exc.exception).__name__})") from None
                code, message = _aping_code(exc)
                if code in SESSION_ERRORS and attempt == 0:
                    self._login()
                    continue
                if code in BUSY_ERRORS:
                    raise VenueBusy(f"betfair {what}: {code}", retry_after=1.0) from None
                if code in UNKNOWN_ERRORS:
                    raise OutcomeUnknown(f"betfair {what}: {code}") from None
                raise BetfairRefused(code, message) from None
            except StatusCodeError as exc:
                if str(exc.status_code) == "429":
                    raise VenueBusy(f"betfair {what}: HTTP 429", retry_after=1.0) from None
                raise OutcomeUnknown(f"betfair {what}: HTTP {exc.status_code}") from None
            except InvalidResponse:
                raise OutcomeUnknown(f"betfair {what}: an answer that is not JSON") from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    # ------------------------------------------------------------------ rules

    def rules(self) -> dict[str, Any]:
        """Betfair's trading rules for this account's currency (see `execution.rules`)."""
        return execution.rules(currency=self.settings.currency, min_stake=self.settings.min_stake,
                               min_bsp_liability=self.settings.min_bsp_liability)

    @staticmethod
    def check(rules: Mapping[str, Any], intent: PlaceOrder | ReplaceOrder) -> Refusal | None:
        """The exchange-filters control (pure): see `execution.check`."""
        return execution.check(rules, intent)

    # ------------------------------------------------------------------ orders

    def place(self, command: Command) -> Sequence[OrderReport]:
        """placeOrders with one instruction; `customerRef` = the client order id, so a resend is de-duplicated."""
        order = command.order
        market_id = _market(order)
        instruction = execution.place_instruction(order)
        ref = execution.customer_ref(order.client_order_id)
        try:
            answer = self._call("placeOrders", lambda: self._client.betting.place_orders(
                market_id, [instruction], customer_ref=ref, customer_strategy_ref=command.run_ref[:15] or None,
                lightweight=True), transactions=1)
        except BetfairRefused as exc:
            return [self._rejected(order, str(exc))]
        return self._placed(command, answer)

    def _placed(self, command: Command, answer: Mapping[str, Any]) -> list[OrderReport]:
        order = command.order
        reports = answer.get("instructionReports") or []
        first = reports[0] if reports else {}
        if answer.get("status") == "TIMEOUT" or first.get("status") == "TIMEOUT":
            raise OutcomeUnknown(f"betfair placeOrders for {order.client_order_id}: execution TIMEOUT")
        if answer.get("status") == "FAILURE" or first.get("status") == "FAILURE":
            if answer.get("errorCode") == "DUPLICATE_TRANSACTION":
                return list(self.query(command))  # this command already ran: report what it made
            codes = [c for c in (answer.get("errorCode"), first.get("errorCode")) if c]
            return [self._rejected(order, ": ".join(dict.fromkeys(codes)) or "FAILURE")]
        return [execution.report_from_instruction(order, first)]

    def _rejected(self, order: PlaceOrder, reason: str) -> OrderReport:
        return OrderReport(client_order_id=order.client_order_id, venue_order_id=None, instrument=order.instrument,
                           status="rejected", ts_event=self._clock.now(), side=order.side, reason=reason,
                           source="rest")

    def _bets(self, coid: str) -> list[dict[str, Any]]:
        """Every current bet (any status) with this customerOrderRef, oldest first."""
        answer = self._read("listCurrentOrders", lambda: self._client.betting.list_current_orders(
            customer_order_refs=[coid], lightweight=True))
        bets: list[dict[str, Any]] = list(answer.get("currentOrders") or [])
        return sorted(bets, key=lambda b: (str(b.get("placedDate") or ""), int(str(b["betId"]))))

    def _read(self, what: str, call: Callable[[], T]) -> T:
        try:
            return self._call(what, call)
        except BetfairRefused as exc:
            raise TicktapeError(f"betfair {what} refused: {exc}") from None

    def _still_there(self, command: Command, bet_id: str, note: str) -> OrderReport:
        """The report of one bet after a command acted on it, or was refused (`note` says why): a refused
        cancel or replace of a bet still open is reported `rejected` (the port's "refused, the order
        stands as the venue has it"), with the bet's matched size as it is."""
        answer = self._read("listCurrentOrders", lambda: self._client.betting.list_current_orders(
            bet_ids=[bet_id], lightweight=True))
        bets = answer.get("currentOrders") or []
        report = execution.report_from_current(bets[0], "rest") if bets else self.query(command)[-1]
        if note:
            report = _with_reason(report, note)
            if report.status == "open":
                report = dataclasses.replace(report, status="rejected")
        return report

    def cancel(self, command: Command) -> Sequence[OrderReport]:
        """cancelOrders for the order's executable bet; an order no longer open gets its final report."""
        order = command.order
        live = [b for b in self._bets(order.client_order_id) if b.get("status") == "EXECUTABLE"]
        if not live:
            return list(self.query(command))
        out = []
        for bet in live:  # one, unless a replacement raced a cancel
            bet_id = str(bet["betId"])
            ref = execution.customer_ref(f"{order.client_order_id}.c{command.version}")
            note = self._instruct("cancelOrders", functools.partial(
                self._client.betting.cancel_orders, str(bet["marketId"]), [{"betId": bet_id}], customer_ref=ref,
                lightweight=True))
            out.append(self._still_there(command, bet_id, note))
        return out

    def _instruct(self, what: str, call: Callable[[], Mapping[str, Any]]) -> str:
        """Run one cancel/replace/update instruction; "" if done (or a duplicate of one done), else why not."""
        try:
            answer = self._call(what, call, transactions=2 if what == "replaceOrders" else 1)
        except BetfairRefused as exc:
            return f"{what} refused: {exc}"
        reports = answer.get("instructionReports") or []
        first = reports[0] if reports else {}
        if answer.get("status") == "TIMEOUT" or first.get("status") == "TIMEOUT":
            raise OutcomeUnknown(f"betfair {what}: execution TIMEOUT")
        code = answer.get("errorCode")
        if answer.get("status") == "SUCCESS" or code == "DUPLICATE_TRANSACTION":
            return ""
        inner = first.get("errorCode") or (first.get("cancelInstructionReport") or {}).get("errorCode") or (
            first.get("placeInstructionReport") or {}).get("errorCode")
        return f"{what} refused: " + ": ".join(c for c in (code, inner) if c)

    def replace(self, command: Command) -> Sequence[OrderReport]:
        """Move the order to `command.order`'s price and size: a size reduction (cancelOrders sizeReduction),
        a price change (replaceOrders: Betfair cancels the bet and places a new one, same customerOrderRef, new
        bet id), a persistence change (updateOrders). Reports every bet involved: each has its own matched size.
        Betfair cannot increase a bet's size: such a replace is refused (the order stays as it is)."""
        order = command.order
        coid = order.client_order_id
        live = [b for b in self._bets(coid) if b.get("status") == "EXECUTABLE"]
        if not live:
            return [_with_reason(r, "replace: the order is no longer open") for r in self.query(command)]
        bet = live[-1]
        bet_id, market_id = str(bet["betId"]), str(bet["marketId"])
        price = float(bet["priceSize"]["price"])
        remaining = float(bet.get("sizeRemaining") or 0)
        if order.size > remaining + 1e-9:
            return [self._still_there(command, bet_id, f"replace refused: Betfair cannot increase a bet's size "
                                                       f"(unmatched {remaining:g}, asked {order.size:g})")]
        base = f"{coid}.r{command.version}"
        if order.size < remaining - 1e-9:
            reduction = round(remaining - order.size, 2)
            note = self._instruct("cancelOrders", lambda: self._client.betting.cancel_orders(
                market_id, [{"betId": bet_id, "sizeReduction": reduction}],
                customer_ref=execution.customer_ref(base + "s"), lightweight=True))
            if note:
                return [self._still_there(command, bet_id, note)]
        reports: list[OrderReport] = []
        if abs(order.price - price) > 1e-9:
            answer: dict[str, Any] = {}

            def replace_call() -> Mapping[str, Any]:
                answer.update(self._client.betting.replace_orders(
                    market_id, [{"betId": bet_id, "newPrice": order.price}],
                    customer_ref=execution.customer_ref(base), lightweight=True))
                return answer

            note = self._instruct("replaceOrders", replace_call)
            reports.append(self._still_there(command, bet_id, note))
            if note:
                return reports
            placed = ((answer.get("instructionReports") or [{}])[0].get("placeInstructionReport") or {})
            # (no betId: a duplicate of a replace that ran; the newest bet is the replacement)
            bet_id = str(placed["betId"]) if placed.get("betId") else str(self._bets(coid)[-1]["betId"])
        persistence = execution.persistence_of(order)
        if persistence and persistence != bet.get("persistenceType"):
            note = self._instruct("updateOrders", lambda: self._client.betting.update_orders(
                market_id, [{"betId": bet_id, "newPersistenceType": persistence}],
                customer_ref=execution.customer_ref(base + "u"), lightweight=True))
            reports.append(self._still_there(command, bet_id, note))
        elif not reports or reports[-1].venue_order_id != bet_id:
            reports.append(self._still_there(command, bet_id, ""))
        return reports

    def query(self, command: Command) -> Sequence[OrderReport]:
        """One report per bet of the order (a replacement is a new bet), its current bet (the executable one,
        else the latest) last; listClearedOrders once the market is settled; [status "unknown"] when Betfair
        has no bet with this customerOrderRef."""
        reports = self.query_bets(command.order.client_order_id)
        if not reports:
            o = command.order
            return [OrderReport(client_order_id=o.client_order_id, venue_order_id=None, instrument=o.instrument,
                                status="unknown", ts_event=self._clock.now(), side=o.side, source="query")]
        live = [r for r in reports if r.status == "open"]
        return [r for r in reports if r.status != "open"] + live

    def query_bets(self, coid: str) -> list[OrderReport]:
        """One report per bet made for this client order id (a replacement is a new bet), oldest first."""
        bets = self._bets(coid)
        if bets:
            return [execution.report_from_current(b, "query") for b in bets]
        out: list[OrderReport] = []
        for status in CLEARED_STATUSES:
            answer = self._read("listClearedOrders", functools.partial(
                self._client.betting.list_cleared_orders, bet_status=status, customer_order_refs=[coid],
                lightweight=True))
            out.extend(_cleared_report(c, status) for c in answer.get("clearedOrders") or [])
        return sorted(out, key=lambda r: (r.ts_event, r.venue_order_id or ""))

    def open_orders(self) -> Sequence[OrderReport]:
        """Every executable bet whose customerOrderRef is a ticktape client order id."""
        out: list[OrderReport] = []
        start = 0
        while True:
            answer = self._read("listCurrentOrders", functools.partial(
                self._client.betting.list_current_orders, order_projection="EXECUTABLE", from_record=start,
                lightweight=True))
            page = answer.get("currentOrders") or []
            out.extend(execution.report_from_current(b, "poll") for b in page
                       if is_client_order_id(b.get("customerOrderRef")))
            if not answer.get("moreAvailable") or not page:
                return out
            start += len(page)

    def recent_orders(self, instruments: Sequence[str]) -> Sequence[OrderReport]:
        """Every current (unsettled) bet of a ticktape customerOrderRef, executable or complete, on any market
        (Betfair keeps a bet in listCurrentOrders until its market settles; `instruments` is not needed)."""
        out: list[OrderReport] = []
        start = 0
        while True:
            answer = self._read("listCurrentOrders", functools.partial(
                self._client.betting.list_current_orders, order_projection="ALL", from_record=start,
                lightweight=True))
            page = answer.get("currentOrders") or []
            out.extend(execution.report_from_current(b, "reconcile") for b in page
                       if is_client_order_id(b.get("customerOrderRef")))
            if not answer.get("moreAvailable") or not page:
                return out
            start += len(page)

    def account(self) -> AccountReport:
        """Balances from getAccountFunds: `<currency>` = available to bet, `<currency>.exposure` = the
        (negative) exposure across markets. Positions are empty: Betfair's exposure is per market and
        outcome, not a signed quantity per instrument."""
        funds = self._read("getAccountFunds", lambda: self._client.account.get_account_funds(lightweight=True))
        currency = self.settings.currency
        return AccountReport(ts_event=self._clock.now(), positions={}, source="query", balances={
            currency: float(funds.get("availableToBetBalance") or 0.0),
            f"{currency}.exposure": float(funds.get("exposure") or 0.0)})

    # ------------------------------------------------------------------ stream

    def start(self, sink: ReportSink) -> None:
        """Log in, then run the order stream (reports to `sink`) and the session keep-alive on threads."""
        self._sink = sink
        self._stop.clear()
        self._ensure_session()
        for target, name in ((self._run_stream, "betfair-orders"), (self._run_keep_alive, "betfair-keepalive")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run_keep_alive(self) -> None:
        while not self._stop.wait(max(1.0, self.settings.keep_alive_interval / 4)):
            try:
                if self._last_keep_alive is None or (
                        self._monotonic() - self._last_keep_alive > self.settings.keep_alive_interval):
                    self.keep_alive()
            except (TicktapeError, OutcomeUnknown, BetfairError, OSError) as exc:
                log.warning("betfair keep-alive failed: %s", type(exc).__name__)

    def _run_stream(self) -> None:
        s = self.settings
        endpoint = (s.stream_address, s.stream_port) if s.stream_address and s.stream_port else None
        options = RecordOptions(market_filter={}, orders=True, stream_host=s.stream_host, stream_endpoint=endpoint,
                                heartbeat_ms=s.heartbeat_ms)
        base = betfairlightweight_connect(self._client, options)

        def connect(session: StreamSession, on_raw: Callable[[str | bytes], bool]) -> None:
            if self._stream_needs_login:
                self._stream_needs_login = False
                self._login()

            def line(raw: str | bytes) -> bool:
                self._on_stream_line(raw)
                return on_raw(raw) and not self._stop.is_set()  # False closes the socket: how `close` ends it

            base(session, line)

        def emit(batch: Sequence[tuple[str, Any]]) -> None:
            for _, event in batch:
                if isinstance(event, FeedGap) and not event.repaired:
                    log.warning("betfair order stream gap: %s", event.reason)

        try:
            run_stream(StreamSession("order"), connect, self._clock, emit, self._stop,
                       backoff_delays(s.backoff_initial, s.backoff_max))
        except Exception:  # a bug, not a drop: the gateway's polling still reconciles
            log.exception("betfair order stream stopped")

    def _on_stream_line(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return  # the session records it as a dead letter
        if not isinstance(message, dict):
            return
        if message.get("op") == "status" and message.get("errorCode") in SESSION_ERRORS:
            self._stream_needs_login = True
        if message.get("op") != "ocm" or self._sink is None:
            return
        try:
            reports = execution.reports_from_ocm(message)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("betfair order stream: bad ocm (%s: %s)", type(exc).__name__, exc)
            return
        for report in reports:
            self._sink(report)

    def close(self) -> None:
        """Stop the stream and keep-alive threads (the stream ends at its next message or heartbeat)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=max(10.0, self.settings.heartbeat_ms / 1000 * 3))
        self._threads.clear()


def _market(order: PlaceOrder) -> str:
    parsed = parse_instrument(order.instrument)
    if parsed is None:
        raise TicktapeError(f"instrument {order.instrument!r} is not '<market_id>:<selection_id>[:<handicap>]'")
    return parsed[0]


def _with_reason(report: OrderReport, note: str) -> OrderReport:
    return dataclasses.replace(report, reason=f"{report.reason}; {note}" if report.reason else note)


def _cleared_report(cleared: Mapping[str, Any], bet_status: str) -> OrderReport:
    """A report from a `ClearedOrderSummary` of listClearedOrders(betStatus=`bet_status`)."""
    from producers.betfair.orders import instrument_id

    bet_id = str(cleared["betId"])
    matched = float(cleared.get("sizeSettled") or 0.0) if bet_status == "SETTLED" else 0.0
    status = {"SETTLED": "filled", "VOIDED": "cancelled", "LAPSED": "expired", "CANCELLED": "cancelled"}[bet_status]
    reason = "" if bet_status == "SETTLED" else f"{bet_status.lower()} {float(cleared.get('sizeCancelled') or 0):g}"
    ts = max(execution.ns_of(cleared.get(k)) for k in ("placedDate", "lastMatchedDate", "settledDate"))
    settled = bet_status == "SETTLED" and cleared.get("profit") is not None
    back = cleared.get("side") == "BACK"
    won = cleared.get("betOutcome") == "WON"
    return OrderReport(
        client_order_id=str(cleared.get("customerOrderRef") or bet_id), venue_order_id=bet_id,
        instrument=instrument_id(str(cleared["marketId"]), int(cleared["selectionId"]),
                                 float(cleared.get("handicap") or 0)),
        status=status,  # type: ignore[arg-type]
        ts_event=ts, side="BUY" if back else "SELL", matched=matched,
        avg_price=float(cleared["priceMatched"]) if matched and cleared.get("priceMatched") else None,
        reason=reason, source="query", profit=float(cleared["profit"]) if settled else None,
        # a back bet wins when its selection wins; a lay bet when it loses
        runner_status=("WINNER" if won == back else "LOSER") if settled else "")


__all__ = ["BetfairRefused", "BetfairVenue", "BetfairVenueSettings", "TransactionBudget"]
