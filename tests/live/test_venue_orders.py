"""The gateway's pure view of its orders at a real venue: reports in any number and order, each fact once."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from robots.live.exchange import Fill, OrderReport, report_event, report_from_event
from robots.live.venue_orders import VenueOrders
from ticktape.events import (
    BetSettled,
    CancelOrder,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    ReplaceOrder,
)

T = 1_700_000_000_000_000_000


def _place(coid: str = "abcdefgh-1-0", size: float = 3.0, venue: str = "binance") -> PlaceOrder:
    return PlaceOrder("bot", coid, venue, "BTCUSDT", T, T, "BUY", "LIMIT", 100.0, size, "GTC")


def _fill(i: int, size: float = 1.0) -> Fill:
    return Fill(f"t{i}", 100.0 - i, size, 0.01, "MAKER", T + i)


def _reports() -> list[OrderReport]:
    """One order's life at a venue with fill ids: accepted, three fills, cancelled (all reported incrementally)."""
    coid = "abcdefgh-1-0"
    return [
        OrderReport(coid, "9", "BTCUSDT", "open", T, "BUY", source="rest"),
        OrderReport(coid, "9", "BTCUSDT", "open", T + 1, "BUY", (_fill(1),), source="stream"),
        OrderReport(coid, "9", "BTCUSDT", "open", T + 2, "BUY", (_fill(1), _fill(2, 0.5)), source="query"),
        OrderReport(coid, "9", "BTCUSDT", "cancelled", T + 3, "BUY", (_fill(1), _fill(2, 0.5)), reason="by request",
                    source="stream"),
    ]


def _fold(reports: list[OrderReport]) -> list[Event]:
    orders = VenueOrders("binance")
    orders.place(_place(), "run-1", "abcdefgh")
    out: list[Event] = []
    for r in reports:
        run, events = orders.apply(r, T + 100)
        assert run == "run-1"
        out.extend(events)
    return out


