"""A gateway on a real venue, in-process against the local venues over real sockets: the exchange-filters control
answers on the tape before anything is sent (Binance and Betfair); a Betfair gateway reconciles on start
as a Binance one does (bets matched while it was away reach the tape once, marked; a bet nobody here sent
stops the start, named); a Binance spot gateway compares the account's holdings with the runs' positions."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from robots.live.fold import run_tag
from robots.live.gateway import RECONCILE_TOPIC, Gateway, spot_shortfalls
from robots.live.topics import EVENT_TOPIC, INTENT_TOPIC, RUNS_TOPIC
from tests.live.harness import run_records, wait_for
from tests.venues.betfair_exchange import LocalBetfairExchange, self_signed_cert
from tests.venues.binance_exchange import LocalBinanceExchange
from ticktape.errors import TicktapeError
from ticktape.events import CustomData, Event, OrderAccepted, OrderFilled, OrderRejected, PlaceOrder, RunStarted
from ticktape.tape import Tape, open_tape

RUN = "vstart-1"
TAG = run_tag(RUN)
MARKET, SELECTION = "1.100", 11
BET = f"{MARKET}:{SELECTION}"


def manifest(tape: Tape, venue: str) -> None:
    """A live run served by the `venue` gateway (its intents are written by the test, not a runner)."""
    for topic in (RUNS_TOPIC, INTENT_TOPIC, EVENT_TOPIC):
        if tape.partitions(topic) == 0:
            tape.create_topic(topic)
    tape.append(RUNS_TOPIC, [RunStarted(RUN, "every_nth", "bot", 0, 0, "{}", "test", ("md",), None, None, "{}",
                                        json.dumps({"name": venue, "gateway": "external"}), "{}", "live")],
                keys=[RUN])


def intent(venue: str, instrument: str, k: int, price: float, size: float) -> PlaceOrder:
    ts = time.time_ns()
    return PlaceOrder("bot", f"{TAG}-{k}-0", venue, instrument, ts, ts, "BUY", "LIMIT", price, size, "GTC")


class Running:
    """A gateway serving on a thread until `close`."""

    def __init__(self, uri: str, venue: str, settings: dict[str, object], **kw: Any) -> None:
        self.gateway = Gateway(uri, venue=venue, venue_settings=settings, poll_seconds=0.5, **kw)
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


@pytest.fixture
def binance(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBinanceExchange]:
    ex = LocalBinanceExchange()
    ex.set_price("BTCUSDT", 30_000.0, 30_000.1)
    monkeypatch.setenv("BINANCE_API_KEY", ex.api_key)
    monkeypatch.setenv("BINANCE_API_SECRET", ex.api_secret)
    yield ex
    ex.close()


@pytest.fixture
def betfair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalBetfairExchange, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the server's certificate")
    cert, key = self_signed_cert(tmp_path)
    ex = LocalBetfairExchange(cert, key, balance=1_000_000.0)
    ex.set_prices(MARKET, SELECTION, back=1.5, lay=1.52)  # a back bet at 2.0 rests
    for name, value in ex.credentials_env().items():
        monkeypatch.setenv(name, value)
    yield ex, cert
    ex.close()


def betfair_settings(ex: LocalBetfairExchange, cert: Path) -> dict[str, Any]:
    return dict(ex.settings(cert, timeout=0.5))


@pytest.mark.parametrize("venue", ["binance", "betfair"])
def test_the_exchange_filters_refuse_on_the_tape_before_anything_is_sent(
        venue: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """An intent the venue would refuse (off its price ladder / tick, under its minimum size) is an
    OrderRejected naming the `exchange_filters` control; the venue never hears of it; a good one goes."""
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    manifest(tape, venue)
    if venue == "binance":
        ex: Any = request.getfixturevalue("binance")
        settings: dict[str, object] = {"rest_url": ex.rest_url, "ws_url": ex.ws_url, "market": "spot", "timeout": 0.5}
        bad = [intent(venue, "BTCUSDT", 1, 29_900.005, 0.001), intent(venue, "BTCUSDT", 2, 29_900.0, 0.0001)]
        good = intent(venue, "BTCUSDT", 3, 29_900.0, 0.001)

        def sent() -> list[str]:
            return [o.client_order_id for o in ex.ledger.orders]
    else:
        ex, cert = request.getfixturevalue("betfair")
        settings = betfair_settings(ex, cert)
        bad = [intent(venue, BET, 1, 2.01, 5.0), intent(venue, BET, 2, 2.0, 0.5)]  # 2.0-3.0 ticks by 0.02
        good = intent(venue, BET, 3, 2.0, 5.0)

        def sent() -> list[str]:
            return sorted({b.rfo or "" for b in ex.bets.values()})
    gateway = Running(uri, venue, settings)
    try:
        tape.append(INTENT_TOPIC, [*bad, good], keys=[RUN] * 3)
        wait_for("the good order accepted", lambda: len(events_of(tape, OrderAccepted)) == 1, 30)
        rejected = [e for e in events_of(tape, OrderRejected) if isinstance(e, OrderRejected)]
        assert [(e.client_order_id, e.control) for e in rejected] == [
            (bad[0].client_order_id, "exchange_filters"), (bad[1].client_order_id, "exchange_filters")], rejected
        assert all(e.reason for e in rejected)
        assert sent() == [good.client_order_id]  # the refused ones never reached the venue
    finally:
        gateway.close()
        tape.close()


def test_betfair_bets_matched_while_the_gateway_was_away_are_appended_and_marked(
        betfair: tuple[LocalBetfairExchange, Path], tmp_path: Path) -> None:
    ex, cert = betfair
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    manifest(tape, "betfair")
    first = Running(uri, "betfair", betfair_settings(ex, cert))
    try:
        tape.append(INTENT_TOPIC, [intent("betfair", BET, 1, 2.0, 5.0)], keys=[RUN])
        wait_for("the bet accepted", lambda: len(events_of(tape, OrderAccepted)) == 1, 30)
    finally:
        first.close()
    ex.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)  # it matches while no gateway listens
    wait_for("the bet matched at the venue", lambda: all(b.matched_c == b.size_c for b in ex.bets.values()), 10)
    assert not events_of(tape, OrderFilled)
    second = Running(uri, "betfair", betfair_settings(ex, cert))  # reconciles in start()
    try:
        fills = [e for e in events_of(tape, OrderFilled) if isinstance(e, OrderFilled)]
        assert [(f.client_order_id, f.size, f.price) for f in fills] == [(f"{TAG}-1-0", 5.0, 2.0)], fills
        marks = [r.event for r in tape.read(RECONCILE_TOPIC)]
        assert (f"{TAG}-1-0", "OrderFilled") in [(m.key, json.loads(m.payload)["event"]) for m in marks
                                                  if isinstance(m, CustomData)]
    finally:
        second.close()
    n_marks = len(list(tape.read(RECONCILE_TOPIC)))
    third = Running(uri, "betfair", betfair_settings(ex, cert))  # nothing new: nothing appended twice
    try:
        assert len(events_of(tape, OrderFilled)) == 1 and len(list(tape.read(RECONCILE_TOPIC))) == n_marks
    finally:
        third.close()
        tape.close()


def test_a_betfair_bet_nobody_here_sent_stops_the_start_named(betfair: tuple[LocalBetfairExchange, Path],
                                                             tmp_path: Path) -> None:
    ex, cert = betfair
    from producers.betfair.trading import BetfairVenue
    from robots.live.exchange import Command

    other = BetfairVenue.from_settings(betfair_settings(ex, cert))  # another tape's gateway, say
    stranger = intent("betfair", BET, 7, 2.0, 5.0)._replace(client_order_id="zzzzzzzz-7-0")
    (placed,) = other.place(Command("place", stranger, stranger, run_ref="zzzzzzzz"))
    assert placed.status == "open", placed
    other.close()
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    manifest(tape, "betfair")
    refusing = Gateway(uri, venue="betfair", venue_settings=betfair_settings(ex, cert))
    try:
        with pytest.raises(TicktapeError, match="zzzzzzzz-7-0"):
            refusing.start()
    finally:
        refusing.close()
        tape.close()


def test_a_spot_account_holding_less_than_the_runs_bought_stops_the_start_named(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The run bought 0.01 BTC; the account holds it (a restart starts); someone sells most of it by hand
    while the gateway is away: the next start refuses, naming the asset, the tape's position and the
    venue's holding, unless told --no-position-check."""
    ex = LocalBinanceExchange(balances={"USDT": "100000", "BTC": "0"})
    ex.set_price("BTCUSDT", 30_000.0, 30_000.1)
    monkeypatch.setenv("BINANCE_API_KEY", ex.api_key)
    monkeypatch.setenv("BINANCE_API_SECRET", ex.api_secret)
    settings: dict[str, object] = {"rest_url": ex.rest_url, "ws_url": ex.ws_url, "market": "spot", "timeout": 0.5}
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    manifest(tape, "binance")
    ts = time.time_ns()
    try:
        first = Running(uri, "binance", settings)
        try:
            tape.append(INTENT_TOPIC, [PlaceOrder("bot", f"{TAG}-1-0", "binance", "BTCUSDT", ts, ts, "BUY", "MARKET",
                                                  0.0, 0.01, "GTC")], keys=[RUN])
            wait_for("the buy filled", lambda: len(events_of(tape, OrderFilled)) == 1, 30)
        finally:
            first.close()
        assert ex.ledger.balances["BTC"] == Decimal("0.01")
        Running(uri, "binance", settings).close()  # the account holds what the run bought: it starts
        ex.ledger.balances["BTC"] = Decimal("0.004")  # sold by hand while no gateway ran
        refusing = Gateway(uri, venue="binance", venue_settings=settings)
        try:
            with pytest.raises(TicktapeError, match=r"BTC: tape long 0\.01 \(BTCUSDT\), venue holds 0\.004"):
                refusing.start()
        finally:
            refusing.close()
        Running(uri, "binance", settings, check_positions=False).close()  # the operator says: trade anyway
    finally:
        tape.close()
        ex.close()


