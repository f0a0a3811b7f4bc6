"""The Binance live recorder: one handler for every message, a thin python-binance shell around it.

`RecorderCore.handle(message, ts_recv)` is everything the live path does with a message:
parse (pure), append the events, keep each depth stream's continuity (`BookSync`), fetch a
REST snapshot when one is needed, dead-letter what cannot be parsed. Tests feed it recorded
payloads; `run_live` feeds it python-binance's websocket messages. Messages cross from the
socket thread to the recording thread through a queue, so one thread owns the tape.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from producers.binance.book import BookSync, SyncStep
from producers.binance.credentials import BinanceKeys
from producers.binance.parsers import (
    TOPIC_AGGTRADE,
    TOPIC_BOOK,
    VENUE,
    RobotOf,
    parse_depth_snapshot,
    parse_payload,
    robot_of_client_order_id,
    unwrap,
)
from producers.binance.userdata import USER_DATA_URLS, UserDataStream, ws_api_signature
from producers.common import BatchAppender, DeadLetterSink
from ticktape.events import BookDelta, CustomData, FeedGap, Trade
from ticktape.retry import backoff_delays
from ticktape.tape.base import Tape
from ticktape.timeutil import Clock, WallClock

log = logging.getLogger(__name__)

SnapshotFetcher = Callable[[str], Mapping[str, Any]]
"""symbol -> the REST depth answer (`{"lastUpdateId", "bids", "asks"}`)."""

AggTradeFetcher = Callable[[str, int, int], list[Mapping[str, Any]]]
"""(symbol, from_id, limit) -> REST aggregate trades from that id (`GET /api/v3/aggTrades?fromId=`)."""

SELF_RECONNECTING = frozenset({"IncompleteReadError", "gaierror", "ConnectionClosedError", "ConnectionClosedOK",
                               "BinanceWebsocketClosed"})
"""python-binance error messages after which its socket reconnects by itself (others end the socket:
we restart the manager). Every one of them is recorded as a gap: messages may have been lost."""

TOPIC_RAW = "raw.binance"
"""With `keep_raw`, every websocket message as received (CustomData `binance.raw`, key = stream)."""

MAX_REPAIR = 5000
"""Aggregate trades fetched at most to fill one gap (more is recorded as an unrepaired gap)."""

UserStreamFactory = Callable[[Callable[[Any], None]], UserDataStream]
"""handler -> the account's user-data stream (not started) delivering each event to `handler`."""

STREAM_NAMES = {"trade": "trade", "aggTrade": "aggTrade", "bookTicker": "bookTicker", "depth": "depth@100ms"}


def stream_names(symbols: Sequence[str], streams: Sequence[str]) -> list[str]:
    """Binance combined-stream names: `btcusdt@trade`, `btcusdt@depth@100ms`, `btcusdt@kline_1m`."""
    out = []
    for sym in symbols:
        for st in streams:
            if st.startswith("kline_"):
                out.append(f"{sym.lower()}@{st}")
            elif st in STREAM_NAMES:
                out.append(f"{sym.lower()}@{STREAM_NAMES[st]}")
            else:
                raise ValueError(f"unknown Binance stream {st!r}: use trade, aggTrade, bookTicker, depth, kline_<i>")
    return out


@dataclass
class RecorderStats:
    """Counts per outcome, for the operator."""

    messages: int = 0
    events: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    gaps: int = 0
    snapshots: int = 0


