"""`record binance --user-data` over real sockets against the local Binance (tests/venues/binance_exchange.py).

The account's events must keep reaching the tape when Binance retires the stream under the
recorder: a futures listen key that expires (`listenKeyExpired`, then the connection closes) and a
spot WebSocket-API connection that drops (the subscription dies with it). python-binance's own
user socket ignores the first and does not subscribe again after the second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from binance.base_client import BaseClient

from producers.binance.credentials import BinanceKeys
from producers.binance.parsers import TOPIC_BALANCE, TOPIC_ORDERS, TOPIC_POSITION
from producers.binance.recorder import RecorderStats, record_live
from producers.binance.trading import BinanceVenue
from robots.live.exchange import Command
from tests.venues.binance_exchange import LocalBinanceExchange
from ticktape.config import Secret
from ticktape.events import Balance, DeadLetter, OrderFilled, PlaceOrder, PositionSnapshot
from ticktape.tape.file import FileTape

SYM = "BTCUSDT"


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not in time: {what}")
        time.sleep(0.02)


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBinanceExchange]:
    ex = LocalBinanceExchange()
    ex.set_price(SYM, "100", "101")
    # python-binance's REST client (listen keys, its start-up ping) talks to the local venue
    monkeypatch.setattr(BaseClient, "API_URL", ex.rest_url + "/api")
    monkeypatch.setattr(BaseClient, "FUTURES_URL", ex.rest_url + "/fapi")
    yield ex
    ex.close()


def market_buy(venue: BinanceVenue, coid: str) -> None:
    o = PlaceOrder(robot="r", client_order_id=coid, venue="binance", instrument=SYM, ts_event=0, ts_recv=0,
                   side="BUY", order_type="MARKET", price=0.0, size=0.1, time_in_force="GTC")
    (report,) = venue.place(Command(kind="place", order=o, intent=o, version=0))
    assert report.status == "filled", report


@pytest.mark.parametrize("market", ["futures", "spot"])
def test_the_account_stream_outlives_an_expired_listen_key_and_a_dropped_connection(
        market: str, exchange: LocalBinanceExchange, tmp_path: Path) -> None:
    keys = BinanceKeys(Secret(exchange.api_key), Secret(exchange.api_secret))
    tape = FileTape(tmp_path / "tape")
    stop = threading.Event()
    result: list[RecorderStats | BaseException] = []

    def record() -> None:
        try:  # the account's stream alone: no market streams
            result.append(record_live(tape, [SYM], [], keys=keys, futures=market == "futures", user_data=True,
                                      stop=stop, user_data_url=exchange.ws_url))
        except BaseException as exc:  # reported below
            result.append(exc)

    recorder = threading.Thread(target=record, name="recorder")
    recorder.start()
    venue = BinanceVenue(api_key=keys.api_key, api_secret=keys.api_secret, market=market,
                         rest_url=exchange.rest_url, ws_url=exchange.ws_url, timeout=2.0)
    reader = FileTape(tmp_path / "tape")

    def filled() -> set[str]:
        if TOPIC_ORDERS not in reader.topic_names():
            return set()
        return {r.event.client_order_id for r in reader.read(TOPIC_ORDERS) if isinstance(r.event, OrderFilled)}

    try:
        wait_for("the recorder to listen", lambda: exchange.subscribers(market) == 1 or bool(result))
        market_buy(venue, "abcdefgh-1-0")
        wait_for("the first fill on the tape", lambda: filled() == {"abcdefgh-1-0"})
        if market == "futures":
            exchange.expire_listen_key()
            wait_for("a new listen key", lambda: len(exchange.listen_keys) == 2 and exchange.subscribers(market) == 1)
        else:
            exchange.drop_stream()
            wait_for("a new subscription", lambda: exchange.subscribers(market) == 1)
        market_buy(venue, "abcdefgh-2-0")
        wait_for("the fill after the renewal on the tape", lambda: filled() == {"abcdefgh-1-0", "abcdefgh-2-0"})
    finally:
        stop.set()
        recorder.join(timeout=30)
        venue.close()
    assert not recorder.is_alive() and result and isinstance(result[0], RecorderStats), result
    fills = [r.event for r in reader.read(TOPIC_ORDERS) if isinstance(r.event, OrderFilled)]
    assert sorted(f.client_order_id for f in fills) == ["abcdefgh-1-0", "abcdefgh-2-0"]  # each once
    dead = [r.event for t in reader.topic_names() if t.startswith("dlq.") for r in reader.read(t)
            if isinstance(r.event, DeadLetter)]
    assert dead == [] and result[0].dead_letters == 0, dead  # listenKeyExpired is handled, not dead-lettered
    # the balances (and futures positions) carry the account they are of: futures ones never read as spot
    balances = [r.event for r in reader.read(TOPIC_BALANCE) if isinstance(r.event, Balance)]
    assert balances and {b.account for b in balances} == {market}
    if market == "futures":
        positions = [r.event for r in reader.read(TOPIC_POSITION) if isinstance(r.event, PositionSnapshot)]
        assert positions and {p.robot for p in positions} == {"futures"}  # robot field = the account
