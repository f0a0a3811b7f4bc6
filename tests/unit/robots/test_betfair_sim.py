"""The simulated Betfair venue, driven directly on hand-made market books (expectations by hand)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.sim.betfair import BetfairSimConfig, BetfairSimVenue, parse_instrument
from robots.sim.betfair_books import book, runner
from robots.sim.betfair_money import bet_profit_cents, commission_cents, is_valid_price, tick_offset
from ticktape.errors import ValidationError
from ticktape.events import (
    BetSettled,
    CancelOrder,
    Event,
    MarketBook,
    MarketDefinition,
    MarketSettled,
    OrderCancelled,
    OrderFilled,
    PlaceOrder,
    ReplaceOrder,
    RunnerDefinition,
)

S = 1_000_000_000
MKT = "1.100"
SEL = 11
INSTR = f"{MKT}:{SEL}"


def place(coid: str, side: str, price: float, size: float, *, robot: str = "r1", tif: str = "GTC",
          instrument: str = INSTR, order_type: str = "LIMIT") -> PlaceOrder:
    return PlaceOrder(robot, coid, "betfair", instrument, 0, 0, side, order_type, price, size, tif)  # type: ignore[arg-type]


def fills(events: list[Event] | Any) -> list[tuple[str, float, float, str]]:
    return [(e.client_order_id, e.price, e.size, e.liquidity) for e in events if isinstance(e, OrderFilled)]


def kinds(events: list[Event] | Any) -> list[str]:
    return [type(e).__name__ for e in events]


def std_book(ts: int = 0, *, traded: list[tuple[float, float]] | None = None, status: str = "OPEN",
             in_play: bool = False, bet_delay: int = 0, version: int = 1,
             back: list[tuple[float, float]] | None = None, lay: list[tuple[float, float]] | None = None,
             runner_status: str = "ACTIVE") -> MarketBook:
    """Runner 11: backers can take 3.0 (10) and 2.9 (5); layers 3.1 (8), 3.5 (20); runner 12 quiet."""
    r11 = runner(SEL, back=back if back is not None else [(3.0, 10), (2.9, 5)],
                 lay=lay if lay is not None else [(3.1, 8), (3.5, 20)],
                 traded=traded if traded is not None else [(3.0, 100)], status=runner_status)
    r12 = runner(12, back=[(1.5, 50)], lay=[(1.52, 50)], traded=[(1.5, 500)])
    return book(MKT, ts, [r11, r12], status=status, in_play=in_play, bet_delay=bet_delay, version=version)


def venue_with_book(**config: Any) -> BetfairSimVenue:
    v = BetfairSimVenue(BetfairSimConfig(**config))
    assert v.on_market(std_book(0)) == ()
    return v


# ---------------------------------------------------------------- at arrival


def test_back_takes_available_to_back_at_each_levels_price() -> None:
    v = venue_with_book()
    out = v.on_intent(place("a", "BUY", 2.9, 12), 5)
    assert kinds(out) == ["OrderAccepted", "OrderFilled", "OrderFilled"]
    assert fills(out) == [("a", 3.0, 10.0, "TAKER"), ("a", 2.9, 2.0, "TAKER")]
    assert [e.leaves_size for e in out if isinstance(e, OrderFilled)] == [2.0, 0.0]
    assert all(e.ts_event == 5 for e in out)
    view = v.order("r1", "a")
    assert view is not None and view.state == "DONE" and view.matched == 12.0
    assert view.average_price == pytest.approx((3.0 * 10 + 2.9 * 2) / 12)


def test_lay_takes_available_to_lay_up_to_its_price_and_rests_the_rest() -> None:
    v = venue_with_book()
    out = v.on_intent(place("l", "SELL", 3.1, 10), 1)
    assert fills(out) == [("l", 3.1, 8.0, "TAKER")]
    view = v.order("r1", "l")
    # The 2 left rest at 3.1; backers' money waiting at 3.1 (available_to_back) is none: queue 0.
    assert view is not None and view.state == "OPEN" and view.remaining == 2.0 and view.queue_ahead == 0.0


def test_passive_back_waits_for_its_queue_then_fills_from_half_the_traded_volume() -> None:
    v = venue_with_book()
    out = v.on_intent(place("b", "BUY", 3.5, 8), 1)
    assert kinds(out) == ["OrderAccepted"]
    # 20 of other backers' money is waiting at 3.5 (shown as available to lay): it matches first.
    assert v.order("r1", "b").queue_ahead == 20.0  # type: ignore[union-attr]
    # +30 traded at 3.5 = 15 each side: the queue drops to 5.
    assert fills(v.on_market(std_book(2 * S, traded=[(3.0, 100), (3.5, 30)]))) == []
    assert v.order("r1", "b").queue_ahead == 5.0  # type: ignore[union-attr]
    # +30 more at 3.5 and +4 at 4.0 (a higher price counts for a back): 15 - 5 = 10, then 2 -> capped at 8.
    out = v.on_market(std_book(3 * S, traded=[(3.0, 100), (3.5, 60), (4.0, 4)]))
    assert fills(out) == [("b", 3.5, 8.0, "MAKER")]
    assert out[0].ts_event == 3 * S and out[0].leaves_size == 0.0


def test_traded_volume_below_a_backs_price_does_not_fill_it() -> None:
    v = venue_with_book()
    v.on_intent(place("b", "BUY", 3.5, 8, tif="GTC"), 1)
    out = v.on_market(std_book(2 * S, traded=[(3.0, 500), (3.4, 500)]))
    assert fills(out) == []
    assert v.order("r1", "b").queue_ahead == 20.0  # type: ignore[union-attr]


def test_passive_lay_fills_from_trades_at_or_below_its_price() -> None:
    v = venue_with_book()
    v.on_intent(place("l", "SELL", 2.8, 4), 1)  # nobody offers to lay below 3.1: rests, queue 0 at 2.8
    out = v.on_market(std_book(2 * S, traded=[(2.7, 3), (3.0, 150)]))  # 1.5 one-sided at 2.7; 3.0 is above
    assert fills(out) == [("l", 2.8, 1.5, "MAKER")]
    out = v.on_market(std_book(3 * S, traded=[(2.7, 3), (2.8, 9), (3.0, 150)]))
    assert fills(out) == [("l", 2.8, 2.5, "MAKER")]


def test_half_cents_of_traded_volume_are_never_filled() -> None:
    v = venue_with_book()
    v.on_intent(place("l", "SELL", 2.8, 4), 1)
    out = v.on_market(std_book(2 * S, traded=[(2.8, 0.03), (3.0, 100)]))  # 0.015 one-sided -> 0.01
    assert fills(out) == [("l", 2.8, 0.01, "MAKER")]


def test_half_cent_shares_round_down_or_the_way_flumine_rounds_them() -> None:
    def lay_fills(rounding: str) -> list[float]:
        v = venue_with_book(traded_share_rounding=rounding)
        v.on_intent(place("l", "SELL", 2.8, 100), 1)  # rests at 2.8, nobody queued ahead
        got = [f[2] for f in fills(v.on_market(std_book(2, traded=[(2.8, 56.27), (3.0, 100)])))]
        return got + [f[2] for f in fills(v.on_market(std_book(3, traded=[(2.8, 144.46), (3.0, 100)])))]

    # 28.135 and then 44.095 a side: flumine's round() on binary floats goes up, then down.
    assert lay_fills("down") == [28.13, 44.09]
    assert lay_fills("flumine") == [28.14, 44.09]

    def back_fills(rounding: str) -> list[float]:
        v = venue_with_book(traded_share_rounding=rounding)
        v.on_intent(place("b", "BUY", 3.5, 8), 1)  # 20 queued ahead at 3.5
        v.on_market(std_book(2, traded=[(3.0, 100), (3.5, 30)]))  # 15 a side: 5 still ahead
        return [f[2] for f in fills(v.on_market(std_book(3, traded=[(3.0, 100), (3.5, 40.21)])))]

    # 5.105 a side past a queue of 5: 0.105 (flumine's queue is a float too: 0.11).
    assert back_fills("down") == [0.10]
    assert back_fills("flumine") == [0.11]
    with pytest.raises(ValidationError, match="traded_share_rounding"):
        BetfairSimConfig(traded_share_rounding="nearest")  # type: ignore[arg-type]


# ---------------------------------------------------------------- time in force, validation


def test_fill_or_kill_and_immediate_or_cancel() -> None:
    v = venue_with_book()
    out = v.on_intent(place("fok", "BUY", 2.9, 16, tif="FOK"), 1)  # only 15 at >= 2.9
    assert kinds(out) == ["OrderAccepted", "OrderCancelled"] and "fill or kill" in out[1].reason
    out = v.on_intent(place("fok2", "BUY", 2.9, 15, tif="FOK"), 1)
    assert fills(out) == [("fok2", 3.0, 10.0, "TAKER"), ("fok2", 2.9, 5.0, "TAKER")]
    v2 = venue_with_book()
    out = v2.on_intent(place("ioc", "BUY", 3.0, 25, tif="IOC"), 1)
    assert fills(out) == [("ioc", 3.0, 10.0, "TAKER")]
    assert isinstance(out[-1], OrderCancelled) and out[-1].reason.startswith("immediate or cancel")


@pytest.mark.parametrize(("intent", "reason"), [
    (place("x", "BUY", 3.03, 2), "invalid odds"),
    (place("x", "BUY", 3.0, 2.001), "invalid size"),
    (place("x", "BUY", 3.0, 0), "invalid size"),
    (place("x", "BUY", 3.0, 2, order_type="MARKET"), "LIMIT"),
    (place("x", "BUY", 3.0, 2, instrument="1.100"), "bad instrument"),
    (place("x", "BUY", 3.0, 2, instrument="1.999:11"), "no market data"),
    (place("x", "BUY", 3.0, 2, instrument="1.100:99"), "no runner 99"),
])
def test_invalid_orders_are_rejected_with_the_reason(intent: PlaceOrder, reason: str) -> None:
    v = venue_with_book()
    out = v.on_intent(intent, 1)
    assert kinds(out) == ["OrderRejected"] and reason in out[0].reason


def test_duplicate_client_order_id_and_min_stake() -> None:
    v = venue_with_book(min_stake=2.0)
    assert kinds(v.on_intent(place("a", "BUY", 5.0, 2), 1)) == ["OrderAccepted"]
    assert "duplicate" in v.on_intent(place("a", "BUY", 5.0, 2), 1)[0].reason
    assert "minimum stake" in v.on_intent(place("b", "BUY", 5.0, 1.5), 1)[0].reason


# ---------------------------------------------------------------- market state


def test_no_placing_while_suspended_or_closed_or_on_a_removed_runner() -> None:
    v = venue_with_book()
    v.on_market(std_book(1, status="SUSPENDED", version=2))
    out = v.on_intent(place("a", "BUY", 3.0, 2), 2)
    assert kinds(out) == ["OrderRejected"] and out[0].reason == "market suspended"
    v.on_market(std_book(3, version=3, runner_status="REMOVED"))
    assert v.on_intent(place("b", "BUY", 3.0, 2), 4)[0].reason == "runner 11 is REMOVED"


def test_suspension_with_a_new_version_lapses_unmatched_lapse_orders() -> None:
    v = venue_with_book()
    v.on_intent(place("b", "BUY", 3.5, 8), 1)
    assert v.on_market(std_book(2, status="SUSPENDED", version=1)) == []  # same version: not material
    out = v.on_market(std_book(3, status="SUSPENDED", version=2))
    assert kinds(out) == ["OrderCancelled"] and out[0].reason.startswith("lapsed at suspension")
    assert "cancel rejected: order is no longer open" in v.on_intent(
        CancelOrder("r1", "b", "betfair", INSTR, 0, 0), 4)[0].reason


def suspension(ts: int, version: int) -> MarketDefinition:
    return definition(ts, "SUSPENDED", {11: "ACTIVE", 12: "ACTIVE"})._replace(version=version)


def test_volume_published_with_a_suspension_is_matched_before_the_lapse() -> None:
    # The importer writes a stream change's MarketDefinition just before its MarketBook, both at the
    # change's publish time: the book's new traded volume traded before the suspension.
    v = venue_with_book()
    v.on_intent(place("b", "BUY", 3.5, 8), 1)  # rests behind 20 at 3.5
    assert v.on_market(suspension(2, 2)) == []  # the book of the same change may still carry volume
    out = v.on_market(std_book(2, status="SUSPENDED", version=2, traded=[(3.0, 100), (3.5, 50)]))
    # +50 at 3.5 = 25 a side: the 20 queued ahead, then 5 of ours; then the other 3 lapse.
    assert kinds(out) == ["OrderFilled", "OrderCancelled"]
    assert fills(out) == [("b", 3.5, 5.0, "MAKER")]
    assert (out[1].ts_event, out[1].reason) == (2, "lapsed at suspension (new market version)")


def test_a_definition_without_a_book_at_its_time_takes_effect_at_its_time() -> None:
    v = venue_with_book()
    v.on_intent(place("b", "BUY", 3.5, 8), 1)
    v.on_market(suspension(2, 2))
    # A later book's volume traded after the suspension: nothing of it fills; the lapse is at 2.
    out = v.on_market(std_book(3, status="SUSPENDED", version=2, traded=[(3.0, 100), (3.5, 50)]))
    assert kinds(out) == ["OrderCancelled"] and out[0].ts_event == 2
    # An intent after a lone definition finds it applied.
    v = venue_with_book()
    v.on_intent(place("b", "BUY", 3.5, 8), 1)
    v.on_market(suspension(2, 2))
    out = v.on_intent(CancelOrder("r1", "b", "betfair", INSTR, 0, 0), 3)
    assert kinds(out) == ["OrderCancelled", "OrderRejected"]
    assert (out[0].ts_event, out[1].reason) == (2, "cancel rejected: order is no longer open")


def test_in_play_turn_lapses_lapse_orders_but_not_persist_orders() -> None:
    for persistence, expected in (("LAPSE", ["OrderCancelled"]), ("PERSIST", [])):
        v = venue_with_book(persistence=persistence, lapse_on_suspension=False)
        v.on_intent(place("b", "BUY", 3.5, 8), 1)
        out = v.on_market(std_book(2, in_play=True, bet_delay=1, version=2))
        assert kinds(out) == expected
        if expected:
            assert out[0].reason == "lapsed at in-play"


def test_in_play_orders_take_effect_after_the_bet_delay_against_the_book_then() -> None:
    v = venue_with_book()
    v.on_market(std_book(1 * S, in_play=True, bet_delay=2))
    assert v.on_intent(place("a", "BUY", 2.0, 5), 1 * S) == []  # in the delay: no decision yet
    assert v.order("r1", "a").state == "PENDING"  # type: ignore[union-attr]
    assert "bet delay" in v.on_intent(CancelOrder("r1", "a", "betfair", INSTR, 0, 0), 1 * S)[0].reason
    # 2.5 s: better prices arrive; the delay ends at 3 s, the book then is this one.
    assert v.on_market(std_book(int(2.5 * S), in_play=True, bet_delay=2, back=[(3.4, 3), (3.2, 10)])) == []
    out = v.on_market(std_book(4 * S, in_play=True, bet_delay=2, back=[(2.2, 1)]))
    assert kinds(out) == ["OrderAccepted", "OrderFilled", "OrderFilled"]
    assert fills(out) == [("a", 3.4, 3.0, "TAKER"), ("a", 3.2, 2.0, "TAKER")]
    assert {e.ts_event for e in out} == {3 * S}


def test_in_play_order_rejected_when_the_market_suspends_during_the_delay() -> None:
    v = venue_with_book()
    v.on_market(std_book(1 * S, in_play=True, bet_delay=1))
    v.on_intent(place("a", "BUY", 2.0, 5), 1 * S)
    v.on_market(std_book(int(1.5 * S), in_play=True, bet_delay=1, status="SUSPENDED", version=2))
    out = v.on_market(std_book(3 * S, in_play=True, bet_delay=1, version=3))
    assert kinds(out) == ["OrderRejected"] and "during the in-play bet delay" in out[0].reason


def test_flumine_passive_orders_skip_the_delay_when_configured() -> None:
    v = venue_with_book(delay_passive_in_play=False)
    v.on_market(std_book(1 * S, in_play=True, bet_delay=1))
    assert kinds(v.on_intent(place("p", "BUY", 5.0, 2), 1 * S)) == ["OrderAccepted"]  # passive: at once
    assert v.on_intent(place("a", "BUY", 2.0, 2), 1 * S) == []  # aggressive: delayed


# ---------------------------------------------------------------- cancel, replace


def test_cancel_and_replace() -> None:
    v = venue_with_book()
    v.on_intent(place("b", "BUY", 3.5, 8), 1)
    out = v.on_intent(ReplaceOrder("r1", "b", "betfair", INSTR, 0, 0, "BUY", "LIMIT", 3.0, 4, "GTC"), 2)
    # Cancel the rest, then a new bet (new bet id) that takes 4 of the 10 at 3.0.
    assert kinds(out) == ["OrderCancelled", "OrderAccepted", "OrderFilled"]
    assert out[0].reason == "replaced" and out[0].venue_order_id != out[1].venue_order_id
    assert fills(out) == [("b", 3.0, 4.0, "TAKER")]
    v.on_intent(place("c", "SELL", 5.0, 2), 3)  # takes 2 at 3.1
    v.on_intent(place("d", "SELL", 2.5, 2), 3)  # rests
    out = v.on_intent(CancelOrder("r1", "d", "betfair", INSTR, 0, 0, "changed my mind"), 4)
    assert kinds(out) == ["OrderCancelled"] and out[0].reason == "changed my mind"
    assert "unknown order" in v.on_intent(CancelOrder("r1", "zz", "betfair", INSTR, 0, 0), 4)[0].reason


# ---------------------------------------------------------------- liquidity isolation


def test_robots_do_not_see_each_others_fills_unless_liquidity_is_shared() -> None:
    v = venue_with_book()
    assert fills(v.on_intent(place("a", "BUY", 3.0, 10, robot="r1"), 1)) == [("a", 3.0, 10.0, "TAKER")]
    assert fills(v.on_intent(place("b", "BUY", 3.0, 10, robot="r2"), 1)) == [("b", 3.0, 10.0, "TAKER")]
    # The same robot cannot take the same 10 twice while the book still shows it.
    assert fills(v.on_intent(place("c", "BUY", 3.0, 10, robot="r1"), 1)) == []
    shared = venue_with_book(shared_liquidity=True)
    shared.on_intent(place("a", "BUY", 3.0, 10, robot="r1"), 1)
    assert fills(shared.on_intent(place("b", "BUY", 3.0, 10, robot="r2"), 1)) == []


def test_taken_liquidity_is_forgotten_only_as_the_displayed_size_shrinks() -> None:
    v = venue_with_book()
    v.on_intent(place("a", "BUY", 3.0, 10), 1)
    v.on_market(std_book(2, back=[(3.0, 10)]))  # the recording still shows our 10
    assert fills(v.on_intent(place("b", "BUY", 3.0, 10, tif="IOC"), 3)) == []
    v.on_market(std_book(4, back=[(3.0, 4)]))  # shrank to 4: at most 4 of ours were still there
    v.on_market(std_book(5, back=[(3.0, 10)]))  # grew by 6: new money
    assert fills(v.on_intent(place("c", "BUY", 3.0, 10, tif="IOC"), 6)) == [("c", 3.0, 6.0, "TAKER")]


def test_one_robots_resting_orders_share_an_updates_traded_volume_in_flumine_order() -> None:
    v = venue_with_book()
    v.on_intent(place("lo", "BUY", 4.0, 10), 1)
    v.on_intent(place("hi", "BUY", 5.0, 10), 1)
    v.on_intent(place("other", "BUY", 5.0, 10, robot="r2"), 1)
    # +12 at 5.0 = 6 one-sided: r1's backs go by ascending price, so 'lo' (4.0) gets all 6.
    out = v.on_market(std_book(2, traded=[(3.0, 100), (5.0, 12)]))
    assert fills(out) == [("lo", 4.0, 6.0, "MAKER"), ("other", 5.0, 6.0, "MAKER")]


# ---------------------------------------------------------------- settlement


def definition(ts: int, status: str, results: dict[int, str]) -> MarketDefinition:
    runners = tuple(RunnerDefinition(sel, 0.0, st_, i + 1) for i, (sel, st_) in enumerate(results.items()))
    return MarketDefinition(MKT, ts, ts, "e1", "7", None, None, "WIN", "GB", None, 0, None, None, status, False, 0,
                            False, "ODDS", 1, 9, "Europe/London", runners)


def test_settlement_profit_and_commission_on_net_market_profit() -> None:
    v = venue_with_book(commission_rate=0.05)
    v.on_intent(place("a", "BUY", 2.9, 12), 1)  # 10 @ 3.0 + 2 @ 2.9 on 11
    v.on_intent(place("l", "SELL", 1.52, 10, instrument=f"{MKT}:12"), 1)  # lay 10 @ 1.52 on 12
    v.on_intent(place("b", "BUY", 3.5, 8), 1)  # rests, never matched
    v.on_intent(place("z", "BUY", 3.0, 5, robot="r2"), 1)  # r2: 5 @ 3.0 on 11
    out = v.on_market(definition(9, "CLOSED", {11: "WINNER", 12: "LOSER"}))
    assert kinds(out) == ["OrderCancelled", "BetSettled", "BetSettled", "BetSettled", "MarketSettled",
                          "MarketSettled"]
    assert out[0].reason == "lapsed at market close"
    bets = {e.client_order_id: e for e in out if isinstance(e, BetSettled)}
    assert bets["a"].profit == 10 * 2.0 + 2 * 1.9 == 23.8
    assert bets["a"].runner_status == "WINNER" and bets["a"].size_matched == 12.0
    assert bets["l"].profit == 10.0  # the lay wins the backer's stake
    markets = {e.robot: e for e in out if isinstance(e, MarketSettled)}
    assert (markets["r1"].bets, markets["r1"].profit, markets["r1"].commission, markets["r1"].net_profit) == (
        2, 33.8, 1.69, 32.11)
    assert (markets["r2"].profit, markets["r2"].commission) == (10.0, 0.5)
    # Later closing books change nothing.
    assert v.on_market(std_book(10, status="CLOSED")) == ()


def test_losing_market_pays_no_commission_and_removed_runner_voids() -> None:
    v = venue_with_book()
    v.on_intent(place("a", "BUY", 3.0, 10), 1)
    v.on_intent(place("l", "SELL", 1.52, 10, instrument=f"{MKT}:12"), 1)
    out = v.on_market(std_book(5, status="CLOSED", runner_status="REMOVED"))  # books can close a market too
    bets = {e.client_order_id: e for e in out if isinstance(e, BetSettled)}
    assert (bets["a"].runner_status, bets["a"].profit) == ("REMOVED", 0.0)
    # Runner 12 is still ACTIVE in that book: void as well (no result).
    assert bets["l"].profit == 0.0
    v2 = venue_with_book()
    v2.on_intent(place("l", "SELL", 1.52, 10, instrument=f"{MKT}:12"), 1)
    out = v2.on_market(definition(9, "CLOSED", {11: "LOSER", 12: "WINNER"}))
    settled = next(e for e in out if isinstance(e, MarketSettled))
    assert (settled.profit, settled.commission, settled.net_profit) == (-5.2, 0.0, -5.2)


def test_money_arithmetic_is_exact() -> None:
    # 2.13 at 3.35 wins 2.13 * 2.35 = 5.0055 -> 5.01 (half away from zero); as a lay it loses 5.01.
    assert bet_profit_cents(True, "WINNER", [(335, 213)]) == 501
    assert bet_profit_cents(False, "WINNER", [(335, 213)]) == -501
    assert bet_profit_cents(False, "LOSER", [(335, 213), (340, 100)]) == 313
    from fractions import Fraction
    assert commission_cents(1, Fraction(1, 20)) == 0 and commission_cents(10, Fraction(1, 20)) == 1
    assert commission_cents(3381, Fraction("0.05")) == 169
    assert is_valid_price(1.01) and is_valid_price(3.05) and is_valid_price(1000) and not is_valid_price(3.03)
    assert not is_valid_price(1.0) and not is_valid_price(1010) and is_valid_price(110)
    assert tick_offset(2.0, 1) == 2.02 and tick_offset(2.02, -1) == 2.0 and tick_offset(1000, 3) == 1000
    assert tick_offset(1.01, -1) == 1.01 and tick_offset(9.8, 2) == 10.5
    assert parse_instrument("1.2:3:-0.5") == ("1.2", 3, -0.5) and parse_instrument("x") is None


# ---------------------------------------------------------------- the property: nothing the market could not fill

PRICES = [2.0, 2.02, 2.04, 2.06, 2.08, 2.1]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[MarketBook], list[list[PlaceOrder | CancelOrder]], bool]:
    n = draw(st.integers(2, 10))
    size = st.one_of(st.just(0.0), st.integers(1, 3000).map(lambda c: c / 100))
    tv = dict.fromkeys(PRICES, 0)
    books: list[MarketBook] = []
    orders: list[list[PlaceOrder | CancelOrder]] = []
    placed: list[PlaceOrder] = []
    for i in range(n):
        cut = draw(st.integers(1, len(PRICES) - 1))
        back = [(p, draw(size)) for p in PRICES[:cut]]
        lay = [(p, draw(size)) for p in PRICES[cut:]]
        for p in PRICES:
            tv[p] += draw(st.integers(0, 2000))
        status = draw(st.sampled_from(["OPEN", "OPEN", "OPEN", "SUSPENDED"]))
        books.append(book(MKT, (i + 1) * S, [runner(SEL, back=[x for x in back if x[1]], lay=[x for x in lay if x[1]],
                                                    traded=[(p, c / 100) for p, c in tv.items() if c])],
                          status=status, version=1))
        step: list[PlaceOrder | CancelOrder] = []
        for k in range(draw(st.integers(0, 4))):
            if placed and draw(st.integers(0, 4)) == 0:  # now and then cancel an earlier order
                o = draw(st.sampled_from(placed))
                step.append(CancelOrder(o.robot, o.client_order_id, "betfair", o.instrument, 0, 0))
                continue
            new = place(f"{i}-{k}", draw(st.sampled_from(["BUY", "SELL"])), draw(st.sampled_from(PRICES)),
                        draw(st.integers(1, 4000)) / 100, robot=draw(st.sampled_from(["r1", "r2"])),
                        tif=draw(st.sampled_from(["GTC", "GTC", "IOC", "FOK"])))
            placed.append(new)
            step.append(new)
        orders.append(step)
    return books, orders, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_nothing_fills_that_the_recorded_market_could_not_have_filled(
        scenario: tuple[list[MarketBook], list[list[PlaceOrder | CancelOrder]], bool]) -> None:
    books, orders, shared = scenario
    v = BetfairSimVenue(BetfairSimConfig(shared_liquidity=shared))
    sizes = {o.client_order_id: o.size for step in orders for o in step if isinstance(o, PlaceOrder)}
    events: list[tuple[MarketBook, Event]] = []
    for b, step in zip(books, orders, strict=True):
        events.extend((b, e) for e in v.on_market(b))
        for o in step:
            events.extend((b, e) for e in v.on_intent(o, b.ts_event))
    pools = (lambda robot: "all") if shared else (lambda robot: robot)
    taker: dict[tuple[str, bool, float], int] = defaultdict(int)
    maker: dict[tuple[str, bool, float], int] = defaultdict(int)
    matched: dict[str, int] = defaultdict(int)
    closed: set[str] = set()
    for b, e in events:
        if isinstance(e, OrderCancelled):
            closed.add(e.client_order_id)
        if not isinstance(e, OrderFilled):
            continue
        assert e.client_order_id not in closed, "a fill after the order was cancelled or lapsed"
        back = e.side == "BUY"
        c = round(e.size * 100)
        matched[e.client_order_id] += c
        assert round(e.leaves_size * 100) == round(sizes[e.client_order_id] * 100) - matched[e.client_order_id]
        if e.liquidity == "TAKER":
            assert b.status == "OPEN", "no matching against a suspended market"
            ladder = b.runners[0].available_to_back if back else b.runners[0].available_to_lay
            shown = {round(p * 100): round(s_ * 100) for p, s_ in ladder}
            assert c <= shown.get(round(e.price * 100), 0), "a taker fill larger than the level shown"
            taker[(pools(e.robot), back, e.price)] += c
        else:
            maker[(pools(e.robot), back, e.price)] += c
    # Per order: never more than its size.
    for coid, c in matched.items():
        assert c <= round(sizes[coid] * 100)
    # Taker fills per pool and level: at most the level's first displayed size plus every later increase.
    for (pool, back, price), c in taker.items():
        supply, last = 0, 0
        for b in books:
            ladder = b.runners[0].available_to_back if back else b.runners[0].available_to_lay
            shown = next((round(s_ * 100) for p, s_ in ladder if p == price), 0)
            supply += max(0, shown - last)
            last = shown
        assert c <= supply, (pool, back, price, c, supply)
    # Maker fills per pool: backs at or above x use trades at or above x, at most half of the traded growth.
    final = {p: round(s_ * 100) for p, s_ in books[-1].runners[0].traded_volume}
    first = {p: round(s_ * 100) for p, s_ in books[0].runners[0].traded_volume}
    growth = {p: final.get(p, 0) - first.get(p, 0) for p in PRICES}
    for pool in {k[0] for k in maker}:
        for x in PRICES:
            backs = sum(c for (pl, bk, p), c in maker.items() if pl == pool and bk and p >= x)
            lays = sum(c for (pl, bk, p), c in maker.items() if pl == pool and not bk and p <= x)
            assert 2 * backs <= sum(g for p, g in growth.items() if p >= x)
            assert 2 * lays <= sum(g for p, g in growth.items() if p <= x)


def test_a_catalogue_snapshot_does_not_count_as_a_market_version_change() -> None:
    v = venue_with_book()
    v.on_intent(place("b", "BUY", 3.5, 8), 1)
    assert v.on_market(definition(2, "CATALOGUE", {11: "ACTIVE", 12: "ACTIVE"})) == ()
    assert v.on_market(std_book(3, status="SUSPENDED", version=1)) == []  # same version as at placement
    assert v.order("r1", "b").state == "OPEN"  # type: ignore[union-attr]


def test_a_non_runners_reduction_factor_cuts_the_odds_of_bets_matched_before_it() -> None:
    def removed(ts: int, status: str, factor: float, winner: int | None = None) -> MarketDefinition:
        md = definition(ts, status, {11: "WINNER" if winner == 11 else "ACTIVE", 12: "REMOVED"})
        runners = (md.runners[0], md.runners[1]._replace(adjustment_factor=factor, removal_date=2 * S))
        return md._replace(runners=runners)

    v = venue_with_book()
    v.on_intent(place("early", "BUY", 3.0, 10), 1 * S)  # 10 @ 3.0 before the removal at 2 s
    v.on_market(removed(int(2.5 * S), "OPEN", 20.0))
    v.on_market(std_book(3 * S, version=2))
    v.on_intent(place("late", "BUY", 2.9, 5), 3 * S)  # after it: 5 @ 2.9 (3.0 is ours already), not reduced
    out = v.on_market(removed(9 * S, "CLOSED", 20.0, winner=11))
    bets = {e.client_order_id: e for e in out if isinstance(e, BetSettled)}
    # 3.0 x (1 - 20%) = 2.40: 10 x 1.40 = 14.00; the late bet wins 5 x 1.9 = 9.50.
    assert (bets["early"].average_price_matched, bets["early"].profit) == (2.4, 14.0)
    assert (bets["late"].average_price_matched, bets["late"].profit) == (2.9, 9.5)
    # Under the 2.5% threshold nothing changes.
    v2 = venue_with_book()
    v2.on_intent(place("early", "BUY", 3.0, 10), 1 * S)
    v2.on_market(removed(int(2.5 * S), "OPEN", 2.4))
    out = v2.on_market(removed(9 * S, "CLOSED", 2.4, winner=11))
    assert next(e for e in out if isinstance(e, BetSettled)).profit == 20.0


def test_resting_orders_on_a_removed_runner_are_cancelled() -> None:
    v = venue_with_book()
    v.on_intent(place("b", "BUY", 3.5, 8), 1)
    v.on_intent(place("other", "BUY", 1.6, 8, instrument=f"{MKT}:12"), 1)  # runner 12 stays
    out = v.on_market(std_book(2, runner_status="REMOVED"))
    assert kinds(out) == ["OrderCancelled"] and (out[0].client_order_id, out[0].reason) == (
        "b", "cancelled: runner removed")
    assert v.order("r1", "other").state == "OPEN"  # type: ignore[union-attr]