class RecorderCore:
    """Message -> tape, with depth continuity. Single-threaded; no clock reads except via `clock`."""

    def __init__(self, appender: BatchAppender, dlq: DeadLetterSink, *, depth_symbols: Sequence[str] = (),
                 fetch_snapshot: SnapshotFetcher | None = None, futures: bool = False,
                 robot_of: RobotOf = robot_of_client_order_id, account: str = "spot", clock: Clock,
                 fetch_agg_trades: AggTradeFetcher | None = None, keep_raw: bool = False) -> None:
        self.appender = appender
        self.keep_raw = keep_raw
        self.fetch_agg_trades = fetch_agg_trades
        self.last_trade_id: dict[tuple[str, str], int] = {}  # (topic, symbol) -> last trade/aggregate id
        self.dlq = dlq
        self.fetch_snapshot = fetch_snapshot
        self.clock = clock
        self.robot_of = robot_of
        self.account = account
        self.syncs = {s.upper(): BookSync(s.upper(), futures=futures) for s in depth_symbols}
        self.stats = RecorderStats()
        self.position = 0  # messages seen, the dead letters' position
        self.drop_recorded = False  # a drop was recorded and no message has arrived since

    def handle(self, message: Mapping[str, Any] | str | bytes, ts_recv: int) -> None:
        """Everything the live path does with one websocket message."""
        self.position += 1
        self.stats.messages += 1
        if self.keep_raw:  # forensics: every message as received, before any parsing
            text = message.decode("utf-8", "replace") if isinstance(message, bytes) else (
                message if isinstance(message, str) else _json_bytes(message).decode("utf-8"))
            stream = str(message.get("stream", "")) if isinstance(message, Mapping) else ""
            self._emit(TOPIC_RAW, CustomData("binance.raw", stream, ts_recv, ts_recv, text))
        if isinstance(message, Mapping) and message.get("e") == "error":
            self._on_error_notice(message, ts_recv)
            return
        self.drop_recorded = False
        try:
            if isinstance(message, str | bytes):
                raw_text = message
                try:
                    message = json.loads(message)
                except ValueError:
                    message = raw_text  # parse_payload names the JSON error
            parsed = parse_payload(message, ts_recv, robot_of=self.robot_of, account=self.account)
        except Exception as exc:  # any bad payload is kept, never raised into the socket thread
            raw = message if isinstance(message, str | bytes) else _json_bytes(message)
            self.dlq.add(f"message {self.position}", str(exc), raw, ts_recv=ts_recv)
            self.stats.dead_letters += 1
            return
        for topic, ev in parsed:
            if isinstance(ev, Trade):
                self._check_trade_ids(topic, ev)
            self._emit(topic, ev)
            if isinstance(ev, BookDelta) and ev.instrument in self.syncs:
                _, inner = unwrap(message) if isinstance(message, Mapping) else (None, {})
                pu = inner.get("pu")
                self._follow(self.syncs[ev.instrument], self.syncs[ev.instrument].on_delta(
                    ev, None if pu is None else int(pu)))

    def _check_trade_ids(self, topic: str, trade: Trade) -> None:
        """Trade and aggregate-trade ids count up by one per symbol: a jump is lost trades.

        Aggregate trades are fetched back over REST when a fetcher is given (appended before
        the trade that revealed the gap, so the topic stays in time order); either way the
        gap is recorded as a FeedGap on the stream's own topic.
        """
        key = (topic, trade.instrument)
        tid = int(trade.trade_id)
        last = self.last_trade_id.get(key)
        self.last_trade_id[key] = tid if last is None else max(last, tid)
        if last is None or tid <= last + 1:
            return  # continuous, or a repeat after a reconnect (recorded as received)
        expected = last + 1
        filled = self._refill(trade, expected, tid) if topic == TOPIC_AGGTRADE else expected
        stream = "aggTrade" if topic == TOPIC_AGGTRADE else "trade"
        repaired = filled == tid
        reason = "trade ids not continuous" + (f"; {filled - expected} refilled over REST" if filled > expected else "")
        self._emit(topic, FeedGap(VENUE, trade.instrument, trade.ts_event, trade.ts_recv, stream, reason,
                                  expected, tid, repaired))
        self.stats.gaps += not repaired

    def _refill(self, trade: Trade, expected: int, received: int) -> int:
        """Fetch aggregate trades [expected, received) and emit them; returns the first id still missing."""
        if self.fetch_agg_trades is None or received - expected > MAX_REPAIR:
            return expected
        nxt = expected
        while nxt < received:
            ts_recv = self.clock.now()
            progressed = False
            try:
                for row in self.fetch_agg_trades(trade.instrument, nxt, min(1000, received - nxt)):
                    [(_, ev)] = parse_payload({**row, "e": "aggTrade", "s": trade.instrument}, ts_recv)
                    tid = int(ev.trade_id)  # type: ignore[union-attr]
                    if tid < nxt:
                        continue
                    if tid != nxt:
                        break  # the venue skipped an id: stop, the rest stays a gap
                    self._emit(TOPIC_AGGTRADE, ev)
                    nxt += 1
                    progressed = True
                    if nxt == received:
                        break
            except Exception as exc:  # network or shape: the rest stays a recorded gap
                self.dlq.add(f"aggTrades {trade.instrument} from {nxt}", f"gap refill failed: {exc}", b"",
                             ts_recv=ts_recv)
                self.stats.dead_letters += 1
                return nxt
            if not progressed:
                return nxt
        return nxt

    def _emit(self, topic: str, ev: Any) -> None:
        self.appender.add(topic, ev)
        self.stats.events[topic] = self.stats.events.get(topic, 0) + 1

    def _follow(self, sync: BookSync, step: SyncStep) -> None:
        # A resync can itself need another snapshot (too old): bounded retries, each recorded.
        for _ in range(3):
            for gap in step.events:
                self._emit(TOPIC_BOOK, gap)
                self.stats.gaps += not gap.repaired
            if not step.need_snapshot:
                return
            if self.fetch_snapshot is None:
                return  # offline: snapshots come as messages, if at all
            ts_recv = self.clock.now()
            try:
                answer = self.fetch_snapshot(sync.symbol)
                snap = parse_depth_snapshot(answer, self.clock.now(), sync.symbol)
            except Exception as exc:  # network or shape: record, retry at the next delta
                self.dlq.add(f"snapshot {sync.symbol}", f"depth snapshot failed: {exc}", b"", ts_recv=ts_recv)
                self.stats.dead_letters += 1
                sync.snapshot_failed()
                return
            self._emit(TOPIC_BOOK, snap)
            self.stats.snapshots += 1
            step = sync.on_snapshot(snap)

    def _on_error_notice(self, notice: Mapping[str, Any], ts_recv: int) -> None:
        """python-binance's `{"e": "error", "type", "m"}`: the socket failed (not a venue payload).

        One drop often brings several notices (the closed read, then the reconnect): the first
        since messages last flowed is the gap; the rest only go to the log.
        """
        reason = f"websocket error: {notice.get('m')}"
        if not self.drop_recorded:
            self.drop_recorded = True
            self.on_disconnect(ts_recv, reason)
        else:
            log.info("binance %s (%s), already recorded as a gap", reason, notice.get("type"))

    def on_disconnect(self, ts_recv: int, reason: str = "connection lost") -> None:
        """The socket dropped: a FeedGap per depth stream (and one for the whole connection)."""
        self._emit(TOPIC_BOOK, FeedGap(VENUE, "*", ts_recv, ts_recv, "connection", reason, None, None, False))
        self.stats.gaps += 1
        # As at the start, the snapshot is fetched once the new socket has buffered a delta
        # (Binance's procedure); fetching now would give a snapshot older than the stream.
        for sync in self.syncs.values():
            step = sync.on_disconnect(ts_recv, ts_recv, reason)
            sync.snapshot_failed()
            self._follow(sync, SyncStep(step.events))


