"""`BetfairVenue` against the local Betfair (tests/venues/betfair_exchange.py) over real TLS sockets.

betfairlightweight runs unchanged (login, JSON-RPC, the order stream); only its URLs, stream
address and trusted CA point at 127.0.0.1. The exchange's ledger is the ground truth every
test compares with: no bet placed twice, matched sizes as the venue says.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from producers.betfair.execution import check, rules
from producers.betfair.trading import BetfairVenue, TransactionBudget
from robots.live.exchange import AccountReport, Command, OrderReport, OutcomeUnknown, VenueBusy
from tests.venues.betfair_exchange import LocalBetfairExchange, self_signed_cert
from ticktape.events import PlaceOrder, ReplaceOrder

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the server's certificate")

MARKET, SELECTION = "1.100", 11
INSTRUMENT = f"{MARKET}:{SELECTION}"
PASSWORD, APP_KEY = "pa55-secret-word", "app-key-secret"


def order(coid: str = "abcdefgh-1-1", side: str = "BUY", price: float = 2.0, size: float = 10.0,
          tif: str = "GTC", order_type: str = "LIMIT") -> PlaceOrder:
    return PlaceOrder("bot", coid, "betfair", INSTRUMENT, 0, 0, side, order_type, price, size, tif)  # type: ignore[arg-type]


def place(o: PlaceOrder) -> Command:
    return Command("place", o, o, 0, "run-1")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture
def exchange(cert: tuple[Path, Path]) -> Iterator[LocalBetfairExchange]:
    ex = LocalBetfairExchange(*cert, password=PASSWORD, app_key=APP_KEY)
    yield ex
    ex.close()


@pytest.fixture
def make_venue(exchange: LocalBetfairExchange, cert: tuple[Path, Path]) -> Iterator[Callable[..., BetfairVenue]]:
    made: list[BetfairVenue] = []

    def make(**overrides: object) -> BetfairVenue:
        venue = BetfairVenue.from_settings(exchange.settings(cert[0], timeout=0.5, **overrides),
                                           env=exchange.credentials_env())
        made.append(venue)
        return venue

    yield make
    for venue in made:
        venue.close()


@pytest.fixture
def venue(make_venue: Callable[..., BetfairVenue]) -> BetfairVenue:
    return make_venue()


def executed(exchange: LocalBetfairExchange, method: str) -> int:
    return sum(1 for m, _ in exchange.executed if m == method)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# ---------------------------------------------------------------------- placing


def test_place_matches_what_is_available_at_once_and_the_rest_when_the_price_comes(
        venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    exchange.set_prices(MARKET, SELECTION, back=2.1, lay=2.2, back_size=4)
    [report] = venue.place(place(order(price=2.0)))
    assert (report.status, report.matched, report.avg_price, report.side) == ("open", 4.0, 2.1, "BUY")
    [bet] = exchange.bets_for("abcdefgh-1-1")
    assert report.venue_order_id == bet.bet_id and bet.fills == [(210, 400, "TAKER")]
    params = exchange.executed[0][1]
    assert params["customerRef"] == "abcdefgh-1-1" and params["customerStrategyRef"] == "run-1"
    assert params["instructions"][0]["limitOrder"] == {"size": 10.0, "price": 2.0, "persistenceType": "PERSIST"}

    exchange.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)  # the resting 6 is marketable now
    final = venue.query(place(order()))[-1]
    assert (final.status, final.matched, final.venue_order_id) == ("filled", 10.0, bet.bet_id)
    assert final.avg_price == pytest.approx(2.04) and bet.fills[-1] == (200, 600, "MAKER")


@pytest.mark.parametrize(("tif", "status", "matched"), [("IOC", "expired", 4.0), ("FOK", "expired", 0.0)])
def test_ioc_and_fok_are_fill_or_kill(venue: BetfairVenue, exchange: LocalBetfairExchange, tif: str, status: str,
                                      matched: float) -> None:
    exchange.set_prices(MARKET, SELECTION, back=2.0, lay=2.02, back_size=4)
    [report] = venue.place(place(order(tif=tif)))
    assert (report.status, report.matched) == (status, matched)
    limit = exchange.executed[0][1]["instructions"][0]["limitOrder"]
    assert limit["timeInForce"] == "FILL_OR_KILL" and limit["minFillSize"] == (10.0 if tif == "FOK" else 0)
    assert exchange.bets_for("abcdefgh-1-1")[0].lapsed_c == 1000 - round(matched * 100)


def test_market_order_is_a_bsp_bet_with_the_size_as_liability(venue: BetfairVenue,
                                                              exchange: LocalBetfairExchange) -> None:
    [report] = venue.place(place(order(side="SELL", order_type="MARKET", size=20.0)))
    assert report.status == "open"
    ins = exchange.executed[0][1]["instructions"][0]
    assert ins["orderType"] == "MARKET_ON_CLOSE" and ins["side"] == "LAY"
    assert ins["marketOnCloseOrder"] == {"liability": 20.0}


@pytest.mark.parametrize(("side", "sp", "status", "stake"),
                         [("BUY", 3.5, "filled", 20.0), ("BUY", 2.5, "expired", 0.0),
                          ("SELL", 2.5, "filled", 13.33), ("SELL", 3.5, "expired", 0.0)])
def test_limit_on_close_is_a_bsp_bet_matched_at_the_sp_only_within_its_limit(
        venue: BetfairVenue, exchange: LocalBetfairExchange, side: str, sp: float, status: str, stake: float) -> None:
    [report] = venue.place(place(order(side=side, order_type="LIMIT_ON_CLOSE", price=3.0, size=20.0)))
    assert report.status == "open" and report.matched == 0.0
    ins = exchange.executed[0][1]["instructions"][0]
    assert ins["orderType"] == "LIMIT_ON_CLOSE" and ins["limitOnCloseOrder"] == {"liability": 20.0, "price": 3.0}
    exchange.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)  # the exchange's prices do not touch a BSP bet
    assert venue.query(place(order()))[-1].matched == 0.0
    exchange.reconcile_bsp(MARKET, {SELECTION: sp})  # a back takes an SP >= 3, a lay an SP <= 3
    final = venue.query(place(order()))[-1]
    assert (final.status, final.matched) == (status, stake)
    if stake:
        assert final.avg_price == sp


def test_check_refuses_order_types_betfair_does_not_have() -> None:
    r = rules()
    maker = check(r, order(order_type="LIMIT_MAKER"))
    assert maker is not None and "LIMIT_MAKER" in maker.reason
    assert check(r, order(order_type="LIMIT_ON_CLOSE", price=3.0, size=2.0)) is None
    lay = check(r, order(side="SELL", order_type="LIMIT_ON_CLOSE", price=3.0, size=5.0))
    assert lay is not None and "lay liability 5.0 is below the minimum 10" in lay.reason
    off = check(r, order(order_type="LIMIT_ON_CLOSE", price=3.03, size=2.0))
    assert off is not None and "ladder" in off.reason
    fok = check(r, order(order_type="LIMIT_ON_CLOSE", price=3.0, size=2.0, tif="FOK"))
    assert fok is not None and "FOK" in fok.reason


def test_betfair_refusals_are_rejected_reports(venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    [bad_odds] = venue.place(place(order(coid="abcdefgh-1-2", price=2.03)))  # not checked first on purpose
    assert bad_odds.status == "rejected" and "INVALID_ODDS" in bad_odds.reason
    exchange.suspend(MARKET)
    [suspended] = venue.place(place(order(coid="abcdefgh-1-3")))
    assert suspended.status == "rejected" and "MARKET_SUSPENDED" in suspended.reason
    assert not exchange.bets


def test_a_resent_place_is_deduplicated_by_customer_ref_and_reports_the_existing_bet(
        venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    [first] = venue.place(place(order()))
    [again] = venue.place(place(order()))
    assert again.venue_order_id == first.venue_order_id and again.status == "open" and again.source == "query"
    assert len(exchange.bets_for("abcdefgh-1-1")) == 1


# ---------------------------------------------------------------------- faults


@pytest.mark.parametrize("fault", ["drop_after", "error_5xx_after", "timeout_after"])
def test_an_unanswered_place_is_outcome_unknown_and_the_query_finds_the_bet(
        venue: BetfairVenue, exchange: LocalBetfairExchange, fault: str) -> None:
    exchange.inject(fault, "placeOrders")
    with pytest.raises(OutcomeUnknown):
        venue.place(place(order()))
    [bet] = exchange.bets_for("abcdefgh-1-1")
    found = venue.query(place(order()))[-1]
    assert (found.status, found.venue_order_id) == ("open", bet.bet_id)
    [resent] = venue.place(place(order()))  # the sender resends: de-duplicated, nothing placed twice
    assert resent.venue_order_id == bet.bet_id and len(exchange.bets_for("abcdefgh-1-1")) == 1


def test_a_5xx_before_running_is_outcome_unknown_and_the_query_says_unknown(
        venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    exchange.inject("error_5xx_before", "placeOrders")
    with pytest.raises(OutcomeUnknown):
        venue.place(place(order()))
    assert venue.query(place(order()))[-1].status == "unknown"
    [report] = venue.place(place(order()))
    assert report.status == "open" and len(exchange.bets_for("abcdefgh-1-1")) == 1


def test_twenty_scripted_faults_never_place_a_bet_twice(venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    kinds = ["drop_after", "error_5xx_before", "error_5xx_after", "timeout_after", "too_many_requests"]
    exchange.set_prices(MARKET, SELECTION, back=1.9, lay=1.92)
    for i in range(20):
        exchange.inject(kinds[i % len(kinds)], "placeOrders", delay=0.7)
        command = place(order(coid=f"abcdefgh-2-{i}"))
        outcome = ""
        for _ in range(3):  # the sender's loop: query after an unknown outcome, resend if not there
            try:
                [report] = venue.place(command)
                outcome = report.status
                break
            except (OutcomeUnknown, VenueBusy):
                if venue.query(command)[-1].status != "unknown":
                    outcome = "found"
                    break
        assert outcome in ("open", "found")
        assert len(exchange.bets_for(f"abcdefgh-2-{i}")) == 1
    assert not exchange.faults


def test_too_many_requests_is_venue_busy_and_runs_nothing(venue: BetfairVenue,
                                                          exchange: LocalBetfairExchange) -> None:
    exchange.inject("too_many_requests", "placeOrders")
    with pytest.raises(VenueBusy):
        venue.place(place(order()))
    assert not exchange.bets


def test_an_expired_session_logs_in_again_and_runs_the_call_once(venue: BetfairVenue,
                                                                 exchange: LocalBetfairExchange) -> None:
    venue.place(place(order(coid="abcdefgh-1-1")))
    exchange.expire_sessions()
    [report] = venue.place(place(order(coid="abcdefgh-1-2")))
    assert report.status == "open" and venue.logins == 2 and exchange.api.logins == 2
    assert len(exchange.bets_for("abcdefgh-1-2")) == 1


def test_a_started_venue_keeps_its_session_alive(make_venue: Callable[..., BetfairVenue],
                                                 exchange: LocalBetfairExchange) -> None:
    """The keep-alive thread sends keepAlive with the session's token once it is older than the interval
    (Betfair ends idle sessions), without logging in again; the session still places bets."""
    venue = make_venue(keep_alive_interval=0.5)
    venue.start(lambda report: None)

    def keep_alives() -> list[str]:
        return [h.get("X-Authentication", "") for path, h, _ in list(exchange.api.calls) if path == "/api/keepAlive"]

    assert wait_for(lambda: len(keep_alives()) >= 2, timeout=10), keep_alives()
    assert all(token in exchange.api.tokens for token in keep_alives()) and venue.logins == 1
    [report] = venue.place(place(order(coid="abcdefgh-1-9")))
    assert report.status == "open" and venue.logins == 1


def test_the_hourly_transaction_budget_refuses_instead_of_exceeding(
        make_venue: Callable[..., BetfairVenue], exchange: LocalBetfairExchange) -> None:
    venue = make_venue(transactions_per_hour=2)
    venue.place(place(order(coid="abcdefgh-1-1")))
    venue.place(place(order(coid="abcdefgh-1-2")))
    with pytest.raises(VenueBusy) as busy:
        venue.place(place(order(coid="abcdefgh-1-3")))
    assert 3500 < busy.value.retry_after <= 3600
    assert len(exchange.bets) == 2 and venue.query(place(order(coid="abcdefgh-1-3")))[-1].status == "unknown"


def test_transaction_budget_is_a_rolling_hour() -> None:
    now = [0.0]
    budget = TransactionBudget(3, clock=lambda: now[0])
    budget.take(2)
    now[0] = 1000.0
    budget.take(1)
    with pytest.raises(VenueBusy) as busy:
        budget.take(1)
    assert busy.value.retry_after == 2600.0  # when the first two leave the window
    now[0] = 3600.0
    budget.take(2)
    assert budget.used == 3


# ---------------------------------------------------------------------- cancel, replace, listings


def test_cancel_a_resting_bet_and_again_after_it_is_gone(venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    exchange.set_prices(MARKET, SELECTION, back=1.9, lay=1.92)
    venue.place(place(order()))
    cancel = Command("cancel", order(), order(), 0, "run-1")
    [report] = venue.cancel(cancel)
    assert (report.status, report.matched, report.reason) == ("cancelled", 0.0, "cancelled 10")
    [again] = venue.cancel(cancel)  # already complete: its final report, no second cancel
    assert again.status == "cancelled" and executed(exchange, "cancelOrders") == 1


def test_replace_moves_price_and_size_and_reports_each_bet(venue: BetfairVenue,
                                                           exchange: LocalBetfairExchange) -> None:
    exchange.set_prices(MARKET, SELECTION, back=2.0, lay=2.02, back_size=4)
    [placed] = venue.place(place(order(price=1.8, size=10)))
    assert placed.matched == 4.0  # matched 4 at 2.0 (all there was); 6 rest at 1.8
    moved = order(price=1.9, size=5)
    intent = ReplaceOrder("bot", moved.client_order_id, "betfair", INSTRUMENT, 0, 0, "BUY", "LIMIT", 1.9, 5, "GTC")
    command = Command("replace", moved, intent, 1, "run-1")
    old, new = venue.replace(command)
    assert (old.venue_order_id, old.status, old.matched) == (placed.venue_order_id, "cancelled", 4.0)
    assert new.venue_order_id != old.venue_order_id and (new.status, new.matched) == ("open", 0.0)
    bets = exchange.bets_for("abcdefgh-1-1")
    assert [(b.price_h, b.size_c, b.cancelled_c) for b in bets] == [(180, 1000, 600), (190, 500, 0)]
    refs = [p["customerRef"] for m, p in exchange.executed if m in ("cancelOrders", "replaceOrders")]
    assert refs == ["abcdefgh-1-1.r1s", "abcdefgh-1-1.r1"]

    venue.replace(command)  # a resend after an unknown outcome changes nothing
    assert len(exchange.bets_for("abcdefgh-1-1")) == 2 and executed(exchange, "replaceOrders") == 1
    assert venue.query(place(moved))[-1].venue_order_id == new.venue_order_id
    assert [r.venue_order_id for r in venue.query_bets("abcdefgh-1-1")] == [b.bet_id for b in bets]


def test_replace_to_day_updates_the_persistence(venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    venue.place(place(order(tif="GTC")))
    day = order(tif="DAY")
    venue.replace(Command("replace", day, day, 1, "run-1"))
    [bet] = exchange.bets_for("abcdefgh-1-1")
    assert bet.persistence == "LAPSE" and executed(exchange, "updateOrders") == 1


def test_replace_cannot_grow_a_bet(venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    venue.place(place(order(size=5)))
    bigger = order(size=8)
    [report] = venue.replace(Command("replace", bigger, bigger, 1, "run-1"))
    assert report.status == "rejected" and "cannot increase" in report.reason  # refused: the bet stands
    assert executed(exchange, "replaceOrders") == executed(exchange, "cancelOrders") == 0


def test_open_orders_lists_ticktape_orders_only(venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    venue.place(place(order(coid="abcdefgh-1-1")))
    venue.place(place(order(coid="placed-by-hand")))
    exchange.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)
    venue.place(place(order(coid="abcdefgh-1-2", price=1.5)))  # matched at once: not open
    assert [r.client_order_id for r in venue.open_orders()] == []  # the first two matched too
    exchange.set_prices(MARKET, SELECTION, back=1.5, lay=1.52)
    venue.place(place(order(coid="abcdefgh-1-3", price=3.0)))
    venue.place(place(order(coid="hand-2", price=3.0)))
    assert [(r.client_order_id, r.status, r.source) for r in venue.open_orders()] == [("abcdefgh-1-3", "open", "poll")]


def test_settled_bets_are_found_in_cleared_orders(venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    exchange.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)
    venue.place(place(order()))
    exchange.settle(MARKET, SELECTION)
    report = venue.query(place(order()))[-1]
    assert (report.status, report.matched, report.avg_price) == ("filled", 10.0, 2.0)


def test_account_funds_are_balances(venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    venue.place(place(order(size=10)))
    account = venue.account()
    assert isinstance(account, AccountReport) and account.positions == {}
    assert account.balances == {"GBP": 990.0, "GBP.exposure": -10.0}


# ---------------------------------------------------------------------- the order stream


def test_the_order_stream_delivers_reports_and_resumes_from_clk_after_a_cut(
        venue: BetfairVenue, exchange: LocalBetfairExchange) -> None:
    reports: list[OrderReport] = []
    lock = threading.Lock()

    def sink(report: object) -> None:
        assert isinstance(report, OrderReport)
        with lock:
            reports.append(report)

    def seen(status: str, matched: float) -> bool:
        with lock:
            return any(r.status == status and r.matched == matched for r in reports)

    venue.start(sink)
    assert wait_for(lambda: exchange.stream.orders_sent.is_set())
    exchange.set_prices(MARKET, SELECTION, back=1.9, lay=1.92)
    [placed] = venue.place(place(order()))
    assert wait_for(lambda: seen("open", 0.0))
    first = reports[0]
    assert (first.venue_order_id, first.client_order_id, first.source, first.side) == (
        placed.venue_order_id, "abcdefgh-1-1", "stream", "BUY")

    exchange.cut_stream()
    exchange.set_prices(MARKET, SELECTION, back=2.0, lay=2.02, back_size=3)  # 3 match, maybe while away
    assert wait_for(lambda: seen("open", 3.0))
    subs = [m for m in exchange.stream.received if m["op"] == "orderSubscription"]
    assert len(subs) == 2 and subs[1]["clk"] is not None and subs[1]["initialClk"] == "initial"

    exchange.inject("duplicate_update")
    exchange.set_prices(MARKET, SELECTION, back=2.0, lay=2.02, back_size=3)
    assert wait_for(lambda: sum(r.matched == 6.0 for r in reports) == 2)  # sent twice, delivered twice

    exchange.inject("silent_stream")
    exchange.set_prices(MARKET, SELECTION, back=2.0, lay=2.02)
    time.sleep(0.3)
    assert not seen("filled", 10.0)
    exchange.resume_stream()
    assert wait_for(lambda: seen("filled", 10.0))


# ---------------------------------------------------------------------- rules and secrets


def test_check_refuses_what_betfair_would_with_the_numbers() -> None:
    r = rules()
    assert check(r, order(price=2.02)) is None and check(r, order(price=1000.0, size=1)) is None
    off = check(r, order(price=2.03))
    assert off is not None and off.control == "exchange_filters" and "2.02 and 2.04" in off.reason
    outside = check(r, order(price=1010.0))
    assert outside is not None and "1.01..1000" in outside.reason
    small = check(r, order(size=0.5))
    assert small is not None and "0.5" in small.reason and "minimum stake 1" in small.reason
    cents = check(r, order(size=2.345))
    assert cents is not None and "2 decimals" in cents.reason
    lay_bsp = check(r, order(side="SELL", order_type="MARKET", size=5))
    assert lay_bsp is not None and "minimum 10" in lay_bsp.reason


def test_credentials_never_reach_repr_or_logs(make_venue: Callable[..., BetfairVenue],
                                              exchange: LocalBetfairExchange, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    venue = make_venue()
    venue.start(lambda report: None)
    assert wait_for(lambda: exchange.stream.orders_sent.is_set())
    venue.place(place(order()))
    exchange.expire_sessions()
    venue.place(place(order(coid="abcdefgh-1-2")))
    venue.close()
    auth = [m for m in exchange.stream.received if m["op"] == "authentication"]
    assert auth and auth[0]["appKey"] == APP_KEY  # the stream did authenticate with it
    text = caplog.text + repr(venue) + str(venue)
    assert PASSWORD not in text and APP_KEY not in text