def test_spot_shortfalls_judge_only_what_the_account_lacks() -> None:
    symbols = {"BTCUSDT": {"base": "BTC"}, "BTCFDUSD": {"base": "BTC"}, "ETHUSDT": {"base": "ETH"}}
    assert spot_shortfalls({"BTCUSDT": 0.5, "ETHUSDT": -1.0}, {"BTC": 7.0}, symbols) == []  # more held; shorts
    assert spot_shortfalls({"BTCUSDT": 1.0}, {"BTC": 0.999}, symbols) == []  # a fee taken in the asset bought
    assert spot_shortfalls({"BTCUSDT": 0.3, "BTCFDUSD": 0.2}, {"BTC": 0.2}, symbols) == [
        "BTC: tape long 0.5 (BTCFDUSD, BTCUSDT), venue holds 0.2"]  # one asset, two instruments
    assert spot_shortfalls({"BTCUSDT": 1.0}, {}, symbols) == ["BTC: tape long 1 (BTCUSDT), venue holds 0"]
    assert spot_shortfalls({"XYZ": 5.0}, {}, symbols) == []  # not in the rules: not compared


@pytest.mark.parametrize("venue", ["binance", "betfair"])
def test_a_tape_older_than_the_account_stops_the_start_named(venue: str, request: pytest.FixtureRequest,
                                                              tmp_path: Path) -> None:
    """A run's two orders fill (done: no open-order check sees them). Its tape restarts fine; a copy of the
    tape taken between the two (restored from a backup, say) lacks the second, whose intent the runner would
    place again: a gateway on the copy refuses to start, naming it, unless told --no-position-check."""
    if venue == "binance":
        ex: Any = request.getfixturevalue("binance")
        settings: dict[str, object] = {"rest_url": ex.rest_url, "ws_url": ex.ws_url, "market": "spot", "timeout": 0.5}

        def order(k: int) -> PlaceOrder:
            ts = time.time_ns()
            return PlaceOrder("bot", f"{TAG}-{k}-0", venue, "BTCUSDT", ts, ts, "BUY", "MARKET", 0.0, 0.001, "GTC")
    else:
        ex, cert = request.getfixturevalue("betfair")
        ex.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)  # a back at 2.0 matches at once
        settings = betfair_settings(ex, cert)

        def order(k: int) -> PlaceOrder:
            return intent(venue, BET, k, 2.0, 5.0)
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    manifest(tape, venue)
    try:
        for k in (1, 2):
            gateway = Running(uri, venue, settings)
            try:
                tape.append(INTENT_TOPIC, [order(k)], keys=[RUN])
                wait_for(f"order {k} filled", lambda: len(events_of(tape, OrderFilled)) == k, 30)  # noqa: B023
            finally:
                gateway.close()
            if k == 1:
                shutil.copytree(tmp_path / "tape", tmp_path / "older")  # the backup
        Running(uri, venue, settings).close()  # its own tape explains both: the gateway starts
    finally:
        tape.close()
    older = f"file:{tmp_path / 'older'}"
    refusing = Gateway(older, venue=venue, venue_settings=settings)
    try:
        with pytest.raises(TicktapeError, match=f"does not hold \\({TAG}-2-0\\)"):
            refusing.start()
    finally:
        refusing.close()
    Running(older, venue, settings, check_positions=False).close()  # the operator says: trade anyway
