"""A gateway starting on a real venue reconciles first: what happened while it was away reaches the tape
(marked on `gateway.reconcile`), and what nobody can explain stops it, named. Local Binance, real sockets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from robots.live.fold import run_tag
from robots.live.gateway import RECONCILE_TOPIC, Gateway
from robots.live.topics import EVENT_TOPIC, INTENT_TOPIC, RUNS_TOPIC
from tests.live.harness import run_records, wait_for
from tests.venues.binance_exchange import LocalBinanceExchange
from ticktape.errors import TicktapeError
from ticktape.events import CustomData, Event, OrderAccepted, OrderFilled, PlaceOrder, RunStarted
from ticktape.tape import Tape, open_tape

RUN = "rec-1"
TAG = run_tag(RUN)


@pytest.fixture
def venue(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBinanceExchange]:
    ex = LocalBinanceExchange()
    ex.set_price("BTCUSDT", 30_000.0, 30_000.1)
    monkeypatch.setenv("BINANCE_API_KEY", ex.api_key)
    monkeypatch.setenv("BINANCE_API_SECRET", ex.api_secret)
    yield ex
    ex.close()


def settings(ex: LocalBinanceExchange, market: str = "spot") -> dict[str, object]:
    return {"rest_url": ex.rest_url, "ws_url": ex.ws_url, "market": market, "timeout": 0.5}


def manifest(tape: Tape) -> None:
    """A live run served by the Binance gateway (its intents are written by the test, not a runner)."""
    for topic in (RUNS_TOPIC, INTENT_TOPIC, EVENT_TOPIC):
        if tape.partitions(topic) == 0:
            tape.create_topic(topic)
    tape.append(RUNS_TOPIC, [RunStarted(RUN, "every_nth", "bot", 0, 0, "{}", "test", ("md",), None, None, "{}",
                                        json.dumps({"name": "binance", "gateway": "external"}), "{}", "live")],
                keys=[RUN])


def limit_buy(k: int, price: float) -> PlaceOrder:
    ts = time.time_ns()
    return PlaceOrder("bot", f"{TAG}-{k}-0", "binance", "BTCUSDT", ts, ts, "BUY", "LIMIT", price, 0.001, "GTC")


class Running:
    """A gateway serving on a thread until `stop`."""

    def __init__(self, uri: str, ex: LocalBinanceExchange, **kw: Any) -> None:
        self.gateway = Gateway(uri, venue="binance", venue_settings=settings(ex, kw.pop("market", "spot")),
                               poll_seconds=0.5, **kw)
        self.gateway.start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.gateway.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.gateway.close()


def events_of(tape: Tape, kind: type) -> list[Event]:
    return [e for e in run_records(tape, EVENT_TOPIC, RUN) if type(e) is kind]


def test_fills_made_while_the_gateway_was_away_are_appended_and_marked(venue: LocalBinanceExchange,
                                                                       tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    manifest(tape)
    first = Running(uri, venue)
    try:
        tape.append(INTENT_TOPIC, [limit_buy(1, 29_900.0)], keys=[RUN])
        wait_for("the order accepted", lambda: len(events_of(tape, OrderAccepted)) == 1, 30)
    finally:
        first.close()
    venue.set_price("BTCUSDT", 29_850.0, 29_850.1)  # it fills while no gateway listens
    assert venue.ledger.fills and not events_of(tape, OrderFilled)
    second = Running(uri, venue)  # reconciles in start()
    try:
        (fill,) = events_of(tape, OrderFilled)
        assert fill.client_order_id == f"{TAG}-1-0" and fill.size == 0.001 and fill.leaves_size == 0.0
        marks = [r.event for r in tape.read(RECONCILE_TOPIC)]
        assert [(m.key, json.loads(m.payload)["event"]) for m in marks if isinstance(m, CustomData)] == [
            (f"{TAG}-1-0", "OrderFilled")]
    finally:
        second.close()
    third = Running(uri, venue)  # nothing new: nothing appended twice
    try:
        assert len(events_of(tape, OrderFilled)) == 1 and len(list(tape.read(RECONCILE_TOPIC))) == 1
    finally:
        third.close()
        tape.close()


def test_an_order_placed_while_away_by_nobody_this_tape_knows_stops_the_start(venue: LocalBinanceExchange,
                                                                              tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    manifest(tape)
    stranger = Running(uri, venue)  # another tape's gateway could have sent it: we send it by hand
    try:
        from producers.binance.trading import BinanceVenue
        from robots.live.exchange import Command

        other = BinanceVenue.from_settings(settings(venue))
        order = limit_buy(7, 29_000.0)._replace(client_order_id="zzzzzzzz-7-0")
        other.place(Command("place", order, order))
        other.close()
    finally:
        stranger.close()
    refusing = Gateway(uri, venue="binance", venue_settings=settings(venue))
    try:
        with pytest.raises(TicktapeError, match="zzzzzzzz-7-0"):
            refusing.start()
    finally:
        refusing.close()
        tape.close()


def test_a_futures_position_the_fills_do_not_explain_stops_the_start_unless_told(
        venue: LocalBinanceExchange, tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    manifest(tape)
    venue.ledger.positions["BTCUSDT"] = Decimal("0.5")  # opened by hand, outside ticktape
    refusing = Gateway(uri, venue="binance", venue_settings=settings(venue, "futures"))
    try:
        with pytest.raises(TicktapeError, match=r"BTCUSDT: tape 0, venue 0\.5"):
            refusing.start()
    finally:
        refusing.close()
    told = Gateway(uri, venue="binance", venue_settings=settings(venue, "futures"), check_positions=False)
    try:
        told.start()  # the operator says: trade anyway
        assert told.fold.account is not None and told.fold.account.positions == {"BTCUSDT": 0.5}
    finally:
        told.close()
        tape.close()