def _json_bytes(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode("utf-8")


def run_live(core: RecorderCore, *, streams: list[str], keys: BinanceKeys | None,
             user_data: bool, futures: bool, clock: Clock, flush_every: float = 0.25,
             stop: threading.Event | None = None, max_backoff: float = 60.0, first_backoff: float = 1.0,
             manager_factory: Callable[..., Any] | None = None,
             user_stream: UserStreamFactory | None = None) -> None:
    """Subscribe with python-binance's ThreadedWebsocketManager and record until `stop` (or Ctrl-C).

    python-binance reconnects a dropped socket itself (a few times, with backoff) and reports
    each drop as `{"e": "error"}`, which `handle` records as gaps (books resync from a fresh
    snapshot at the next delta). When it gives up (`SELF_RECONNECTING` does not name the
    error), we restart the manager with our own exponential backoff.
    `manager_factory(api_key=, api_secret=)` defaults to python-binance's ThreadedWebsocketManager.

    User data (`user_data`) comes from `user_stream(handler)`, our own `UserDataStream`, not from
    python-binance's manager: that one ignores futures' `listenKeyExpired` and does not subscribe
    spot again after a reconnect, so the account's events would stop without a word. Without
    market `streams` only the user-data stream runs.
    """
    if user_data and user_stream is None:
        raise ValueError("run_live: user_data needs a user_stream factory")
    factory: Callable[..., Any]
    if manager_factory is None:
        from binance import ThreadedWebsocketManager

        factory = ThreadedWebsocketManager
    else:
        factory = manager_factory

    inbox: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=1_000_000)
    stop = stop or threading.Event()

    def on_message(msg: Any) -> None:
        inbox.put((clock.now(), msg))  # ts_recv stamped at the edge, before any queueing delay

    account_stream = user_stream(on_message) if user_data and user_stream is not None else None
    if account_stream is not None:
        account_stream.start()
    try:
        _follow_market(core, inbox, on_message, streams=streams, keys=keys, futures=futures, factory=factory,
                       stop=stop, flush_every=flush_every, first_backoff=first_backoff, max_backoff=max_backoff)
    finally:
        if account_stream is not None:
            account_stream.stop()
            while not inbox.empty():  # what the account's stream delivered before it stopped
                ts_recv, msg = inbox.get_nowait()
                core.handle(msg, ts_recv)
            core.appender.flush()


