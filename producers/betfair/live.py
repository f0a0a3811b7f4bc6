"""`ticktape record betfair`: the thin I/O shell around `StreamSession` (betfairlightweight sockets).

Threads: one per stream (market, optionally order) running `run_stream` (connect, subscribe
with the session's last clocks, read until the socket drops, back off, again), one catalogue
poller, and the caller's thread appending everything to the tape from one queue (a tape has
one writer). Each flush of that thread is followed by a `StreamClock` checkpoint of the market
stream's clocks (`Checkpointing`), from which a restarted recorder resumes (`producers.betfair.resume`;
with `--raw`, from the raw payloads instead). Nothing here decides what a message means: that is
`StreamSession`, tested offline. Credentials come only from the environment or a TOML file outside the repository and
are passed to betfairlightweight as they are, never logged.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import betfairlightweight
import orjson

from producers.betfair.catalogue import CataloguePoller
from producers.betfair.parse import CLOCK_TOPIC, MARKET_TOPIC, ORDERS_TOPIC, RAW_TOPIC
from producers.betfair.resume import checkpoint, resume_market_stream, resume_order_stream, subscription
from producers.betfair.session import StreamSession
from producers.common import BatchAppender, dlq_topic
from ticktape.config import inside_git_repo, read_toml
from ticktape.errors import TicktapeError
from ticktape.events import CustomData, Event, MarketDefinition, StreamClock
from ticktape.retry import backoff_delays
from ticktape.tape.base import Encoded, Tape
from ticktape.timeutil import Clock, WallClock

log = logging.getLogger(__name__)

SOURCE = "betfair"


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """Betfair login: the secrets are `Secret`s (masked in repr/str/logs)."""

    username: str
    password: Any  # ticktape.config.Secret
    app_key: Any  # ticktape.config.Secret
    certs: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecordOptions:
    """What to subscribe to and how."""

    market_filter: dict[str, Any]
    fields: tuple[str, ...] = ("EX_ALL_OFFERS", "EX_TRADED", "EX_TRADED_VOL", "EX_LTP", "EX_MARKET_DEF")
    orders: bool = True
    conflate_ms: int | None = None
    heartbeat_ms: int = 5000
    catalogue_interval: float = 60.0
    keep_raw: bool = False
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    flush_interval: float = 0.2
    stream_host: str | None = None  # betfairlightweight's host name: None = production, "integration"
    locale: str | None = None  # betfairlightweight's jurisdiction for login and API: spain, italy, ... (None: .com)
    stream_endpoint: tuple[str, int] | None = None  # (address, port) instead of the host's :443 (tests: a local server)
    identity_url: str | None = None  # overrides of the login and API base URLs (tests: a local server)
    api_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def market_filter_from(text: str | None, market_ids: str | None) -> dict[str, Any]:
    """The streaming market filter from `--filter` JSON and/or `--market-ids`."""
    flt: dict[str, Any] = {}
    if text:
        try:
            flt = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise TicktapeError(f"--filter is not JSON: {exc}") from exc
        if not isinstance(flt, dict):
            raise TicktapeError("--filter must be a JSON object, e.g. '{\"eventTypeIds\": [\"7\"]}'")
    if market_ids:
        flt["marketIds"] = [m.strip() for m in market_ids.split(",") if m.strip()]
    if not flt:
        raise TicktapeError("give --filter or --market-ids: recording every market is not allowed by Betfair")
    return flt


def load_credentials(path: str | None = None, env: dict[str, str] | None = None) -> Credentials:
    """Credentials from a TOML file outside any git repository (`[betfair]` table), else the environment.

    Environment: BETFAIR_USERNAME, BETFAIR_PASSWORD, BETFAIR_APP_KEY, BETFAIR_CERTS (a directory).
    """
    from ticktape.config import Secret

    env = dict(os.environ) if env is None else env
    values: dict[str, str] = {}
    if path:
        p = Path(path).expanduser().resolve()
        if inside_git_repo(p):
            raise TicktapeError(f"{p} is inside a git repository: keep credentials outside it")
        data = read_toml(p, "credentials file")
        values = {k: str(v) for k, v in data.get("betfair", data).items()}

    def get(key: str) -> str | None:
        return values.get(key) or env.get(f"BETFAIR_{key.upper()}")

    missing = [k for k in ("username", "password", "app_key") if not get(k)]
    if missing:
        raise TicktapeError(f"Betfair credentials missing: {', '.join('BETFAIR_' + m.upper() for m in missing)} "
                            "(environment) or the same keys in the --credentials file")
    return Credentials(username=str(get("username")), password=Secret(str(get("password"))),
                       app_key=Secret(str(get("app_key"))), certs=get("certs"))


RECONNECTABLE = (betfairlightweight.exceptions.BetfairError, OSError)
"""Socket drops, listener errors (a FAILURE status), timeouts: reconnect. Anything else is a bug: raise."""

Emit = Callable[[Sequence[tuple[str, Event | Encoded]]], None]
Connect = Callable[[StreamSession, Callable[[str | bytes], bool]], None]
"""Open a connection for a session and feed each raw line to the callback until it drops (raises)."""


def pump(session: StreamSession, raw: str | bytes, clock: Clock, emit: Emit) -> bool:
    """One raw line through the session; its events to `emit`. False = close the connection."""
    out = session.on_message(raw, clock.now())
    events = out.events + [(dlq_topic(SOURCE), dl) for dl in out.dead_letters]
    if events:
        emit(events)
    if out.error:
        log.error("betfair %s stream: %s", session.stream, out.error)
    return not out.close


def run_stream(session: StreamSession, connect: Connect, clock: Clock, emit: Emit, stop: threading.Event,
               delays: Iterator[float], sleep: Callable[[float], object] | None = None) -> None:
    """Connect, read until the connection drops, back off, reconnect from the last clk; until `stop`.

    `sleep` waits between attempts (default: `stop.wait`, so stopping is not delayed by a backoff).
    """
    sleep = sleep or stop.wait
    while not stop.is_set():
        try:
            session.on_connected()
            connect(session, lambda raw: pump(session, raw, clock, emit))
            reason = "connection closed"
        except RECONNECTABLE as exc:
            reason = f"disconnected: {type(exc).__name__}: {exc}"
        if stop.is_set():
            break
        session.on_disconnected(clock.now(), reason)
        delay = next(delays)
        log.warning("betfair %s stream %s; reconnecting in %.0f s", session.stream, reason, delay)
        sleep(delay)
    emit(session.close(clock.now()))


class RawListener(betfairlightweight.StreamListener):  # type: ignore[misc]
    """betfairlightweight listener handing each raw line to the recorder instead of building its caches.

    `BetfairStream` calls `on_data` with every CRLF-delimited line it reads; returning False
    makes it close the socket (raising `ListenerError`), which `run_stream` treats as a drop.
    """

    def __init__(self, on_raw: Callable[[str | bytes], bool], operation: str = "marketSubscription") -> None:
        super().__init__(max_latency=None)
        self._on_raw = on_raw
        self._operation = operation

    def on_data(self, raw_data: str) -> bool | None:
        return None if self._on_raw(raw_data) else False

    def update_unique_id(self, unique_id: int) -> None:
        # A resubscription (initialClk + clk) on a fresh connection: betfairlightweight expects a
        # registered stream here, which a new listener does not have yet.
        if self.stream is None:
            self.register_stream(unique_id, self._operation)
        else:
            super().update_unique_id(unique_id)


def log_in(client: Any, credentials: Credentials) -> None:
    """Log `client` in: the non-interactive certificate login when `credentials.certs` names a directory, else
    the interactive (password) login. Either sets the client's session token."""
    if credentials.certs:
        client.login()
    else:
        client.login_interactive()


