"""market_maker on hand-made quote sequences: targets, requotes, inventory limits, partial fills."""

from __future__ import annotations

from robots.builtin.market_maker import MarketMaker, MarketMakerParams
from robots.runner import Runner
from robots.sim.naive import NaiveVenue
from ticktape.events import CancelOrder, OrderAccepted, OrderCancelled, OrderFilled, PlaceOrder, Quote, ReplaceOrder

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def q(i: int, bid: float, ask: float) -> Quote:
    return Quote("sim", "X", T0 + i * MS, T0 + i * MS, bid, 1.0, ask, 1.0)


def mm(**kw: object) -> MarketMaker:
    base: dict[str, object] = {"half_spread_bps": 10.0, "tick": 0.1, "max_inventory": 1.0, "size": 1.0}
    base.update(kw)
    return MarketMaker(MarketMakerParams.parse(base))


def test_targets_round_away_from_the_mid_on_the_tick_grid() -> None:
    bot = mm()
    assert bot.targets(100.0) == (99.9, 100.1)  # 100 * (1 -/+ 0.001)
    assert bot.targets(99.8) == (99.7, 99.9)  # 99.7002 down to 99.7, 99.8998 up to 99.9


def test_quotes_requotes_and_stops_at_the_inventory_limit() -> None:
    events = [q(0, 99.9, 100.1), q(1, 99.7, 99.9), q(2, 99.7, 99.9), q(3, 100.0, 100.2)]
    runner = Runner(mm(), venue=NaiveVenue())
    steps = list(runner.steps(events))
    intents = [(s.seq, type(i).__name__, i.side, i.price) for s in steps for i in s.intents]  # type: ignore[union-attr]
    assert intents == [
        (0, "PlaceOrder", "BUY", 99.9), (0, "PlaceOrder", "SELL", 100.1),  # mid 100
        # the naive venue fills the bid when the mid (99.8) reaches it; inventory 1 = the limit, so
        # no new bid; the ask moves to 99.9 (target for mid 99.8)
        (4, "ReplaceOrder", "SELL", 99.9),
        # mid 100.1 fills the ask at 99.9: flat again, both sides quoted around 100.1
        (8, "PlaceOrder", "BUY", 99.9), (8, "PlaceOrder", "SELL", 100.3),
    ]
    assert runner.state.inventory == 0.0
    assert runner.state.filled_buy == 1.0 and runner.state.filled_sell == 1.0
    assert runner.ledger.summary()["pnl_exact"] == "0"  # bought 99.9, sold 99.9


def test_cancels_the_side_a_partial_fill_pushes_past_the_limit() -> None:
    bot = mm(max_inventory=1.5)
    s = bot.init_state()
    s, out = bot.step(s, q(0, 99.9, 100.1), seq=0)
    assert [type(o) for o in out] == [PlaceOrder, PlaceOrder]
    bid_id, ask_id = out[0].client_order_id, out[1].client_order_id
    for coid in (bid_id, ask_id):
        s, _ = bot.step(s, OrderAccepted("market_maker", coid, None, "sim", "X", T0, T0), seq=1)
    fill = OrderFilled("market_maker", bid_id, None, "sim", "X", T0 + MS, T0 + MS, "f1", "BUY", 99.9, 0.6, 0.0,
                       "MAKER", 0.4)
    s, _ = bot.step(s, fill, seq=2)
    assert s.inventory == 0.6 and s.bid.live and s.bid.size == 0.4
    # inventory 0.6 + size 1 > 1.5: the bid side is no longer allowed -> cancel; the ask stays
    s, out = bot.step(s, q(3, 99.9, 100.1), seq=3)
    assert out == [CancelOrder("market_maker", bid_id, "sim", "X", T0 + 3 * MS, T0 + 3 * MS, "inventory limit")]
    s, out = bot.step(s, q(4, 99.9, 100.1), seq=4)
    assert out == []  # waits for the cancel's answer
    s, _ = bot.step(s, OrderCancelled("market_maker", bid_id, None, "sim", "X", T0 + 5 * MS, T0 + 5 * MS), seq=5)
    assert not s.bid.live and s.bid.coid == ""
    # the mid moves 2 ticks: only the ask is requoted
    s, out = bot.step(s, q(6, 100.1, 100.3), seq=6)
    assert [(type(o), o.price) for o in out] == [(ReplaceOrder, 100.4)]  # type: ignore[union-attr]


def test_state_round_trips_through_json() -> None:
    bot = mm()
    s = bot.init_state()
    s, _ = bot.step(s, q(0, 99.9, 100.1), seq=0)
    text = bot.state_to_json(s)
    assert bot.state_from_json(text) == s


def test_on_the_crypto_venue_a_partial_maker_fill_then_the_inventory_limit() -> None:
    from robots.venues import make_venue
    from ticktape.events import Trade

    events = [q(0, 99.9, 100.1),  # displayed: 1 at 99.9, 1 at 100.1 -> our orders queue behind them
              Trade("sim", "X", T0 + MS, T0 + MS, 99.9, 1.5, "SELL", "t1"),  # 1 clears the queue, 0.5 fills us
              q(2, 99.9, 100.1)]
    answers: list[object] = []
    runner = Runner(mm(), venue=make_venue("crypto"), on_order_event=answers.append)
    steps = list(runner.steps(events))
    intents = [i for s in steps for i in s.intents]
    assert [(type(i).__name__, getattr(i, "side", ""), getattr(i, "price", None)) for i in intents] == [
        ("PlaceOrder", "BUY", 99.9), ("PlaceOrder", "SELL", 100.1), ("CancelOrder", "", None)]
    fills = [a for a in answers if isinstance(a, OrderFilled)]
    assert [(f.side, f.price, f.size, f.leaves_size, f.liquidity) for f in fills] == [("BUY", 99.9, 0.5, 0.5, "MAKER")]
    assert fills[0].fee == 0.04995  # 0.1% maker fee on 49.95
    assert runner.state.inventory == 0.5 and not runner.state.bid.live and runner.state.ask.live
    assert any(isinstance(a, OrderCancelled) and a.client_order_id == intents[0].client_order_id for a in answers)
