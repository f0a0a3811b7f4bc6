"""The crypto simulated venue on small hand-made sequences with hand-computed fills and fees."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from robots.positions import Ledger, money_to_decimal
from robots.sim.base import SimVenue
from robots.sim.crypto import CryptoVenue, CryptoVenueConfig
from ticktape.errors import ValidationError
from ticktape.events import (
    Bar,
    BookDelta,
    BookSnapshot,
    CancelOrder,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    PriceSize,
    Quote,
    ReplaceOrder,
    Trade,
)

INST = "BTCUSDT"


def book(ts: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> BookSnapshot:
    return BookSnapshot("sim", INST, ts, ts, ts, tuple(PriceSize(p, s) for p, s in bids),
                        tuple(PriceSize(p, s) for p, s in asks))


def delta(ts: int, bids: list[tuple[float, float]] = (), asks: list[tuple[float, float]] = ()) -> BookDelta:  # type: ignore[assignment]
    return BookDelta("sim", INST, ts, ts, ts, ts, tuple(PriceSize(p, s) for p, s in bids),
                     tuple(PriceSize(p, s) for p, s in asks))


def trade(ts: int, price: float, size: float, aggressor: str = "SELL") -> Trade:
    return Trade("sim", INST, ts, ts, price, size, aggressor, f"t{ts}")  # type: ignore[arg-type]


def place(cid: str, side: str, size: float, price: float = 0.0, order_type: str = "LIMIT", tif: str = "GTC",
          ts: int = 0) -> PlaceOrder:
    return PlaceOrder("r1", cid, "sim", INST, ts, ts, side, order_type, price, size, tif)  # type: ignore[arg-type]


def fills(events: list[Event] | tuple[Event, ...]) -> list[tuple[str, float, float, str]]:
    return [(e.side, e.price, e.size, e.liquidity) for e in events if isinstance(e, OrderFilled)]


def kinds(events: list[Event] | tuple[Event, ...]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_is_a_sim_venue_with_separate_latencies() -> None:
    v = CryptoVenue(CryptoVenueConfig(place_latency_ns=5, cancel_latency_ns=3, replace_latency_ns=4))
    venue: SimVenue = v
    assert venue.latency_ns(place("a", "BUY", 1.0)) == 5
    assert venue.latency_ns(CancelOrder("r1", "a", "sim", INST, 0, 0)) == 3
    assert venue.latency_ns(ReplaceOrder("r1", "a", "sim", INST, 0, 0, "BUY", "LIMIT", 1.0, 1.0, "GTC")) == 4


def test_market_buy_walks_the_asks_with_taker_fees() -> None:
    # The brief's example: buy 3 against asks 100x1, 101x1, 102x5 -> 1@100, 1@101, 1@102, avg 101.
    v = CryptoVenue(CryptoVenueConfig(taker_fee="0.001"))
    v.on_market(book(1, [(99.0, 2.0)], [(100.0, 1.0), (101.0, 1.0), (102.0, 5.0)]))
    out = v.on_intent(place("m1", "BUY", 3.0, order_type="MARKET"), 10)
    assert kinds(out) == ["OrderAccepted", "OrderFilled", "OrderFilled", "OrderFilled"]
    assert fills(out) == [("BUY", 100.0, 1.0, "TAKER"), ("BUY", 101.0, 1.0, "TAKER"), ("BUY", 102.0, 1.0, "TAKER")]
    fs = [e for e in out if isinstance(e, OrderFilled)]
    assert [f.fee for f in fs] == [0.1, 0.101, 0.102]  # 0.1% of 100, 101, 102
    assert [f.leaves_size for f in fs] == [2.0, 1.0, 0.0]
    assert [f.fill_id for f in fs] == ["m1-1", "m1-2", "m1-3"]
    assert all(f.ts_event == 10 and f.venue_order_id == "sim-1" for f in fs)
    led = Ledger()
    for f in fs:
        led.apply_fill(f)
    pos = led.position("r1", INST)
    assert pos.avg_price() == 101 * 10**9
    assert money_to_decimal(pos.fees) == Decimal("0.303")
    # Our consumption stays until the recorded market updates the level: the next buy starts at 102 x 4.
    out2 = v.on_intent(place("m2", "BUY", 5.0, order_type="MARKET"), 11)
    assert fills(out2) == [("BUY", 102.0, 4.0, "TAKER")]
    assert isinstance(out2[-1], OrderExpired)
    assert out2[-1].reason == "market order: 1 of 5 unfilled, no more displayed liquidity"
    v.on_market(delta(12, asks=[(100.0, 2.0)]))
    assert fills(v.on_intent(place("m3", "BUY", 1.0, order_type="MARKET"), 13)) == [("BUY", 100.0, 1.0, "TAKER")]


def test_market_sell_uses_bids_and_quote_when_more_recent() -> None:
    v = CryptoVenue(CryptoVenueConfig(taker_fee=0.0))
    v.on_market(book(1, [(99.0, 1.0), (98.0, 1.0)], [(100.0, 1.0)]))
    assert fills(v.on_intent(place("a", "SELL", 1.5, order_type="MARKET"), 2)) == [
        ("SELL", 99.0, 1.0, "TAKER"), ("SELL", 98.0, 0.5, "TAKER")]
    v.on_market(Quote("sim", INST, 3, 3, 97.5, 0.25, 98.5, 1.0))  # newer than the book
    out = v.on_intent(place("b", "SELL", 1.0, order_type="MARKET"), 4)
    assert fills(out) == [("SELL", 97.5, 0.25, "TAKER")]
    assert isinstance(out[-1], OrderExpired)


def test_market_order_falls_back_to_the_last_trade_size_once() -> None:
    v = CryptoVenue()
    rej = v.on_intent(place("a", "BUY", 1.0, order_type="MARKET"), 1)
    assert kinds(rej) == ["OrderRejected"]
    assert isinstance(rej[0], OrderRejected) and rej[0].control is None and "no liquidity" in rej[0].reason
    v.on_market(trade(2, 50.0, 0.4))
    assert fills(v.on_intent(place("b", "BUY", 1.0, order_type="MARKET"), 3)) == [("BUY", 50.0, 0.4, "TAKER")]
    assert fills(v.on_intent(place("c", "BUY", 1.0, order_type="MARKET"), 3)) == []  # that trade's size is used
    off = CryptoVenue(CryptoVenueConfig(trade_fallback=False))
    off.on_market(trade(2, 50.0, 0.4))
    assert kinds(off.on_intent(place("d", "BUY", 1.0, order_type="MARKET"), 3)) == ["OrderRejected"]


def test_crossing_limit_takes_then_rests_and_fills_as_maker() -> None:
    v = CryptoVenue(CryptoVenueConfig(maker_fee="0.0002", taker_fee="0.001"))
    v.on_market(book(1, [(99.0, 3.0)], [(100.0, 1.0), (101.0, 2.0)]))
    out = v.on_intent(place("L", "BUY", 2.0, price=100.0), 5)
    assert fills(out) == [("BUY", 100.0, 1.0, "TAKER")]
    assert kinds(out) == ["OrderAccepted", "OrderFilled"]
    (o,) = v.open_orders()
    assert o.leaves_u == 10**9 and o.queue_u == 0  # rests at 100 where no bid was displayed
    # a sell prints 0.4 at 100: all of it reaches us (nobody ahead)
    out = v.on_market(trade(6, 100.0, 0.4, "SELL"))
    assert fills(out) == [("BUY", 100.0, 0.4, "MAKER")]
    f = out[0]
    assert isinstance(f, OrderFilled) and f.fee == 0.008 and f.leaves_size == 0.6 and f.fill_id == "L-2"
    # a buy-aggressor trade cannot fill a resting buy
    assert v.on_market(trade(7, 100.0, 5.0, "BUY")) == []
    out = v.on_market(trade(8, 99.5, 3.0, "SELL"))  # through our price: fills the rest from 3.0
    assert fills(out) == [("BUY", 100.0, 0.6, "MAKER")]
    assert v.open_orders() == []


def test_limit_maker_is_refused_when_it_would_take_and_otherwise_rests_and_fills_as_maker() -> None:
    v = CryptoVenue(CryptoVenueConfig(maker_fee="0.0002", taker_fee="0.001"))
    v.on_market(book(1, [(99.0, 3.0)], [(100.0, 1.0)]))
    out = v.on_intent(place("M1", "BUY", 1.0, price=100.0, order_type="LIMIT_MAKER"), 2)
    assert kinds(out) == ["OrderRejected"] and "would immediately match and take" in out[0].reason
    assert v.open_orders() == []
    out = v.on_intent(place("M2", "BUY", 1.0, price=99.5, order_type="LIMIT_MAKER"), 3)
    assert kinds(out) == ["OrderAccepted"]
    (o,) = v.open_orders()
    assert o.order_type == "LIMIT_MAKER" and o.queue_u == 0
    # moving it across the ask is refused as Binance refuses a post-only replacement that would take
    moved = ReplaceOrder("r1", "M2", "sim", INST, 4, 4, "BUY", "LIMIT_MAKER", 100.0, 1.0, "GTC")
    out = v.on_intent(moved, 4)
    assert kinds(out) == ["OrderRejected"] and "would immediately match" in out[0].reason
    out = v.on_market(trade(5, 99.5, 2.0, "SELL"))
    assert fills(out) == [("BUY", 99.5, 1.0, "MAKER")]
    for tif in ("IOC", "FOK"):
        out = v.on_intent(place(f"M{tif}", "BUY", 1.0, price=90.0, order_type="LIMIT_MAKER", tif=tif), 6)
        assert kinds(out) == ["OrderRejected"] and "must be GTC" in out[0].reason


def test_queue_ahead_is_the_displayed_size_and_advances_with_trades() -> None:
    v = CryptoVenue()
    v.on_market(book(1, [(99.0, 3.0), (98.0, 1.0)], [(100.0, 1.0)]))
    v.on_intent(place("q", "BUY", 2.0, price=99.0), 2)
    (o,) = v.open_orders()
    assert o.queue_u == 3 * 10**9
    assert v.on_market(trade(3, 99.0, 2.0)) == []  # 1 left ahead
    assert o.queue_u == 10**9
    out = v.on_market(trade(4, 99.0, 1.5))  # 1 to the queue, 0.5 to us
    assert fills(out) == [("BUY", 99.0, 0.5, "MAKER")]
    assert o.queue_u == 0
    out = v.on_market(trade(5, 99.0, 2.0))
    assert fills(out) == [("BUY", 99.0, 1.5, "MAKER")]


def test_conservative_vs_pro_rata_queue_on_cancels() -> None:
    events: list[Event] = [book(1, [(99.0, 4.0)], [(100.0, 1.0)])]
    results = {}
    for model in ("conservative", "pro_rata"):
        v = CryptoVenue(CryptoVenueConfig(queue_model=model))
        v.on_market(events[0])
        v.on_intent(place("q", "BUY", 1.0, price=99.0), 2)
        v.on_market(delta(3, bids=[(99.0, 6.0)]))  # 2 join behind us: level 6, 4 ahead
        v.on_market(trade(4, 99.0, 1.0))  # 3 ahead
        v.on_market(delta(5, bids=[(99.0, 2.0)]))  # 6 -> 2: 1 traded, 3 cancelled
        (o,) = v.open_orders()
        results[model] = o.queue_u
    # conservative: cancels come from behind (2 behind), but the level (2) caps the queue ahead: 2
    assert results["conservative"] == 2 * 10**9
    # pro rata: ahead 3 of 6 loses 3 * 3 / 6 = 1.5 -> 1.5, under the level size 2
    assert results["pro_rata"] == 1_500_000_000


def test_unknown_queue_beyond_visible_depth_needs_a_trade_through() -> None:
    v = CryptoVenue()
    v.on_market(book(1, [(99.0, 1.0), (98.0, 1.0)], [(100.0, 1.0)]))
    v.on_intent(place("deep", "BUY", 1.0, price=97.0), 2)
    (o,) = v.open_orders()
    assert o.queue_u is None
    assert v.on_market(trade(3, 97.0, 10.0)) == []  # at our price, unknown queue: no fill
    assert fills(v.on_market(trade(4, 96.5, 0.25))) == [("BUY", 97.0, 0.25, "MAKER")]
    v.on_market(delta(5, bids=[(97.0, 2.0)]))  # the level shows up: 0 ahead now (trade-through emptied it)
    assert o.queue_u == 0


def test_each_trade_is_shared_once_between_orders() -> None:
    v = CryptoVenue()
    v.on_market(book(1, [(99.0, 1.0)], [(100.0, 1.0)]))
    v.on_intent(place("a", "BUY", 1.0, price=99.5), 2)
    v.on_intent(place("b", "BUY", 1.0, price=99.5), 3)
    out = v.on_market(trade(4, 99.0, 1.5))
    assert [(e.client_order_id, e.size) for e in out if isinstance(e, OrderFilled)] == [("a", 1.0), ("b", 0.5)]


def test_ioc_and_fok() -> None:
    v = CryptoVenue()
    v.on_market(book(1, [(99.0, 1.0)], [(100.0, 1.0), (101.0, 1.0)]))
    out = v.on_intent(place("i", "BUY", 3.0, price=100.0, tif="IOC"), 2)
    assert fills(out) == [("BUY", 100.0, 1.0, "TAKER")]
    assert isinstance(out[-1], OrderExpired) and out[-1].reason.startswith("IOC: 2 of 3 unfilled")
    out = v.on_intent(place("f", "BUY", 2.0, price=101.0, tif="FOK"), 3)  # only 101 x 1 left
    assert kinds(out) == ["OrderAccepted", "OrderExpired"]
    assert isinstance(out[-1], OrderExpired) and out[-1].reason == "FOK: only 1 of 2 available at or better than 101"
    out = v.on_intent(place("g", "BUY", 1.0, price=101.0, tif="FOK"), 4)
    assert fills(out) == [("BUY", 101.0, 1.0, "TAKER")]
    assert v.open_orders() == []


def test_stop_market_triggers_on_a_trade_through_the_stop() -> None:
    v = CryptoVenue(CryptoVenueConfig(taker_fee=0))
    v.on_market(book(1, [(99.0, 1.0)], [(100.0, 1.0)]))
    v.on_market(trade(2, 99.0, 1.0))
    out = v.on_intent(place("s", "SELL", 2.0, price=98.0, order_type="STOP_MARKET"), 3)
    assert kinds(out) == ["OrderAccepted"]
    assert v.on_market(trade(4, 98.5, 1.0)) == []
    v.on_market(book(5, [(98.0, 0.5), (97.0, 1.0)], [(98.5, 1.0)]))
    out = v.on_market(trade(6, 98.0, 0.1))
    assert fills(out) == [("SELL", 98.0, 0.5, "TAKER"), ("SELL", 97.0, 1.0, "TAKER")]
    assert isinstance(out[-1], OrderExpired) and out[-1].ts_event == 6
    assert out[-1].reason == "market order: 0.5 of 2 unfilled, no more displayed liquidity"


def test_cancel_and_replace() -> None:
    v = CryptoVenue()
    v.on_market(book(1, [(99.0, 2.0)], [(101.0, 1.0)]))
    v.on_intent(place("a", "BUY", 3.0, price=99.0), 2)
    (o,) = v.open_orders()
    first_priority = o.priority
    # shrink at the same price: keeps its place
    out = v.on_intent(ReplaceOrder("r1", "a", "sim", INST, 3, 3, "BUY", "LIMIT", 99.0, 2.0, "GTC"), 3)
    assert kinds(out) == ["OrderAccepted"]
    assert o.priority == first_priority and o.queue_u == 2 * 10**9 and o.leaves_u == 2 * 10**9
    # grow: back of the queue
    v.on_market(delta(4, bids=[(99.0, 5.0)]))
    v.on_intent(ReplaceOrder("r1", "a", "sim", INST, 5, 5, "BUY", "LIMIT", 99.0, 4.0, "GTC"), 5)
    assert o.priority > first_priority and o.queue_u == 5 * 10**9
    # move across the spread: takes 101 x 1 as taker, the rest rests at 101
    out = v.on_intent(ReplaceOrder("r1", "a", "sim", INST, 6, 6, "BUY", "LIMIT", 101.0, 4.0, "GTC"), 6)
    assert fills(out) == [("BUY", 101.0, 1.0, "TAKER")]
    rej = v.on_intent(ReplaceOrder("r1", "a", "sim", INST, 7, 7, "SELL", "LIMIT", 101.0, 4.0, "GTC"), 7)
    assert isinstance(rej[0], OrderRejected) and "cannot change side" in rej[0].reason
    out = v.on_intent(ReplaceOrder("r1", "a", "sim", INST, 8, 8, "BUY", "LIMIT", 101.0, 1.0, "GTC"), 8)
    assert isinstance(out[0], OrderCancelled) and "at or below the filled 1" in out[0].reason
    rej = v.on_intent(CancelOrder("r1", "a", "sim", INST, 9, 9), 9)
    assert isinstance(rej[0], OrderRejected) and rej[0].reason == "cancel: order a is already closed (filled, " \
        "cancelled or expired)"
    v.on_intent(place("b", "SELL", 1.0, price=105.0), 10)
    out = v.on_intent(CancelOrder("r1", "b", "sim", INST, 11, 11, "flatten"), 11)
    assert isinstance(out[0], OrderCancelled) and out[0].reason == "flatten" and out[0].ts_event == 11
    assert v.open_orders() == []


def test_venue_rejections() -> None:
    v = CryptoVenue()
    v.on_market(book(1, [(99.0, 2.0)], [(101.0, 1.0)]))
    assert isinstance(v.on_intent(place("a", "BUY", 1.0, price=99.0), 2)[0], OrderAccepted)
    cases = {
        "a": place("a", "BUY", 1.0, price=99.0),
        "z": place("z", "BUY", 0.0, price=99.0),
        "p": place("p", "BUY", 1.0, price=-1.0),
        "d": place("d", "BUY", 1.0, price=99.0, tif="DAY"),
    }
    reasons = {}
    for cid, intent in cases.items():
        (rej,) = v.on_intent(intent, 3)
        assert isinstance(rej, OrderRejected) and rej.control is None
        reasons[cid] = rej.reason
    assert reasons["a"] == "duplicate client order id a"
    assert reasons["z"].startswith("size must be positive")
    assert reasons["p"] == "LIMIT price must be positive, got -1.0"
    assert "DAY is not supported" in reasons["d"]


def test_config_from_mapping() -> None:
    cfg = CryptoVenueConfig.from_mapping({"maker_fee": "-0.0001", "taker_fee": 0.00075, "place_latency_ns": 1000})
    assert cfg.maker_rate == Fraction(-1, 10_000)
    assert str(cfg.taker_rate) == "3/4000"
    # the manifest stores the config's fields as text; they must rebuild the same venue
    assert CryptoVenueConfig.from_mapping({"maker_fee": str(cfg.maker_rate), "taker_fee": str(cfg.taker_rate)}) \
        == CryptoVenueConfig(maker_fee=cfg.maker_rate, taker_fee=cfg.taker_rate)
    with pytest.raises(ValidationError, match="maker_fee"):
        CryptoVenueConfig.from_mapping({"maker_fee": "ten bp"})
    with pytest.raises(ValidationError, match="queue_model"):
        CryptoVenueConfig.from_mapping({"queue_model": "optimistic"})
    with pytest.raises(ValidationError, match="unknown venue setting"):
        CryptoVenueConfig.from_mapping({"latency": 1})
    with pytest.raises(ValidationError, match="cancel_latency_ns"):
        CryptoVenueConfig(cancel_latency_ns=-1)


def test_same_inputs_same_outputs() -> None:
    def run() -> list[Event]:
        v = CryptoVenue()
        out: list[Event] = []
        out += v.on_market(book(1, [(99.0, 2.0)], [(101.0, 1.0)]))
        out += v.on_intent(place("a", "BUY", 3.0, price=99.0), 2)
        out += v.on_market(trade(3, 98.0, 5.0))
        out += v.on_intent(place("b", "BUY", 1.0, order_type="MARKET"), 4)
        return out

    assert run() == run()
    assert len(run()) == 4


def bar(ts: int, o: float, h: float, lo: float, c: float, v: float) -> Bar:
    return Bar("sim", INST, ts, ts, "1m", o, h, lo, c, v)


def test_bars_market_orders_at_the_close_and_resting_orders_from_the_range() -> None:
    v = CryptoVenue(CryptoVenueConfig(taker_fee=0, maker_fee=0))
    assert v.on_market(bar(1, 10.0, 11.0, 9.0, 10.5, 3.0)) == ()
    out = v.on_intent(place("m", "BUY", 2.0, order_type="MARKET"), 2)
    assert fills(out) == [("BUY", 10.5, 2.0, "TAKER")]
    out = v.on_intent(place("m2", "BUY", 2.0, order_type="MARKET"), 2)  # 1 of the bar's 3 left
    assert fills(out) == [("BUY", 10.5, 1.0, "TAKER")] and isinstance(out[-1], OrderExpired)
    v.on_intent(place("b", "BUY", 2.0, price=9.5), 3)
    v.on_intent(place("s", "SELL", 2.0, price=12.0), 3)
    v.on_intent(place("st", "SELL", 1.0, price=9.2, order_type="STOP_MARKET"), 3)
    # low 9.5 touches the bid without going through: unknown queue, no fill; high 11.9 < 12
    assert list(v.on_market(bar(4, 10.0, 11.9, 9.5, 10.0, 5.0))) == []
    # low 9.0 goes through 9.5 and 9.2: the buy fills 2 of the volume 2.5, the sell at 12 does not;
    # the stop triggers and sells 0.5 (what is left of the bar) at the close 9.1
    out = v.on_market(bar(5, 10.0, 11.0, 9.0, 9.1, 2.5))
    assert fills(out) == [("BUY", 9.5, 2.0, "MAKER"), ("SELL", 9.1, 0.5, "TAKER")]
    assert isinstance(out[-1], OrderExpired) and out[-1].client_order_id == "st"
    out = v.on_market(bar(6, 11.0, 12.5, 11.0, 12.0, 0.5))
    assert fills(out) == [("SELL", 12.0, 0.5, "MAKER")]


def test_a_trade_used_by_resting_orders_is_not_used_again_by_a_market_order() -> None:
    v = CryptoVenue()
    v.on_market(trade(1, 100.0, 1.0))
    v.on_intent(place("b", "BUY", 0.75, price=101.0), 2)  # crosses the last trade: takes 0.75 of its 1.0
    (o,) = [e for e in v.on_intent(place("b2", "BUY", 1.0, price=101.0), 2) if isinstance(e, OrderFilled)]
    assert o.size == 0.25
    out = v.on_market(trade(3, 100.0, 1.0, "SELL"))  # through 101: b2's 0.75 left fills from it
    assert fills(out) == [("BUY", 101.0, 0.75, "MAKER")]
    out = v.on_intent(place("m", "BUY", 1.0, order_type="MARKET"), 3)
    assert fills(out) == [("BUY", 100.0, 0.25, "TAKER")]


def test_unlimited_trade_fallback_is_an_explicit_optimistic_switch() -> None:
    v = CryptoVenue(CryptoVenueConfig(unlimited_trade_fallback=True, taker_fee=0))
    v.on_market(trade(1, 50.0, 0.01))
    assert fills(v.on_intent(place("a", "BUY", 3.0, order_type="MARKET"), 2)) == [("BUY", 50.0, 3.0, "TAKER")]
    assert fills(v.on_intent(place("b", "SELL", 2.0, order_type="MARKET", tif="FOK"), 2)) == [
        ("SELL", 50.0, 2.0, "TAKER")]
    v.on_market(book(3, [(49.0, 0.5)], [(51.0, 0.5)]))  # with a book the book rules again
    out = v.on_intent(place("c", "BUY", 3.0, order_type="MARKET"), 4)
    assert fills(out) == [("BUY", 51.0, 0.5, "TAKER")] and isinstance(out[-1], OrderExpired)
    assert CryptoVenueConfig.from_mapping({"unlimited_trade_fallback": True}).unlimited_trade_fallback
