"""`BinanceVenue` against the local Binance (tests/venues/binance_exchange.py) over real sockets, no mocks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from producers.binance.limits import Limit, RateLimiter
from producers.binance.trading import BinanceVenue
from robots.live.exchange import AccountReport, Command, OrderReport, OutcomeUnknown, VenueBusy
from tests.venues.binance_exchange import LocalBinanceExchange
from ticktape.config import Secret
from ticktape.errors import ConfigError
from ticktape.events import OrderType, PlaceOrder, Side, TimeInForce

MARKETS = ["spot", "futures"]
SYM = "BTCUSDT"


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def order(coid: str, side: Side = "BUY", type_: OrderType = "LIMIT", price: float = 99.0, size: float = 0.1,
          tif: TimeInForce = "GTC", symbol: str = SYM) -> PlaceOrder:
    return PlaceOrder(robot="r", client_order_id=coid, venue="binance", instrument=symbol, ts_event=0, ts_recv=0,
                      side=side, order_type=type_, price=price, size=size, time_in_force=tif)


def cmd(kind: str, o: PlaceOrder, version: int = 0) -> Command:
    return Command(kind=kind, order=o, intent=o, version=version)  # type: ignore[arg-type]


class Sink:
    """A ReportSink collecting what the stream delivers."""

    def __init__(self) -> None:
        self.reports: list[OrderReport | AccountReport] = []
        self.lock = threading.Lock()

    def __call__(self, report: OrderReport | AccountReport) -> None:
        with self.lock:
            self.reports.append(report)

    def orders(self, coid: str) -> list[OrderReport]:
        with self.lock:
            return [r for r in self.reports if isinstance(r, OrderReport) and r.client_order_id == coid]

    def fills(self, coid: str) -> list[str]:
        return [f.fill_id for r in self.orders(coid) for f in r.fills]


@pytest.fixture
def exchange() -> Iterator[LocalBinanceExchange]:
    ex = LocalBinanceExchange()
    ex.set_price(SYM, "100", "101")
    yield ex
    ex.close()


def started(venue: BinanceVenue, exchange: LocalBinanceExchange) -> Sink:
    """Start `venue` with a new Sink and wait until the venue has its user-data connection."""
    sink = Sink()
    venue.start(sink)
    wait_for(lambda: exchange.subscribers(venue.market) == 1)
    return sink


def make_venue(ex: LocalBinanceExchange, market: str, **kw: object) -> BinanceVenue:
    return BinanceVenue(api_key=Secret(ex.api_key), api_secret=Secret(ex.api_secret), market=market,
                        rest_url=ex.rest_url, ws_url=ex.ws_url, timeout=0.5, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=MARKETS)
def venue(request: pytest.FixtureRequest, exchange: LocalBinanceExchange) -> Iterator[BinanceVenue]:
    v = make_venue(exchange, request.param)
    yield v
    v.close()


# ------------------------------------------------------------------ orders


def test_market_order_fills_at_once_and_account_matches_the_venue(venue: BinanceVenue,
                                                                   exchange: LocalBinanceExchange) -> None:
    [r] = venue.place(cmd("place", order("abcdefgh-1-0", type_="MARKET", price=0.0, size=0.2)))
    assert r.status == "filled" and r.client_order_id == "abcdefgh-1-0" and r.side == "BUY"
    truth = [f for f in exchange.ledger.fills if f.market == venue.market]
    assert [f.fill_id for f in r.fills] == [str(f.trade_id) for f in truth]
    assert r.fills[0].price == 101.0 and r.fills[0].size == 0.2 and r.fills[0].fee == pytest.approx(0.0202)
    acct = venue.account()
    if venue.market == "spot":
        assert acct.balances["BTC"] == float(exchange.ledger.balances["BTC"]) == 10.2
    else:
        assert acct.positions == {SYM: float(exchange.ledger.positions[SYM])} == {SYM: 0.2}


def test_resting_limit_order_is_open_then_query_sees_its_maker_fill(venue: BinanceVenue,
                                                                    exchange: LocalBinanceExchange) -> None:
    o = order("abcdefgh-2-0", price=99.0)
    [r] = venue.place(cmd("place", o))
    assert r.status == "open" and r.fills == () and r.venue_order_id
    exchange.set_price(SYM, "98", "99")
    q = venue.query(cmd("verify", o))[-1]
    assert q.status == "filled" and q.venue_order_id == r.venue_order_id and q.source == "query"
    assert [(f.price, f.size, f.liquidity) for f in q.fills] == [(99.0, 0.1, "MAKER")]


@pytest.mark.parametrize("tif", ["IOC", "FOK"])
def test_ioc_and_fok_that_do_not_cross_expire_and_that_cross_fill(venue: BinanceVenue, exchange: LocalBinanceExchange,
                                                                  tif: TimeInForce) -> None:
    [r] = venue.place(cmd("place", order("abcdefgh-3-0", price=90.0, tif=tif)))
    assert r.status == "expired" and not r.fills
    [r] = venue.place(cmd("place", order("abcdefgh-4-0", price=101.0, tif=tif)))
    assert r.status == "filled" and sum(f.size for f in r.fills) == pytest.approx(0.1)
    sent = {o.client_order_id: o.time_in_force for o in exchange.ledger.orders}
    assert sent == {"abcdefgh-3-0": tif, "abcdefgh-4-0": tif}  # the venue got the time in force asked


def test_limit_maker_rests_as_post_only_and_one_that_would_take_is_rejected(venue: BinanceVenue,
                                                                            exchange: LocalBinanceExchange) -> None:
    [crossing] = venue.place(cmd("place", order("abcdefgh-p-0", type_="LIMIT_MAKER", price=101.0)))
    assert crossing.status == "rejected" and not crossing.fills
    assert ("-2010" in crossing.reason and "immediately match" in crossing.reason) if venue.market == "spot" \
        else "-5022" in crossing.reason
    assert not [f for f in exchange.ledger.fills if f.market == venue.market]  # nothing was taken
    o = order("abcdefgh-q-0", type_="LIMIT_MAKER", price=100.5)
    [resting] = venue.place(cmd("place", o))
    assert resting.status == "open"
    [sent] = [x for x in exchange.ledger.orders if x.market == venue.market]
    # spot has the type; futures says post-only with time in force GTX on a LIMIT order
    assert (sent.type, sent.time_in_force) == (("LIMIT_MAKER", "GTC") if venue.market == "spot" else ("LIMIT", "GTX"))
    exchange.set_price(SYM, "99.5", "100.5")  # the market comes to it: it fills as the maker
    q = venue.query(cmd("verify", o))[-1]
    assert q.status == "filled" and [(f.price, f.liquidity) for f in q.fills] == [(100.5, "MAKER")]


def test_a_post_only_order_is_refused_before_sending_when_it_cannot_rest(venue: BinanceVenue) -> None:
    rules = venue.rules()
    for tif in ("IOC", "FOK"):
        refusal = venue.check(rules, order("abcdefgh-r-0", type_="LIMIT_MAKER", price=100.0, tif=tif))
        assert refusal is not None and "LIMIT_MAKER" in refusal.reason and tif in refusal.reason
    bsp = venue.check(rules, order("abcdefgh-s-0", type_="LIMIT_ON_CLOSE", price=100.0))
    assert bsp is not None and "LIMIT_ON_CLOSE" in bsp.reason
    assert venue.check(rules, order("abcdefgh-t-0", type_="LIMIT_MAKER", price=100.0)) is None


def test_cancel_then_cancel_again_returns_the_final_report(venue: BinanceVenue) -> None:
    o = order("abcdefgh-4-0")
    venue.place(cmd("place", o))
    [c] = venue.cancel(cmd("cancel", o))
    assert c.status == "cancelled" and c.client_order_id == "abcdefgh-4-0"
    [again] = venue.cancel(cmd("cancel", o))
    assert again.status == "cancelled" and again.source == "query"
    [never] = venue.cancel(cmd("cancel", order("abcdefgh-5-0")))
    assert never.status == "unknown"


def test_query_of_an_order_the_venue_never_saw_is_unknown(venue: BinanceVenue) -> None:
    r = venue.query(cmd("verify", order("abcdefgh-6-0")))[-1]
    assert r.status == "unknown" and r.venue_order_id is None


def test_replace_moves_the_order_and_reports_carry_the_original_coid(venue: BinanceVenue,
                                                                      exchange: LocalBinanceExchange) -> None:
    sink = started(venue, exchange)
    o = order("abcdefgh-7-0", price=98.0)
    [first] = venue.place(cmd("place", o))
    moved = o._replace(price=99.5, size=0.2)
    [r] = venue.replace(cmd("replace", moved, version=1))
    assert r.status == "open" and r.client_order_id == "abcdefgh-7-0"
    live = [x for x in exchange.ledger.orders if x.market == venue.market and x.is_open]
    assert len(live) == 1 and live[0].price == Decimal("99.5") and live[0].qty == Decimal("0.2")
    if venue.market == "spot":  # cancel-replace: a new venue order under `<coid>.1`
        assert live[0].client_order_id == "abcdefgh-7-0.1" and r.venue_order_id != first.venue_order_id
    else:  # futures modify in place: same order, same client id
        assert live[0].client_order_id == "abcdefgh-7-0" and r.venue_order_id == first.venue_order_id
    exchange.set_price(SYM, "99", "99.5")  # crosses the replaced price
    wait_for(lambda: any(x.status == "filled" for x in sink.orders("abcdefgh-7-0")))
    statuses = [x.status for x in sink.orders("abcdefgh-7-0")]
    assert "cancelled" not in statuses  # the cancel half of a cancel-replace is not the order's end
    q = venue.query(cmd("verify", moved, version=1))[-1]
    assert q.status == "filled" and [f.size for f in q.fills] == [0.2]


def test_replace_of_an_order_filled_meanwhile_returns_its_fill(venue: BinanceVenue,
                                                                exchange: LocalBinanceExchange) -> None:
    o = order("abcdefgh-8-0", price=99.0)
    venue.place(cmd("place", o))
    exchange.set_price(SYM, "98", "99")
    [r] = venue.replace(cmd("replace", o._replace(price=98.5), version=1))
    assert r.status == "filled" and len(r.fills) == 1
    assert len([x for x in exchange.ledger.orders if x.market == venue.market]) == 1


def test_venue_rejections_become_rejected_reports(venue: BinanceVenue) -> None:
    [tick] = venue.place(cmd("place", order("abcdefgh-9-0", price=99.005)))
    assert tick.status == "rejected" and "-1013" in tick.reason and "PRICE_FILTER" in tick.reason
    if venue.market == "spot":
        [poor] = venue.place(cmd("place", order("abcdefgh-a-0", price=200.0, size=600.0)))
        assert poor.status == "rejected" and "-2010" in poor.reason and "insufficient balance" in poor.reason


def test_wrong_secret_is_refused_by_the_venue(exchange: LocalBinanceExchange) -> None:
    v = BinanceVenue(api_key=Secret(exchange.api_key), api_secret=Secret("not-the-secret"), rest_url=exchange.rest_url)
    [r] = v.place(cmd("place", order("abcdefgh-b-0")))
    assert r.status == "rejected" and r.reason.startswith("-1022")
    assert exchange.ledger.orders == []


def test_duplicate_client_id_returns_the_existing_order(venue: BinanceVenue, exchange: LocalBinanceExchange) -> None:
    o = order("abcdefgh-c-0")
    [first] = venue.place(cmd("place", o))
    [again] = venue.place(cmd("place", o))
    assert again.status == "open" and again.venue_order_id == first.venue_order_id and again.source == "query"
    assert len(exchange.placed(venue.market, "abcdefgh-c-0")) == 1


def test_open_orders_lists_only_ticktape_orders_with_their_fills(venue: BinanceVenue) -> None:
    venue.place(cmd("place", order("abcdefgh-d-0")))
    venue.place(cmd("place", order("manual-order-1")))
    rows = venue.open_orders()
    assert [r.client_order_id for r in rows] == ["abcdefgh-d-0"] and rows[0].source == "reconcile"


# ------------------------------------------------------------------ unknown outcomes


@pytest.mark.parametrize("fault", ["error_5xx_after", "drop_after", "timeout_after"])
def test_an_unknown_outcome_is_raised_and_query_finds_the_order(venue: BinanceVenue, exchange: LocalBinanceExchange,
                                                                fault: str) -> None:
    path = "/api/v3/order" if venue.market == "spot" else "/fapi/v1/order"
    exchange.fault(fault, method="POST", path=path, delay=0.8)
    o = order("abcdefgh-e-0", type_="MARKET", price=0.0)
    with pytest.raises(OutcomeUnknown):
        venue.place(cmd("place", o))
    q = venue.query(cmd("verify", o))[-1]
    assert q.status == "filled" and len(q.fills) == 1
    assert len(exchange.placed(venue.market, "abcdefgh-e-0")) == 1


def test_a_5xx_before_executing_leaves_no_order(venue: BinanceVenue, exchange: LocalBinanceExchange) -> None:
    exchange.fault("error_5xx_before", method="POST")
    o = order("abcdefgh-f-0")
    with pytest.raises(OutcomeUnknown):
        venue.place(cmd("place", o))
    assert venue.query(cmd("verify", o))[-1].status == "unknown"
    [r] = venue.place(cmd("place", o))  # the sender's resend after the query
    assert r.status == "open" and len(exchange.placed(venue.market, "abcdefgh-f-0")) == 1


def test_cancel_with_an_unknown_outcome_then_query(venue: BinanceVenue, exchange: LocalBinanceExchange) -> None:
    o = order("abcdefgh-g-0")
    venue.place(cmd("place", o))
    exchange.fault("error_5xx_after", method="DELETE")
    with pytest.raises(OutcomeUnknown):
        venue.cancel(cmd("cancel", o))
    assert venue.query(cmd("verify", o))[-1].status == "cancelled"


# ------------------------------------------------------------------ rate limits

SMALL_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 1, "limit": 60},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 1, "limit": 2},
]


def test_the_limiter_waits_instead_of_earning_a_429() -> None:
    ex = LocalBinanceExchange(rate_limits=SMALL_LIMITS)
    try:
        ex.set_price(SYM, "100", "101")
        v = make_venue(ex, "spot")
        v.rules()
        assert {lim.kind for lim in v.limiter.limits} == {"REQUEST_WEIGHT", "ORDERS"}
        for i in range(5):
            [r] = v.place(cmd("place", order(f"abcdefgh-h{i}-0")))
            assert r.status == "open"
        assert [a for a in ex.answers if a[2] == 429] == []
        assert v.limiter.waited > 0
        v.close()
    finally:
        ex.close()


def test_a_restarted_spot_venue_starts_from_the_venues_order_count() -> None:
    """The orders a previous process sent in the running window count: the new limiter asks the venue."""
    limits = [{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 3}]
    ex = LocalBinanceExchange(rate_limits=limits)
    try:
        ex.set_price(SYM, "100", "101")
        now = time.time()
        if now % 10 > 8:  # the three orders and the second start must share one 10 s window
            time.sleep(10 - now % 10)
        first = make_venue(ex, "spot")
        first.rules()
        for i in range(3):
            first.place(cmd("place", order(f"abcdefgh-s{i}-0")))
        first.close()
        second = make_venue(ex, "spot")
        assert second.limiter.wait_needed(1, 1) == 0  # knows nothing yet
        second.rules()
        assert second.limiter.wait_needed(1, 1) > 0  # the window is full: it would wait, not earn a 429
        second.close()
    finally:
        ex.close()


def test_a_429_becomes_venue_busy_with_retry_after_then_418() -> None:
    ex = LocalBinanceExchange(rate_limits=SMALL_LIMITS, ban_after=2)
    try:
        ex.set_price(SYM, "100", "101")
        v = make_venue(ex, "futures")  # rules() not fetched: nothing limits us on our side
        now = time.time()
        if now % 1 > 0.7:  # start early in a second: three orders must fall in one window
            time.sleep(1 - now % 1)
        v.place(cmd("place", order("abcdefgh-i1-0")))
        v.place(cmd("place", order("abcdefgh-i2-0")))
        with pytest.raises(VenueBusy) as busy:
            v.place(cmd("place", order("abcdefgh-i3-0")))
        assert busy.value.retry_after >= 1
        with pytest.raises(VenueBusy):  # the second 429 in a second: the venue bans from the next request
            v.place(cmd("place", order("abcdefgh-i4-0")))
        with pytest.raises(VenueBusy, match="418") as banned:
            v.place(cmd("place", order("abcdefgh-i5-0")))
        assert banned.value.retry_after >= 1
        assert [a[2] for a in ex.answers if a[1] == "/fapi/v1/order"] == [200, 200, 429, 429, 418]
        assert len([o for o in ex.ledger.orders if o.market == "futures"]) == 2
        v.close()
    finally:
        ex.close()


def test_limiter_sleeps_to_the_window_end_and_takes_the_venue_counts() -> None:
    now = [1000.25]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    lim = RateLimiter([Limit("REQUEST_WEIGHT", "MINUTE", 1, 10), Limit("ORDERS", "SECOND", 10, 2)],
                      clock=lambda: now[0], sleep=sleep, margin=0.0)
    lim.acquire(4, 1)
    lim.acquire(4, 1)
    assert slept == []
    lim.acquire(1, 1)  # a third order in the 10 s window [1000, 1010): wait for 1010
    assert slept == [pytest.approx(9.75)]
    lim.update({"X-MBX-USED-WEIGHT-1M": "10"})  # the venue says the minute [960, 1020) is used up
    lim.acquire(1, 0)
    assert now[0] == pytest.approx(1020.0)
    assert Limit("ORDERS", "SECOND", 10, 2).header == "x-mbx-order-count-10s"


# ------------------------------------------------------------------ user-data stream


def test_stream_delivers_fills_and_balances_and_a_duplicate_fill_twice(venue: BinanceVenue,
                                                                       exchange: LocalBinanceExchange) -> None:
    sink = started(venue, exchange)
    exchange.fault("duplicate_fill")
    venue.place(cmd("place", order("abcdefgh-j-0", price=99.0)))
    exchange.set_price(SYM, "98", "99")
    wait_for(lambda: len(sink.fills("abcdefgh-j-0")) == 2)
    assert len(set(sink.fills("abcdefgh-j-0"))) == 1  # the same fill id twice: de-duplicating is the gateway's
    assert {r.source for r in sink.reports} == {"stream"}
    wait_for(lambda: any(isinstance(r, AccountReport) for r in sink.reports))
    acct = [r for r in sink.reports if isinstance(r, AccountReport)][-1]
    if venue.market == "futures":
        assert acct.positions == {SYM: 0.1}
    else:
        assert acct.balances["BTC"] == 10.1


def test_silent_stream_then_resume_and_reconnect_after_a_drop(venue: BinanceVenue,
                                                              exchange: LocalBinanceExchange) -> None:
    sink = started(venue, exchange)
    exchange.fault("silent_stream")
    venue.place(cmd("place", order("abcdefgh-k-0")))
    time.sleep(0.1)
    assert sink.orders("abcdefgh-k-0") == [] and exchange.suppressed
    exchange.resume_stream()
    exchange.drop_stream()
    wait_for(lambda: venue.stream is not None and venue.stream.connections == 2
             and exchange.subscribers(venue.market) == 1)
    venue.place(cmd("place", order("abcdefgh-l-0", price=99.0)))
    exchange.set_price(SYM, "98", "99")
    wait_for(lambda: len(sink.fills("abcdefgh-l-0")) == 1)


def test_futures_listen_key_expiry_renews_the_key(exchange: LocalBinanceExchange) -> None:
    v = make_venue(exchange, "futures")
    sink = started(v, exchange)
    exchange.expire_listen_key()
    wait_for(lambda: v.stream is not None and v.stream.renewals == 1 and exchange.subscribers("futures") == 1)
    assert sum(exchange.listen_keys.values()) == 1 and len(exchange.listen_keys) == 2
    v.place(cmd("place", order("abcdefgh-m-0", type_="MARKET", price=0.0)))
    wait_for(lambda: len(sink.fills("abcdefgh-m-0")) == 1)
    v.close()


# ------------------------------------------------------------------ settings and secrets


def test_credentials_never_show(exchange: LocalBinanceExchange, caplog: pytest.LogCaptureFixture) -> None:
    secret_key, secret = "KEY-visible-nowhere-123", "SECRET-visible-nowhere-456"
    ex = LocalBinanceExchange(api_key=secret_key, api_secret=secret)
    try:
        with caplog.at_level(logging.DEBUG):
            v = BinanceVenue.from_settings({"market": "spot", "rest_url": ex.rest_url, "ws_url": ex.ws_url,
                                            "timeout": 1}, env={"BINANCE_API_KEY": secret_key,
                                                                "BINANCE_API_SECRET": secret})
            ex.set_price(SYM, "100", "101")
            started(v, ex)
            [r] = v.place(cmd("place", order("abcdefgh-n-0", type_="MARKET", price=0.0)))
            assert r.status == "filled"  # the keys did reach the venue
            ex.drop_stream()  # the reconnect logs a warning
            try:
                wait_for(lambda: v.stream is not None and v.stream.connections == 2 and ex.subscribers("spot") == 1)
            finally:
                v.close()
        text = caplog.text + repr(v) + str(v)
        assert "binance user-data stream" in caplog.text
        assert secret_key not in text and secret not in text
    finally:
        ex.close()


def test_from_settings_reads_a_credentials_file_outside_git_and_checks_settings(tmp_path: Path) -> None:
    f = tmp_path / "binance.toml"
    f.write_text('[binance]\napi_key = "k1"\napi_secret = "s1"\n')
    v = BinanceVenue.from_settings({"market": "futures", "testnet": True}, env={}, credentials_file=str(f))
    assert v.market == "futures" and "k1" not in repr(v) and v.ws_url.startswith("wss://fstream.binancefuture.com")
    with pytest.raises(ConfigError, match="credentials missing"):
        BinanceVenue.from_settings({}, env={})
    with pytest.raises(ConfigError, match="wrong type"):
        BinanceVenue.from_settings({"timeout": "10"}, env={"BINANCE_API_KEY": "a", "BINANCE_API_SECRET": "b"})
    with pytest.raises(ConfigError, match="unknown"):
        BinanceVenue.from_settings({"markt": "spot"}, env={"BINANCE_API_KEY": "a", "BINANCE_API_SECRET": "b"})
    inside = Path(__file__).resolve().parent / "no-such-credentials.toml"
    with pytest.raises(ConfigError, match="inside a git repository"):
        BinanceVenue.from_settings({}, env={}, credentials_file=str(inside))


def test_record_binance_user_data_without_keys_names_where_they_come_from(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_")}
    result = subprocess.run([sys.executable, "-m", "ticktape", "--tape", f"file:{tmp_path / 'tape'}", "record",
                             "binance", "--symbols", "BTCUSDT", "--user-data"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode != 0
    assert "BINANCE_API_KEY" in result.stderr and "[binance]" in result.stderr, result.stderr