def _follow_market(core: RecorderCore, inbox: queue.Queue[tuple[int, Any]], on_message: Callable[[Any], None], *,
                   streams: list[str], keys: BinanceKeys | None, futures: bool, factory: Callable[..., Any],
                   stop: threading.Event, flush_every: float, first_backoff: float, max_backoff: float) -> None:
    """Record the inbox until `stop`, (re)starting python-binance's manager for the market `streams`."""
    if not streams:  # the account's stream alone
        while not stop.is_set():
            try:
                ts_recv, msg = inbox.get(timeout=flush_every)
            except queue.Empty:
                core.appender.flush()
                continue
            core.handle(msg, ts_recv)
            if inbox.empty() or core.appender.pending >= 1000:
                core.appender.flush()
        return
    delays = backoff_delays(first_backoff, max_backoff)
    while not stop.is_set():
        twm = factory(api_key=keys.api_key.get() if keys else None, api_secret=keys.api_secret.get() if keys else None)
        twm.start()
        if futures:
            twm.start_futures_multiplex_socket(callback=on_message, streams=streams)
        else:
            twm.start_multiplex_socket(callback=on_message, streams=streams)
        failed = False
        try:
            while not stop.is_set() and not failed:
                try:
                    ts_recv, msg = inbox.get(timeout=flush_every)
                except queue.Empty:
                    core.appender.flush()
                    continue
                core.handle(msg, ts_recv)
                failed = (isinstance(msg, Mapping) and msg.get("e") == "error"
                          and msg.get("type") not in SELF_RECONNECTING)
                if inbox.empty() or core.appender.pending >= 1000:
                    core.appender.flush()
                if not failed:  # messages flow again: the next failure waits the first delay
                    delays = backoff_delays(first_backoff, max_backoff)
        finally:
            twm.stop()
            # Wait for its threads (python-binance's leave within ~3 s): a restarted manager must
            # not overlap the old one, and nothing may arrive after the final flush.
            twm.join(timeout=15)
            if twm.is_alive():
                log.warning("python-binance's websocket manager did not stop within 15 s")
            if stop.is_set():  # what the socket delivered before it stopped is recorded too
                while not inbox.empty():
                    ts_recv, msg = inbox.get_nowait()
                    core.handle(msg, ts_recv)
            core.appender.flush()
        if failed and not stop.is_set():
            wait = next(delays)
            log.warning("binance websocket gave up; reconnecting in %.0f s", wait)
            stop.wait(wait)


