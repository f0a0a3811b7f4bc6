"""ema_cross on hand-made price sequences with hand-computed EMAs."""

from __future__ import annotations

import pytest

from robots.api import Context, RobotError
from robots.builtin.ema_cross import EmaCross, EmaCrossParams
from robots.registry import get_robot
from robots.runner import Runner
from robots.sim.naive import NaiveVenue
from ticktape.events import Bar, OrderFilled, OrderRejected, PlaceOrder, Trade

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def tr(i: int, price: float) -> Trade:
    return Trade("sim", "BTCUSDT", T0 + i * S, T0 + i * S, price, 0.5, "BUY", str(i))


def robot() -> EmaCross:
    # alpha fast = 2/3, alpha slow = 2/5 = 0.4; no signal before 4 prices
    return EmaCross(EmaCrossParams(fast=2, slow=4, size=2.0))


def test_emas_by_hand_and_cross_up_buys_at_market() -> None:
    bot = robot()
    state = bot.init_state()
    ctx = Context(bot.robot_id, bot.venue)
    for i in range(4):
        state, out = bot.step(state, tr(i, 10.0), seq=i, ctx=ctx)
        assert out == []
    state, out = bot.step(state, tr(4, 13.0), seq=4, ctx=ctx)
    assert state.fast == pytest.approx(12.0)  # 10 + 2/3 * 3
    assert state.slow == pytest.approx(11.2)  # 10 + 0.4 * 3
    assert out == [PlaceOrder("ema_cross", "ema_cross-4-0", "sim", "BTCUSDT", T0 + 4 * S, T0 + 4 * S, "BUY",
                              "MARKET", 0.0, 2.0, "GTC", "ema cross up")]
    assert state.pending == "ema_cross-4-0"
    # no second order while the first is in flight, even on another cross up
    state, out = bot.step(state, tr(5, 14.0), seq=5, ctx=ctx)
    assert out == []


def test_cross_down_sells_the_filled_position_and_nothing_when_flat() -> None:
    bot = robot()
    state = bot.init_state()
    for i, p in enumerate([10.0, 10.0, 10.0, 10.0, 13.0]):
        state, _ = bot.step(state, tr(i, p), seq=i)
    fill = OrderFilled("ema_cross", "ema_cross-4-0", "v1", "sim", "BTCUSDT", T0 + 5 * S, T0 + 5 * S, "f1", "BUY",
                       13.0, 2.0, 0.0, "TAKER", 0.0)
    state, _ = bot.step(state, fill, seq=5)
    assert state.position == 2.0 and state.pending == ""
    state, out = bot.step(state, tr(6, 9.0), seq=6)
    # fast 12 + 2/3 * (9 - 12) = 10; slow 11.2 + 0.4 * (9 - 11.2) = 10.32 -> cross down
    assert state.fast == pytest.approx(10.0) and state.slow == pytest.approx(10.32)
    assert [(o.side, o.size, o.client_order_id) for o in out] == [("SELL", 2.0, "ema_cross-6-0")]  # type: ignore[union-attr]
    # a rejected sell leaves the position and frees the robot to try again on the next cross
    rej = OrderRejected("ema_cross", "ema_cross-6-0", None, "sim", "BTCUSDT", T0 + 7 * S, T0 + 7 * S, "no liquidity")
    state, _ = bot.step(state, rej, seq=7)
    assert state.pending == "" and state.position == 2.0

    flat = robot()
    st = flat.init_state()
    outs = []
    for i, p in enumerate([10.0, 10.0, 10.0, 10.0, 9.0, 8.0]):
        st, out = flat.step(st, tr(i, p), seq=i)
        outs += out
    assert outs == []  # a cross down while flat does nothing (long-only)


def test_warmup_suppresses_early_signals() -> None:
    bot = robot()
    state = bot.init_state()
    outs = []
    for i, p in enumerate([10.0, 13.0, 13.0]):  # crosses up at the 2nd price, before 4 are seen
        state, out = bot.step(state, tr(i, p), seq=i)
        outs += out
    assert outs == [] and state.above == 1


def test_full_loop_with_venue_on_bars() -> None:
    closes = [10.0, 10.0, 10.0, 10.0, 13.0, 14.0, 9.0, 8.0]
    bars = [Bar("sim", "BTCUSDT", T0 + i * S, T0 + i * S, "1s", c, c, c, c, 1.0) for i, c in enumerate(closes)]
    runner = Runner(robot(), venue=NaiveVenue(latency=S // 2))
    stats = runner.run(bars)
    # buy 2 decided at bar 4, filled at the last price at arrival (bar 4's close, 13);
    # sell 2 decided at bar 6 (fast 13.33 -> 10.44, slow 12.32 -> 10.99), filled at 9
    pos = runner.ledger.positions()[0]
    assert stats.intents == 2 and pos["quantity"] == 0.0
    assert runner.ledger.summary()["pnl_exact"] == "-8"  # (9 - 13) * 2


def test_params_are_validated() -> None:
    with pytest.raises(RobotError, match="fast < slow"):
        get_robot("ema_cross", {"fast": "50", "slow": "10"})


def test_on_the_crypto_venue_market_orders_take_the_quote() -> None:
    from robots.venues import make_venue
    from ticktape.events import Quote

    prices = [10.0, 10.0, 10.0, 10.0, 13.0, 14.0, 9.0, 8.0]
    events: list[object] = []
    for i, p in enumerate(prices):  # the quote first, then the trade, at the same time
        events.append(Quote("sim", "BTCUSDT", T0 + i * S, T0 + i * S, p - 0.1, 10.0, p + 0.1, 10.0))
        events.append(tr(i, p))
    fills: list[OrderFilled] = []
    runner = Runner(robot(), venue=make_venue("crypto"),
                    on_order_event=lambda e: fills.append(e) if isinstance(e, OrderFilled) else None)
    runner.run(events)  # type: ignore[arg-type]
    # cross up at trade 4: buy 2 at the ask 13.1; cross down at trade 6: sell 2 at the bid 8.9; taker fee 0.1%
    assert [(f.side, f.price, f.size, f.liquidity, f.fee) for f in fills] == [
        ("BUY", 13.1, 2.0, "TAKER", 0.0262), ("SELL", 8.9, 2.0, "TAKER", 0.0178)]
    assert runner.ledger.summary()["pnl_exact"] == "-8.444"  # (8.9 - 13.1) * 2 - 0.044