def test_each_fact_once_in_the_order_of_the_life() -> None:
    events = _fold(_reports())
    assert [type(e).__name__ for e in events] == ["OrderAccepted", "OrderFilled", "OrderFilled", "OrderCancelled"]
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert [(f.fill_id, f.size, f.leaves_size) for f in fills] == [("t1", 1.0, 2.0), ("t2", 0.5, 1.5)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_duplicates_and_reordering_never_add_a_fill_twice(picks: list[int], rng: random.Random) -> None:
    reports = _reports()
    replayed = [reports[i] for i in picks] + reports  # any prefix of noise, then everything
    rng.shuffle(replayed)
    events = _fold(replayed)
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert sorted(f.fill_id for f in fills) == ["t1", "t2"]
    assert sum(f.size for f in fills) == 1.5
    assert sum(isinstance(e, OrderAccepted) for e in events) == 1
    assert sum(isinstance(e, OrderCancelled) for e in events) <= 1


def test_cumulative_matched_sizes_become_one_fill_per_increase() -> None:
    orders = VenueOrders("betfair")
    coid = "abcdefgh-2-0"
    orders.place(_place(coid, size=10.0, venue="betfair"), "run-1", "abcdefgh")
    seen: list[Event] = []
    for matched, avp in ((0.0, None), (4.0, 2.5), (4.0, 2.5), (2.0, 2.5), (10.0, 2.3)):
        seen.extend(orders.apply(OrderReport(coid, "B1", "1.2:3", "open", T, "BUY", matched=matched, avg_price=avp,
                                             source="stream"), T)[1])
    fills = [e for e in seen if isinstance(e, OrderFilled)]
    assert [(f.size, f.price) for f in fills] == [(4.0, 2.5), (6.0, round((10 * 2.3 - 4 * 2.5) / 6, 6))]
    assert fills[-1].leaves_size == 0.0


def test_a_replacement_keeps_the_order_open_and_counts_both_venue_orders() -> None:
    orders = VenueOrders("betfair")
    coid = "abcdefgh-3-0"
    place = _place(coid, size=10.0, venue="betfair")
    orders.place(place, "run-1", "abcdefgh")
    events = orders.apply(OrderReport(coid, "B1", "1.2:3", "open", T, matched=2.0, avg_price=3.0, source="rest"), T)[1]
    command = orders.replace(ReplaceOrder("bot", coid, "betfair", "1.2:3", T, T, "BUY", "LIMIT", 3.5, 8.0, "GTC"))
    assert not isinstance(command, OrderRejected) and command.version == 1 and command.order.price == 3.5
    # the old bet cancelled by the replacement, then the new bet: the order stays open
    events += orders.apply(OrderReport(coid, "B1", "1.2:3", "cancelled", T + 1, matched=2.0, avg_price=3.0), T)[1]
    events += orders.apply(OrderReport(coid, "B2", "1.2:3", "open", T + 2, matched=1.0, avg_price=3.5), T)[1]
    assert [type(e).__name__ for e in events] == ["OrderAccepted", "OrderFilled", "OrderAccepted", "OrderFilled"]
    assert not orders.orders[coid].done and orders.orders[coid].acked_version == 1
    events = orders.apply(OrderReport(coid, "B2", "1.2:3", "cancelled", T + 3, matched=1.0, avg_price=3.5), T)[1]
    assert [type(e) for e in events] == [OrderCancelled] and orders.orders[coid].done


def test_a_venue_rejection_and_orders_no_intent_explains() -> None:
    orders = VenueOrders("binance")
    orders.place(_place(), "run-1", "abcdefgh")
    run, events = orders.apply(OrderReport("abcdefgh-1-0", None, "BTCUSDT", "rejected", T, reason="-2010 balance"), T)
    assert run == "run-1" and isinstance(events[0], OrderRejected) and "-2010" in events[0].reason
    assert orders.apply(OrderReport("zzzzzzzz-1-0", "5", "BTCUSDT", "open", T), T) == (None, [])
    assert orders.apply(OrderReport("web_7hG2kq", "6", "BTCUSDT", "open", T), T) == (None, [])
    assert list(orders.strangers) == ["zzzzzzzz-1-0"]  # a ticktape id no intent explains; not an order by hand
    assert orders.pending() == []  # the rejected order is done: nothing to verify


def test_pending_after_a_restart_verifies_every_open_order_and_repeats_asked_cancels() -> None:
    orders = VenueOrders("binance")
    orders.place(_place("abcdefgh-1-0"), "run-1", "abcdefgh")
    orders.place(_place("abcdefgh-2-0"), "run-1", "abcdefgh")
    orders.apply(OrderReport("abcdefgh-2-0", "7", "BTCUSDT", "open", T), T)
    cancel = orders.cancel(CancelOrder("bot", "abcdefgh-2-0", "binance", "BTCUSDT", T, T))
    assert not isinstance(cancel, OrderRejected)
    assert [(c.kind, c.order.client_order_id) for c in orders.pending()] == [
        ("verify", "abcdefgh-1-0"), ("verify", "abcdefgh-2-0"), ("cancel", "abcdefgh-2-0")]
    gone = orders.cancel(CancelOrder("bot", "nope", "binance", "BTCUSDT", T, T))
    assert isinstance(gone, OrderRejected) and "no open order" in gone.reason


def test_reports_round_trip_through_their_journal_form() -> None:
    for report in _reports():
        assert report_from_event(report_event(report, "binance", T)) == report


def test_a_refused_replacement_leaves_the_order_as_the_venue_has_it() -> None:
    orders = VenueOrders("binance")
    coid = "abcdefgh-4-0"
    orders.place(_place(coid), "run-1", "abcdefgh")
    orders.apply(OrderReport(coid, "9", "BTCUSDT", "open", T), T)
    command = orders.replace(ReplaceOrder("bot", coid, "binance", "BTCUSDT", T, T, "BUY", "LIMIT", 99.5, 3.0, "GTC"))
    assert not isinstance(command, OrderRejected) and command.version == 1
    refused = orders.apply(OrderReport(coid, "9", "BTCUSDT", "rejected", T + 1, reason="-1013 PRICE_FILTER"), T)[1]
    assert [type(e) for e in refused] == [OrderRejected] and not orders.orders[coid].done
    cancel = orders.cancel(CancelOrder("bot", coid, "binance", "BTCUSDT", T, T))
    assert not isinstance(cancel, OrderRejected)
    assert (cancel.version, cancel.order.price) == (0, 100.0)  # the venue's order: version 0, its own price
    # a cancel-replace whose new order failed after its cancel worked: rejected, then cancelled ends it
    orders.replace(ReplaceOrder("bot", coid, "binance", "BTCUSDT", T, T, "BUY", "LIMIT", 99.0, 3.0, "GTC"))
    events = orders.apply(OrderReport(coid, "9", "BTCUSDT", "rejected", T + 2, reason="-2010"), T)[1]
    events += orders.apply(OrderReport(coid, "9", "BTCUSDT", "cancelled", T + 3), T)[1]
    assert [type(e) for e in events] == [OrderRejected, OrderCancelled] and orders.orders[coid].done


def test_a_settled_order_is_settled_once_with_the_venues_profit() -> None:
    orders = VenueOrders("betfair")
    coid = "abcdefgh-5-0"
    orders.place(_place(coid, size=4.0, venue="betfair")._replace(instrument="1.2:3"), "run-1", "abcdefgh")
    orders.apply(OrderReport(coid, "B1", "1.2:3", "filled", T, matched=4.0, avg_price=2.5, source="stream"), T)
    assert [o.order.client_order_id for o in orders.unsettled()] == [coid]
    settled = OrderReport(coid, "B1", "1.2:3", "filled", T + 9, matched=4.0, avg_price=2.5, profit=6.0,
                          runner_status="WINNER", source="query")
    events = orders.apply(settled, T)[1] + orders.apply(settled, T)[1]
    assert [(type(e), e.profit, e.size_matched, e.average_price_matched, e.market_id, e.selection_id)
            for e in events] == [(BetSettled, 6.0, 4.0, 2.5, "1.2", 3)]  # type: ignore[union-attr]
    assert orders.unsettled() == []