def user_stream_factory(client: Any, keys: BinanceKeys, *, futures: bool, url: str | None = None,
                        testnet: bool = False) -> UserStreamFactory:
    """The account's user-data stream for the recorder: spot subscribes on the WebSocket API with a
    signed request (again after each reconnect), futures listens with a listen key from `client`
    (python-binance's REST client), kept alive and renewed when Binance says `listenKeyExpired`."""
    market = "futures" if futures else "spot"
    base = url.rstrip("/") + ("/private/ws" if futures else "/ws-api/v3") if url else USER_DATA_URLS[market][testnet]

    def subscribe_params() -> dict[str, Any]:
        params: dict[str, Any] = {"apiKey": keys.api_key.get(), "timestamp": int(time.time() * 1000)}
        params["signature"] = ws_api_signature(params, keys.api_secret.get())
        return params

    def make(handler: Callable[[Any], None]) -> UserDataStream:
        if futures:
            return UserDataStream(url=base, handler=handler, market=market,
                                  listen_key=lambda: str(client.futures_stream_get_listen_key()),
                                  keepalive=lambda key: client.futures_stream_keepalive(listenKey=key),
                                  backoff=(1.0, 60.0))
        return UserDataStream(url=base, handler=handler, market=market, subscribe_params=subscribe_params,
                              backoff=(1.0, 60.0))

    return make


def record_live(tape: Tape, symbols: Sequence[str], streams: Sequence[str], *, keys: BinanceKeys | None,
                futures: bool = False, user_data: bool = False, account: str | None = None,
                keep_raw: bool = False, stop: threading.Event | None = None,
                clock: Clock | None = None, user_data_url: str | None = None) -> RecorderStats:
    """`ticktape record binance`: record `streams` of `symbols` until `stop` is set (or Ctrl-C).

    python-binance's REST client fetches depth snapshots and refills aggregate-trade gaps;
    its websocket manager delivers the market's messages, our `UserDataStream` the account's
    (`run_live`; `user_data_url` replaces Binance's WebSocket base, e.g. a local venue).
    `account` names the account on Balance/PositionSnapshot events (default: "futures" with
    `futures`, else "spot", so the two accounts' balances never mix on the tape).
    Returns the counts per outcome.
    """
    account = account or ("futures" if futures else "spot")
    from binance import Client

    clock = clock or WallClock()
    names = stream_names(symbols, streams)
    client = Client(keys.api_key.get() if keys else None, keys.api_secret.get() if keys else None)

    def snapshot(symbol: str) -> Mapping[str, Any]:
        if futures:
            return client.futures_order_book(symbol=symbol, limit=1000)  # type: ignore[no-any-return]
        return client.get_order_book(symbol=symbol, limit=1000)  # type: ignore[no-any-return]

    def agg_trades(symbol: str, from_id: int, limit: int) -> list[Mapping[str, Any]]:
        fetch = client.futures_aggregate_trades if futures else client.get_aggregate_trades
        return fetch(symbol=symbol, fromId=from_id, limit=limit)  # type: ignore[no-any-return]

    appender = BatchAppender(tape, batch_size=1000)
    core = RecorderCore(appender, DeadLetterSink(appender, VENUE, "binance:ws", clock),
                        depth_symbols=symbols if "depth" in streams else (), fetch_snapshot=snapshot,
                        futures=futures, account=account, clock=clock, fetch_agg_trades=agg_trades,
                        keep_raw=keep_raw)
    stop = stop or threading.Event()
    try:
        if user_data and keys is None:
            raise ValueError("recording user data needs API keys")
        account_stream = (user_stream_factory(client, keys, futures=futures, url=user_data_url)
                          if user_data and keys is not None else None)
        run_live(core, streams=names, keys=keys, user_data=user_data,
                 futures=futures, clock=clock, stop=stop, user_stream=account_stream)
    except KeyboardInterrupt:
        stop.set()
    finally:
        appender.flush()
    return core.stats