def betfairlightweight_connect(client: Any, options: RecordOptions) -> Connect:
    """A `Connect` over betfairlightweight's `BetfairStream` (socket, authentication, subscribe)."""
    from betfairlightweight.filters import streaming_market_data_filter

    def connect(session: StreamSession, on_raw: Callable[[str | bytes], bool]) -> None:
        operation = "marketSubscription" if session.stream == "market" else "orderSubscription"
        stream = client.streaming.create_stream(listener=RawListener(on_raw, operation), host=options.stream_host)
        if options.stream_endpoint:
            # BetfairStream connects to (self.host, self.__port): instance attributes override both for
            # this stream alone, instead of patching the class for the whole process.
            stream.host, stream._BetfairStream__port = options.stream_endpoint
        initial_clk, clk = session.resubscribe_clocks()
        if session.stream == "market":
            stream.subscribe_to_markets(
                market_filter=options.market_filter,  # already the Stream API's MarketFilter JSON
                market_data_filter=streaming_market_data_filter(fields=list(options.fields)),
                initial_clk=initial_clk, clk=clk, conflate_ms=options.conflate_ms, heartbeat_ms=options.heartbeat_ms)
        else:
            stream.subscribe_to_orders(initial_clk=initial_clk, clk=clk, conflate_ms=options.conflate_ms,
                                       heartbeat_ms=options.heartbeat_ms)
        try:
            stream.start()
        finally:
            stream.stop()

    return connect


