"""The live recorder's handler on recorded payloads: events, dead letters, depth gaps and resyncs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from producers.binance.book import BookSync, OrderBook
from producers.binance.parsers import parse_payload
from producers.binance.recorder import RecorderCore, stream_names
from producers.common import BatchAppender, DeadLetterSink
from ticktape.events import BookDelta, BookSnapshot, DeadLetter, FeedGap, PriceSize
from ticktape.tape import open_tape
from ticktape.timeutil import VirtualClock

FIX = Path(__file__).parents[2] / "fixtures" / "binance"


class RecordedRest:
    """Returns recorded REST depth answers in order (our resync logic under test, not Binance's)."""

    def __init__(self, answers: list[Mapping[str, Any]]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, symbol: str) -> Mapping[str, Any]:
        self.calls.append(symbol)
        if not self.answers:
            raise ConnectionError("no more recorded snapshots")
        return self.answers.pop(0)


def _record(tmp_path: Path, files: list[str], rest: RecordedRest | None,
            keep_raw: bool = False) -> tuple[Any, RecorderCore]:
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    clock = VirtualClock(1_700_000_100_000_000_000)
    app = BatchAppender(tape, batch_size=3)
    core = RecorderCore(app, DeadLetterSink(app, "binance", "binance:ws", clock), depth_symbols=["BTCUSDT"],
                        fetch_snapshot=rest, clock=clock, keep_raw=keep_raw)
    for name in files:
        for line in (FIX / name).read_text().splitlines():
            clock.advance(clock.now() + 1_000_000)
            core.handle(json.loads(line) if line.startswith("{") else line, clock.now())
    app.flush()
    return tape, core


def test_depth_gap_is_recorded_resynced_and_the_book_rebuilds_from_the_tape(tmp_path: Path) -> None:
    rest = RecordedRest(json.loads((FIX / "depth_snapshots.json").read_text()))
    tape, core = _record(tmp_path, ["depth_session.jsonl"], rest)
    book_events = [r.event for r in tape.read("md.binance.book")]
    deltas = [e for e in book_events if isinstance(e, BookDelta)]
    snaps = [e for e in book_events if isinstance(e, BookSnapshot)]
    gaps = [e for e in book_events if isinstance(e, FeedGap)]
    assert len(deltas) == 8  # every delta received is on the tape, applied or not
    assert [s.last_update_id for s in snaps] == [998, 1030]
    assert [(g.expected, g.received, g.repaired) for g in gaps] == [(1011, 1020, False), (None, 1030, True)]
    assert rest.calls == ["BTCUSDT", "BTCUSDT"]
    assert core.stats.gaps == 1 and core.stats.snapshots == 2
    # The gap is on the tape right after the delta that revealed it, before the resync snapshot.
    kinds = [type(e).__name__ for e in book_events]
    assert kinds[kinds.index("FeedGap") - 1:kinds.index("FeedGap") + 3] == [
        "BookDelta", "FeedGap", "BookSnapshot", "FeedGap"]

    book = OrderBook.rebuilt("BTCUSDT", book_events)
    bids, asks = book.best(10)
    assert bids == [PriceSize(100.2, 0.1), PriceSize(100.0, 1.25), PriceSize(99.9, 0.7), PriceSize(99.0, 4.0)]
    assert asks == [PriceSize(100.6, 2.5), PriceSize(100.75, 0.5)]
    assert book.last_id == 1040


def test_a_failed_snapshot_is_recorded_and_retried_at_the_next_delta(tmp_path: Path) -> None:
    snapshots = json.loads((FIX / "depth_snapshots.json").read_text())
    rest = RecordedRest(snapshots[:1])
    tape, core = _record(tmp_path, ["depth_session.jsonl"], rest)
    # The 5th delta reveals a gap; it and each following delta ask again: 1 good + 4 failed attempts.
    assert len(rest.calls) == 5 and core.stats.dead_letters == 4
    dls = [r.event for r in tape.read("dlq.binance")]
    assert dls and all(isinstance(d, DeadLetter) and "depth snapshot failed" in d.error for d in dls)
    gaps = [r.event for r in tape.read("md.binance.book") if isinstance(r.event, FeedGap)]
    assert [g.repaired for g in gaps] == [False]  # never repaired: no snapshot came


def test_bad_messages_go_to_the_dead_letter_topic_and_recording_goes_on(tmp_path: Path) -> None:
    tape, core = _record(tmp_path, ["ws_bad.jsonl", "ws_messages.jsonl"], None, keep_raw=True)
    raw = [r.event for r in tape.read("raw.binance")]
    assert len(raw) == 16 and raw[3].payload == "this is not json" and raw[4].key == "btcusdt@trade"
    dls = [r.event for r in tape.read("dlq.binance")]
    raw_lines = (FIX / "ws_bad.jsonl").read_text().splitlines()
    assert [d.position for d in dls] == ["message 1", "message 2", "message 3", "message 4"]
    assert dls[3].raw == raw_lines[3].encode()
    assert json.loads(dls[0].raw) == json.loads(raw_lines[0])  # the payload kept (as JSON) for forensics
    assert "field 'p'" in dls[0].error
    assert core.stats.events["md.binance.trade"] == 1 and core.stats.dead_letters == 4
    assert sum(1 for _ in tape.read("orders.event")) == 5


def test_disconnect_records_gaps_then_resyncs_on_the_new_socket(tmp_path: Path) -> None:
    rest = RecordedRest(json.loads((FIX / "depth_snapshots.json").read_text()))
    tape, core = _record(tmp_path, [], rest)
    lines = [json.loads(x) for x in (FIX / "depth_session.jsonl").read_text().splitlines()]
    for msg in lines[:4]:
        core.handle(msg, 1)
    core.handle({"e": "error", "type": "ConnectionClosedError", "m": "no close frame received or sent"}, 2)
    core.handle({"e": "error", "type": "BinanceWebsocketClosed", "m": "Connection closed"}, 2)  # the same drop
    for msg in lines[6:]:
        core.handle(msg, 3)
    core.appender.flush()
    gaps = [r.event for r in tape.read("md.binance.book") if isinstance(r.event, FeedGap)]
    assert [(g.instrument, g.stream, g.expected, g.repaired) for g in gaps] == [
        ("*", "connection", None, False), ("BTCUSDT", "depth", 1011, False), ("BTCUSDT", "depth", None, True)]


def test_book_sync_futures_uses_previous_final_id() -> None:
    sync = BookSync("BTCUSDT", futures=True)
    d = [BookDelta("binance", "BTCUSDT", i, i, u0, u1, (), ()) for i, (u0, u1) in
         enumerate([(100, 110), (115, 120), (125, 130)])]
    assert sync.on_delta(d[0], 90).need_snapshot
    assert sync.on_snapshot(BookSnapshot("binance", "BTCUSDT", 0, 0, 105, (), ())).synced
    assert sync.on_delta(d[1], 110).events == []  # pu == previous u: continuous though U jumps
    step = sync.on_delta(d[2], 121)
    assert step.need_snapshot and step.events[0].expected == 121 and step.events[0].received == 122


def test_a_snapshot_older_than_the_stream_is_refetched() -> None:
    sync = BookSync("X")
    sync.on_delta(BookDelta("binance", "X", 0, 0, 500, 510, (), ()))
    assert sync.on_snapshot(BookSnapshot("binance", "X", 0, 0, 400, (), ())).need_snapshot
    assert sync.on_snapshot(BookSnapshot("binance", "X", 0, 0, 505, (), ())).synced
    assert sync.last_id == 510


def test_stream_names() -> None:
    assert stream_names(["BTCUSDT"], ["trade", "depth", "kline_1m"]) == [
        "btcusdt@trade", "btcusdt@depth@100ms", "btcusdt@kline_1m"]
    with pytest.raises(ValueError, match="unknown Binance stream 'ticker'"):
        stream_names(["BTCUSDT"], ["ticker"])
    assert parse_payload({"stream": "btcusdt@depth5", "data": {"lastUpdateId": 5, "bids": [], "asks": []}}, 9)[0][1] \
        == BookSnapshot("binance", "BTCUSDT", 9, 9, 5, (), ())


def _agg(a: int, t_ms: int) -> dict[str, Any]:
    return {"e": "aggTrade", "E": t_ms, "s": "BTCUSDT", "a": a, "p": "100.5", "q": "0.1", "f": a * 2, "l": a * 2,
            "T": t_ms, "m": False, "M": True}


def test_trade_id_gaps_are_refilled_over_rest_in_order_or_recorded(tmp_path: Path) -> None:
    history = [{k: v for k, v in _agg(a, 1_700_000_000_000 + a).items() if k not in ("e", "E", "s")}
               for a in range(100, 120)]
    calls: list[tuple[str, int, int]] = []

    def fetch(symbol: str, from_id: int, limit: int) -> list[Mapping[str, Any]]:
        calls.append((symbol, from_id, limit))
        return [h for h in history if h["a"] >= from_id][:limit]

    tape, core = _record(tmp_path, [], None)
    core.fetch_agg_trades = fetch
    for a in (100, 101, 102, 106, 106, 107):  # 103..105 lost, 106 repeated after a reconnect
        core.handle({"stream": "btcusdt@aggTrade", "data": _agg(a, 1_700_000_000_000 + a)}, 5)
    core.handle({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 7, "p": "1",
                                                     "q": "1", "T": 1_700_000_000_000, "m": True}}, 6)
    core.handle({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 9, "p": "1",
                                                     "q": "1", "T": 1_700_000_000_001, "m": True}}, 7)
    core.appender.flush()
    agg = [r.event for r in tape.read("md.binance.aggtrade")]
    ids = [int(e.trade_id) if not isinstance(e, FeedGap) else ("gap", e.expected, e.received, e.repaired) for e in agg]
    assert ids == [100, 101, 102, 103, 104, 105, ("gap", 103, 106, True), 106, 106, 107]
    assert calls == [("BTCUSDT", 103, 3)]
    trades = [r.event for r in tape.read("md.binance.trade")]
    gap = trades[1]
    assert isinstance(gap, FeedGap) and (gap.stream, gap.expected, gap.received, gap.repaired) == ("trade", 8, 9, False)
    assert core.stats.gaps == 1


