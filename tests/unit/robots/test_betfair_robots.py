"""The Betfair robots, end to end through the backtest API and the simulated Betfair venue.

Small hand-made market sequences first (every number worked out by hand in the comments),
then the two real recorded markets in /work/shared/data/betfair (skipped only when absent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from robots.api import RobotError
from robots.backtest import backtest
from robots.builtin.betfair_back_favourite import BetfairBackFavourite, BetfairParams
from robots.builtin.betfair_lay_lowest import BetfairLayLowest
from robots.registry import get_robot
from robots.sim.betfair_books import book, runner
from tests.shared_data import BETFAIR
from ticktape.events import (
    BetSettled,
    Event,
    MarketBook,
    MarketDefinition,
    MarketSettled,
    OrderCancelled,
    OrderFilled,
    PlaceOrder,
    RunnerDefinition,
)
from ticktape.tape import Tape, open_tape

S = 1_000_000_000
T0 = 1_700_000_000 * S
OFF = T0 + 100 * S  # scheduled start
MKT = "1.200"


def definition(ts: int, status: str = "OPEN", results: dict[int, str] | None = None, in_play: bool = False,
               version: int = 1) -> MarketDefinition:
    results = results or {11: "ACTIVE", 12: "ACTIVE", 13: "ACTIVE"}
    runners = tuple(RunnerDefinition(sel, 0.0, st, i + 1) for i, (sel, st) in enumerate(results.items()))
    return MarketDefinition(MKT, ts, ts, "e1", "4339", "Race", "R1", "WIN", "GB", "Romford", OFF, OFF, None, status,
                            in_play, 0, False, "ODDS", 1, version, "Europe/London", runners)


def race(fav_back: float = 2.4, fav_lay: float = 2.46, fav_size: float = 5.0) -> list[Event]:
    """Runner 12 is the favourite once the window opens; 13 is the outsider.

    t=10s (90 s before the off, outside a 60 s window): 11 is shortest at 2.8.
    t=50s: 12 shortens to `fav_back` (back) / `fav_lay` (lay); t=60s and t=80s: more books.
    t=105s: suspended with a new version (the off); t=200s: closed, 12 WINNER.
    """
    def mb(ts: int, r12_back: float, r12_lay: float, *, status: str = "OPEN", version: int = 1,
           traded12: float = 0.0) -> MarketBook:
        return book(MKT, ts, [
            runner(11, back=[(2.8, 20)], lay=[(2.9, 20)], traded=[(2.8, 50)]),
            runner(12, back=[(r12_back, fav_size), (r12_back - 0.02, 30)], lay=[(r12_lay, 9)],
                   traded=[(r12_back, 10 + traded12)]),
            runner(13, back=[(9.0, 4)], lay=[(9.6, 4)], traded=[(9.4, 3)]),
        ], status=status, version=version)

    return [
        definition(T0),
        mb(T0 + 10 * S, 3.0, 3.05),
        mb(T0 + 50 * S, fav_back, fav_lay),
        mb(T0 + 60 * S, fav_back, fav_lay, traded12=40),
        mb(T0 + 80 * S, fav_back, fav_lay, traded12=80),
        definition(OFF + 5 * S, "SUSPENDED", version=2),
        mb(OFF + 5 * S, fav_back, fav_lay, status="SUSPENDED", version=2, traded12=80),
        definition(OFF + 100 * S, "CLOSED", {11: "LOSER", 12: "WINNER", 13: "LOSER"}, version=3),
    ]


def of(result: Any, kind: type) -> list[Any]:
    return [e for e in result.order_events if type(e) is kind]


def test_back_favourite_backs_the_shortest_runner_once_inside_the_window() -> None:
    res = backtest("betfair_back_favourite", events=race(), params={"stake": "2", "seconds_before_off": "60"})
    [intent] = res.intent_events
    assert isinstance(intent, PlaceOrder)
    # First book inside the window is t=50s: 12 at 2.4 is the lowest back price.
    assert (intent.instrument, intent.side, intent.price, intent.size, intent.ts_event) == (
        f"{MKT}:12", "BUY", 2.4, 2.0, T0 + 50 * S)
    [fill] = of(res, OrderFilled)
    # Arrives 120 ms later (flumine's place latency) and takes 2 of the 5 at 2.4.
    assert (fill.price, fill.size, fill.liquidity, fill.ts_event) == (2.4, 2.0, "TAKER", T0 + 50 * S + 120_000_000)
    [bet] = of(res, BetSettled)
    assert (bet.runner_status, bet.profit) == ("WINNER", 2.8)  # 2 x (2.4 - 1)
    [market] = of(res, MarketSettled)
    assert (market.profit, market.commission, market.net_profit) == (2.8, 0.14, 2.66)
    assert res.summary["pnl"] == pytest.approx(2.66) and res.summary["fees"] == pytest.approx(0.14)
    assert res.state.bets == {MKT: intent.client_order_id} and res.state.matched == {intent.client_order_id: 2.0}


def test_back_favourite_respects_the_price_band_and_the_window() -> None:
    # Favourite at 2.4 is above max_price 2.2: no bet at all.
    res = backtest("betfair_back_favourite", events=race(), params={"max_price": "2.2"})
    assert res.intent_events == []
    # A 5 s window opens after the last pre-off book: no bet.
    res = backtest("betfair_back_favourite", events=race(), params={"seconds_before_off": "5"})
    assert res.intent_events == []
    # A 95 s window opens at t=5s: the first book (t=10s) already qualifies, and 11 at 2.8 is shortest then.
    res = backtest("betfair_back_favourite", events=race(), params={"seconds_before_off": "95"})
    [intent] = res.intent_events
    assert (intent.instrument, intent.price) == (f"{MKT}:11", 2.8)
    [market] = of(res, MarketSettled)
    assert (market.profit, market.commission) == (-2.0, 0.0)  # 11 lost: the stake, no commission


def test_unmatched_part_of_a_bet_fills_from_traded_volume_then_lapses_at_the_off() -> None:
    # Stake 8 against 5 offered at 2.4: 5 match at once, 3 rest at 2.4 with nobody queued ahead
    # (no backers waiting at 2.4); t=60s: +40 traded at 2.4 = 20 a side -> the 3 fill (MAKER).
    res = backtest("betfair_back_favourite", events=race(), params={"stake": "8"})
    fills = of(res, OrderFilled)
    assert [(f.price, f.size, f.liquidity) for f in fills] == [(2.4, 5.0, "TAKER"), (2.4, 3.0, "MAKER")]
    assert fills[1].ts_event == T0 + 60 * S
    [bet] = of(res, BetSettled)
    assert bet.profit == 11.2  # 8 x 1.4
    # Stake 80: 5 at once, 20 at t=60s, 20 at t=80s; the other 35 lapse when the market suspends at the off.
    res = backtest("betfair_back_favourite", events=race(), params={"stake": "80"})
    fills = of(res, OrderFilled)
    assert [(f.size, f.liquidity) for f in fills] == [(5.0, "TAKER"), (20.0, "MAKER"), (20.0, "MAKER")]
    [lapsed] = of(res, OrderCancelled)
    assert lapsed.reason.startswith("lapsed at suspension") and lapsed.ts_event == OFF + 5 * S
    [bet] = of(res, BetSettled)
    assert (bet.size_matched, bet.profit) == (45.0, 63.0)  # 45 x 1.4
    [market] = of(res, MarketSettled)
    assert (market.commission, market.net_profit) == (3.15, 59.85)


def test_lay_lowest_lays_the_lowest_lay_price_under_the_threshold() -> None:
    res = backtest("betfair_lay_lowest", events=race(), params={"stake": "4", "max_price": "3"})
    [intent] = res.intent_events
    assert (intent.instrument, intent.side, intent.price, intent.size) == (f"{MKT}:12", "SELL", 2.46, 4.0)
    [fill] = of(res, OrderFilled)
    assert (fill.price, fill.size, fill.liquidity) == (2.46, 4.0, "TAKER")
    [bet] = of(res, BetSettled)
    assert bet.profit == -5.84  # the layer pays 4 x 1.46 when 12 wins
    [market] = of(res, MarketSettled)
    assert (market.commission, market.net_profit) == (0.0, -5.84)
    # Threshold 2.4 is below every lay price: no bet.
    assert backtest("betfair_lay_lowest", events=race(), params={"max_price": "2.4"}).intent_events == []


def test_lay_lowest_wins_the_stake_when_the_runner_loses() -> None:
    events = race()
    events[-1] = definition(OFF + 100 * S, "CLOSED", {11: "WINNER", 12: "LOSER", 13: "LOSER"}, version=3)
    res = backtest("betfair_lay_lowest", events=events, params={"stake": "4"})
    [market] = of(res, MarketSettled)
    assert (market.profit, market.commission, market.net_profit) == (4.0, 0.2, 3.8)


def test_params_are_typed_and_checked() -> None:
    robot = get_robot("betfair_lay_lowest", {"stake": "3.5", "market_types": "WIN;PLACE"})
    assert isinstance(robot, BetfairLayLowest)
    assert robot.params.stake == 3.5 and robot.params.market_types == ("WIN", "PLACE")
    assert robot.subscriptions().market_types == ("WIN", "PLACE")
    for bad in ({"stake": "0"}, {"stake": "1.234"}, {"max_price": "1001"}, {"min_price": "3", "max_price": "2"},
                {"seconds_before_off": "-1"}, {"nope": "1"}):
        with pytest.raises(RobotError):
            get_robot("betfair_back_favourite", bad)
    assert isinstance(BetfairBackFavourite(BetfairParams()).params, BetfairParams)


def test_market_type_filter_skips_other_markets() -> None:
    res = backtest("betfair_back_favourite", events=race(), params={"market_types": "PLACE"})
    assert res.intent_events == []


# ---------------------------------------------------------------- the real recorded markets

DATA = BETFAIR  # shared/ beside the repo (tests/shared_data.py)
REAL = ("1.197931750", "1.197931751")  # greyhounds, Sheffield 2022-04-19 18:26 UTC: WIN and PLACE (2 winners)
needs_real = pytest.mark.shared_data(*(f"betfair/{m}" for m in REAL))
FAV = 39823721  # trap 6, the favourite in both; it lost the WIN market and placed in the PLACE market


@pytest.fixture(scope="module")
def real_tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    from producers.betfair.historical import import_file

    tape = open_tape(f"file:{tmp_path_factory.mktemp('bf') / 'tape'}")
    for market in REAL:
        import_file(tape, DATA / market)
    yield tape
    tape.close()


@needs_real
def test_back_favourite_on_the_real_markets(real_tape: Tape) -> None:
    res = backtest("betfair_back_favourite", tape=real_tape, params={"stake": "2", "seconds_before_off": "60"})
    # The window opens at 18:25:00; the first book after it is pt 1650392700473. Then (checked with
    # betfairlightweight on the raw files) trap 6 has the lowest best back price in both markets:
    # 1.54 (35.33 offered) in the WIN market, 1.27 (89.37) in the PLACE market.
    assert [(i.instrument, i.side, i.price, i.size, i.ts_event) for i in res.intent_events] == [
        (f"1.197931750:{FAV}", "BUY", 1.54, 2.0, 1650392700473 * 1_000_000),
        (f"1.197931751:{FAV}", "BUY", 1.27, 2.0, 1650392700473 * 1_000_000),
    ]
    # They arrive 120 ms later, before the next update (pt ...701474): matched in full at once.
    assert [(f.instrument, f.price, f.size, f.liquidity, f.ts_event) for f in of(res, OrderFilled)] == [
        (f"1.197931750:{FAV}", 1.54, 2.0, "TAKER", 1650392700593 * 1_000_000),
        (f"1.197931751:{FAV}", 1.27, 2.0, "TAKER", 1650392700593 * 1_000_000),
    ]
    # WIN: trap 6 lost, -2.00, no commission. PLACE: it placed, +2 x 0.27 = 0.54, commission 5% = 0.027 -> 0.03.
    assert [(b.market_id, b.runner_status, b.profit) for b in of(res, BetSettled)] == [
        ("1.197931750", "LOSER", -2.0), ("1.197931751", "WINNER", 0.54)]
    assert [(m.market_id, m.profit, m.commission, m.net_profit) for m in of(res, MarketSettled)] == [
        ("1.197931750", -2.0, 0.0, -2.0), ("1.197931751", 0.54, 0.03, 0.51)]
    assert res.summary["pnl"] == pytest.approx(-1.49) and res.summary["fees"] == pytest.approx(0.03)
    assert res.summary["events"] == 338  # 332 books + 6 definitions
    again = backtest("betfair_back_favourite", tape=real_tape, params={"stake": "2", "seconds_before_off": "60"})
    assert again.summary["intents_sha256"] == res.summary["intents_sha256"]


@needs_real
def test_lay_lowest_on_the_real_markets_fills_the_rest_from_traded_volume(real_tape: Tape) -> None:
    res = backtest("betfair_lay_lowest", tape=real_tape, params={"stake": "50", "max_price": "2"})
    assert [(i.instrument, i.side, i.price, i.size) for i in res.intent_events] == [
        (f"1.197931750:{FAV}", "SELL", 1.55, 50.0), (f"1.197931751:{FAV}", "SELL", 1.28, 50.0)]
    ms = 1_000_000
    # WIN market: 16.48 offered at 1.55 is taken; the other 33.52 rest at 1.55 with nobody queued ahead
    # (nothing available to back at 1.55). The next update adds 66.84 traded at <= 1.55 (33.42 a side),
    # the one after 59.31 (29.655 a side): 33.42 then the last 0.10.
    # PLACE market: 6.73 taken at 1.28; +28.20 traded at <= 1.28 (14.10 a side), then +133.92 (66.96 a
    # side) fills the last 29.17.
    assert [(f.instrument[-1], f.price, f.size, f.liquidity, f.ts_event // ms) for f in of(res, OrderFilled)] == [
        ("1", 1.55, 16.48, "TAKER", 1650392700593), ("1", 1.55, 33.42, "MAKER", 1650392701474),
        ("1", 1.55, 0.1, "MAKER", 1650392702475),
        ("1", 1.28, 6.73, "TAKER", 1650392700593), ("1", 1.28, 14.1, "MAKER", 1650392701474),
        ("1", 1.28, 29.17, "MAKER", 1650392704478),
    ]
    # WIN: trap 6 lost, the lay wins 50, commission 2.50. PLACE: it placed, the lay pays 50 x 0.28 = 14.
    assert [(m.market_id, m.profit, m.commission, m.net_profit) for m in of(res, MarketSettled)] == [
        ("1.197931750", 50.0, 2.5, 47.5), ("1.197931751", -14.0, 0.0, -14.0)]
    assert res.summary["pnl"] == pytest.approx(33.5)


@needs_real
def test_lay_lowest_threshold_on_the_real_markets(real_tape: Tape) -> None:
    # Only the PLACE market's lowest lay price (1.28) is under 1.4; the WIN market's (1.55 at 18:25:00)
    # never comes down to 1.4 before the off.
    res = backtest("betfair_lay_lowest", tape=real_tape, params={"max_price": "1.4"})
    assert [(i.instrument, i.price) for i in res.intent_events] == [(f"1.197931751:{FAV}", 1.28)]


def test_state_round_trips_through_json() -> None:
    robot = get_robot("betfair_back_favourite", {"stake": "8"})
    res = backtest(robot, events=race())
    text = robot.state_to_json(res.state)
    back = robot.state_from_json(text)
    assert back == res.state and back.bets == {MKT: res.intent_events[0].client_order_id}
    assert back.settled == 1 and back.market_time == {}  # the start time is dropped once the bet is placed


def test_no_bet_once_the_market_is_in_play() -> None:
    # Same race, but every book from t=50s on is in-play (a market that went off early): the gate
    # lets none of them through, so the robot never bets although the window is open.
    events = [e._replace(in_play=True) if isinstance(e, MarketBook) and e.ts_event >= T0 + 50 * S else e
              for e in race()]
    assert backtest("betfair_back_favourite", events=events).intent_events == []
    robot = get_robot("betfair_back_favourite")
    assert robot.check(events[2]) is False and robot.check(events[1]) is True