def resume_sessions(tape: Tape, sessions: Sequence[StreamSession], ts_recv: int) -> None:
    """Give each session the state a previous recorder on this tape left: its raw payloads on
    `raw.betfair` (keyed by stream name) replayed in order, clocks and caches included.

    For a recorder that keeps raw payloads (`--raw`; without them the market stream resumes from its
    `StreamClock` checkpoints: `producers.betfair.resume`). Cost: one pass over the raw topic at start-up.
    Raw payloads and decoded events are different topics, appended one after the other (topics
    in name order: `md.*`, `orders.*`, then `raw.betfair`): a kill -9 between those appends leaves
    books whose raw payload is missing, and the resumed stream sends their messages again. The
    replay counts the events its payloads give per topic; what the tape holds beyond that (books,
    definitions and orders: not the catalogue's definitions, which no stream message gives) is
    dropped from the resumed stream's first events, so nothing is on the tape twice. Cost: one
    more pass over `md.betfair.market` and `orders.betfair` at start-up.
    """
    by_stream = {s.stream: s for s in sessions}
    lines: dict[str, list[str]] = {name: [] for name in by_stream}
    for partition in range(tape.partitions(RAW_TOPIC)):
        for record in tape.read(RAW_TOPIC, partition):
            event = record.event
            if isinstance(event, CustomData) and event.key in lines:
                lines[event.key].append(event.payload)
    for name, session in by_stream.items():
        n = session.restore(lines[name], ts_recv)
        if n:
            log.info("betfair %s stream: resuming from clk %s after %d recorded messages", name, session.clk, n)
        for topic, replayed in session.replayed.items():
            if topic in (MARKET_TOPIC, ORDERS_TOPIC):
                surplus = _stream_events_on(tape, topic) - replayed
                if surplus > 0:
                    session.already_recorded[topic] = surplus


def _stream_events_on(tape: Tape, topic: str) -> int:
    """Events on `topic` that stream messages gave (catalogue definitions are the poller's)."""
    return sum(1 for p in range(tape.partitions(topic)) for r in tape.read(topic, p)
               if not (isinstance(r.event, MarketDefinition) and r.event.status == "CATALOGUE"))


class Checkpointing:
    """The recorder's appender: events as they come, and each flush followed by one checkpoint.

    A session's clock mark (a `StreamClock` on CLOCK_TOPIC, the last item of a message's events) is
    held, not appended: `flush` appends every pending event first, then the latest mark as a
    checkpoint with the market topic's end offsets -- one per flush (not per message), and only when
    the clocks moved. A kill between the two appends leaves books after the last checkpoint, which
    a restart matches against Betfair's resent changes (`StreamSession.resume`).
    """

    def __init__(self, appender: BatchAppender, subscription_id: str) -> None:
        self.appender = appender
        self.subscription_id = subscription_id
        # The market topic's end offsets, kept by the appender (asking the tape per flush cost ~65 us).
        appender.track_ends.add(MARKET_TOPIC)
        appender.ends[MARKET_TOPIC] = dict(appender.tape.end_offsets(MARKET_TOPIC))
        self._marks: dict[str, StreamClock] = {}  # per stream: the last message's, until the next flush
        self._last_clk: dict[str, str | None] = {}  # per stream: the clk of the last checkpoint appended

    def add_all(self, batch: Sequence[tuple[str, Event | Encoded]]) -> None:
        """Queue a message's events (its clock mark is held for the next flush)."""
        add = self.appender.add
        for topic, event in batch:
            if topic == CLOCK_TOPIC and isinstance(event, StreamClock):
                self._marks[event.stream] = event
            else:
                add(topic, event)

    def flush(self) -> None:
        """Append everything pending, then the checkpoint of each stream's last message appended."""
        self.appender.flush()
        if not self._marks:
            return
        for stream, mark in self._marks.items():
            if mark.clk != self._last_clk.get(stream):
                self.appender.add(CLOCK_TOPIC, checkpoint(mark, self.subscription_id,
                                                          self.appender.ends[MARKET_TOPIC]))
                self._last_clk[stream] = mark.clk
        self._marks = {}
        self.appender.flush()