class ReplayManager:
    """Stands in for python-binance's socket manager: replays recorded messages into the callback
    from its own thread, like the real one. Tests our restart/backoff loop, not Binance's socket."""

    scripts: ClassVar[list[list[Any]]] = []
    started: ClassVar[list[ReplayManager]] = []

    def __init__(self, api_key: str | None, api_secret: str | None) -> None:
        self.script = ReplayManager.scripts.pop(0)
        self.threads: list[Any] = []
        ReplayManager.started.append(self)

    def start(self) -> None:
        pass

    def start_multiplex_socket(self, callback: Any, streams: list[str]) -> str:
        import threading

        def play() -> None:
            for msg in self.script:
                if callable(msg):
                    msg()
                else:
                    callback(msg)

        t = threading.Thread(target=play)
        t.start()
        self.threads.append(t)
        return "multiplex"

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        for t in self.threads:
            t.join(timeout)

    def is_alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)


def test_live_loop_restarts_after_the_socket_gives_up_and_records_everything(tmp_path: Path) -> None:
    import threading

    from producers.binance.recorder import run_live

    lines = [json.loads(x) for x in (FIX / "ws_messages.jsonl").read_text().splitlines()]
    stop = threading.Event()
    ReplayManager.started = []
    ReplayManager.scripts = [
        [*lines[:2], {"e": "error", "type": "BinanceWebsocketClosed", "m": "reconnecting"}, lines[2],
         {"e": "error", "type": "BinanceWebsocketUnableToConnect", "m": "gave up"}],
        [*lines[3:6], stop.set],
    ]
    tape, core = _record(tmp_path, [], None)
    run_live(core, streams=["btcusdt@trade"], keys=None, user_data=False, futures=False,
             clock=core.clock, stop=stop, first_backoff=0.01, flush_every=0.01, manager_factory=ReplayManager)
    assert len(ReplayManager.started) == 2  # the self-reconnecting error did not restart; giving up did
    assert core.stats.messages == 8 and core.stats.dead_letters == 0  # error notices are gaps, not bad payloads
    assert [r.event.trade_id for r in tape.read("md.binance.trade")] == ["3245678901"]
    assert sum(1 for _ in tape.read("md.binance.bar")) == 1  # the open kline is not a bar
    gaps = [r.event for r in tape.read("md.binance.book") if isinstance(r.event, FeedGap)]
    assert [(g.instrument, g.reason) for g in gaps] == [
        (inst, f"websocket error: {why}") for why in ("reconnecting", "gave up") for inst in ("*", "BTCUSDT")]