def run_recorder(tape: Tape, credentials: Credentials | None, options: RecordOptions, *, clock: Clock | None = None,
                 client: Any = None, stop: threading.Event | None = None) -> None:
    """Record until interrupted (Ctrl-C) or `stop` is set: market (+ order) streams and the catalogue onto `tape`.

    `client` is a logged-in betfairlightweight `APIClient` (made from `credentials` when None).
    """
    clock = clock or WallClock()
    if client is None:
        if credentials is None:
            raise TicktapeError("no Betfair credentials and no client")
        client = betfairlightweight.APIClient(credentials.username, credentials.password.get(),
                                              app_key=credentials.app_key.get(), certs=credentials.certs,
                                              locale=options.locale)
        # Per-client attributes set from the locale: overriding them points this client elsewhere.
        if options.identity_url:
            client.identity_uri = client.identity_cert_uri = options.identity_url
        if options.api_url:
            client.api_uri = options.api_url
        log_in(client, credentials)
    stop = stop or threading.Event()
    events: queue.Queue[Sequence[tuple[str, Event | Encoded]]] = queue.Queue()
    connect = betfairlightweight_connect(client, options)
    # Without raw payloads, the market stream checkpoints its clocks (`producers.betfair.resume`); the
    # order stream's cache is rebuilt from its events and it subscribes afresh (an image).
    sessions = [StreamSession("market", keep_raw=options.keep_raw, checkpoints=not options.keep_raw)]
    if options.orders:
        sessions.append(StreamSession("order", keep_raw=options.keep_raw))
    subscription_id = subscription(options.market_filter, options.fields, options.conflate_ms)
    if options.keep_raw:
        resume_sessions(tape, sessions, clock.now())
    else:
        log.info("betfair market stream: %s",
                 resume_market_stream(tape, sessions[0], subscription_id, options.fields, clock.now()))
        if options.orders:
            log.info("betfair order stream: %s", resume_order_stream(tape, sessions[1], clock.now()))
    failures: list[BaseException] = []

    def guarded(session: StreamSession) -> None:
        try:
            run_stream(session, connect, clock, events.put, stop,
                       backoff_delays(options.backoff_initial, options.backoff_max))
        except BaseException as exc:  # reported by the main thread after shutdown
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=guarded, name=f"betfair-{s.stream}", daemon=True, args=(s,))
               for s in sessions]
    if options.catalogue_interval > 0:
        poller = CataloguePoller(options.market_filter)
        threads.append(threading.Thread(target=poller.run, name="betfair-catalogue", daemon=True,
                                        args=(client, clock, events.put, stop, options.catalogue_interval)))
    for t in threads:
        t.start()
    appender = Checkpointing(BatchAppender(tape, batch_size=1000), subscription_id)
    last_keep_alive = time.monotonic()
    try:
        while not stop.is_set() and any(t.is_alive() for t in threads):
            try:
                batch = events.get(timeout=options.flush_interval)
            except queue.Empty:
                appender.flush()
            else:
                appender.add_all(batch)
                if events.empty():
                    appender.flush()  # live: durable as soon as the queue is drained
            if time.monotonic() - last_keep_alive > 15 * 60:  # Betfair sessions expire without it
                client.keep_alive()
                last_keep_alive = time.monotonic()
    except KeyboardInterrupt:
        log.info("stopping the Betfair recorder")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        while not events.empty():
            appender.add_all(events.get_nowait())
        appender.flush()
    if failures:
        raise TicktapeError(f"the Betfair recorder stopped: {type(failures[0]).__name__}: {failures[0]}") \
            from failures[0]
