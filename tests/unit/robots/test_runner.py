"""The runner's ordering rules on small hand-made sequences (latency, timers, controls, filters)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from robots.api import Context, Params, Robot, Subscription
from robots.runner import Runner
from robots.sim.base import Intent
from robots.sim.naive import NaiveVenue
from ticktape.events import Event, OrderFilled, OrderRejected, Timer, Trade

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def trade(i: int, price: float, instrument: str = "X", ts: int | None = None) -> Trade:
    t = T0 + i * MS if ts is None else ts
    return Trade("sim", instrument, t, t, price, 1.0, "BUY", str(i))


@dataclass
class LogState:
    seen: list[str] = field(default_factory=list)
    bought: bool = False


class BuyOnceRobot(Robot[Params, LogState]):
    """Buys 2 at market on the first trade, sets a timer 3 ms later, logs everything it sees."""

    name = "buy_once"

    def subscriptions(self) -> Subscription:
        return Subscription(topics=("t",))

    def init_state(self) -> LogState:
        return LogState()

    def on_trade(self, state: LogState, event: Trade, ctx: Context) -> None:
        state.seen.append(f"trade@{(event.ts_event - T0) // MS}")
        if not state.bought:
            state.bought = True
            ctx.buy(event.instrument, 2.0)
            ctx.set_timer("wake", event.ts_event + 3 * MS, "p")

    def on_order_update(self, state: LogState, event: Event, ctx: Context) -> None:
        state.seen.append(f"{type(event).__name__}@{(event.ts_event - T0) // MS}")

    def on_timer(self, state: LogState, event: Timer, ctx: Context) -> None:
        state.seen.append(f"timer:{event.name}:{event.payload}@{(event.ts_event - T0) // MS}")


def test_intent_arrives_after_latency_and_fills_at_the_last_price_at_arrival() -> None:
    prices = [100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 107.0]
    events = [trade(i, p) for i, p in enumerate(prices)]
    robot = BuyOnceRobot()
    runner = Runner(robot, venue=NaiveVenue(latency=2 * MS))
    stats = runner.run(events)
    # placed at t=0, arrives at t=2 after the venue saw the trade at t=2 (price 102), which the
    # robot sees before the answers; the timer (t=3) comes after the trade at t=3
    assert runner.state.seen == ["trade@0", "trade@1", "trade@2", "OrderAccepted@2", "OrderFilled@2", "trade@3",
                                 "timer:wake:p@3", "trade@4", "trade@5", "trade@6", "trade@7"]
    assert stats.events == 8 and stats.intents == 1 and stats.order_events == 2
    pos = runner.ledger.positions()[0]
    assert pos["quantity"] == 2.0 and pos["avg_price"] == 102.0
    # marked at the last trade (107): (107 - 102) * 2
    assert runner.ledger.summary()["pnl_exact"] == "10"


def test_zero_latency_arrives_after_the_current_input() -> None:
    events = [trade(0, 100.0), trade(1, 101.0)]
    runner = Runner(BuyOnceRobot(), venue=NaiveVenue(latency=0))
    runner.run(events)
    assert runner.state.seen[:4] == ["trade@0", "OrderAccepted@0", "OrderFilled@0", "trade@1"]
    assert runner.ledger.positions()[0]["avg_price"] == 100.0


def test_equal_times_market_first_then_arrival() -> None:
    # two trades at the same time as the arrival: both reach the venue before the intent
    events = [trade(0, 100.0), trade(1, 101.0, ts=T0 + MS), trade(2, 109.0, ts=T0 + MS), trade(3, 110.0)]
    runner = Runner(BuyOnceRobot(), venue=NaiveVenue(latency=MS))
    runner.run(events)
    assert runner.ledger.positions()[0]["avg_price"] == 109.0


class RejectBig:
    """A two-method controls object: rejects orders above 1 unit."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def check(self, intent: Intent) -> OrderRejected | None:
        if getattr(intent, "size", 0.0) > 1.0:
            return OrderRejected(intent.robot, intent.client_order_id, None, intent.venue, intent.instrument,
                                 intent.ts_event, intent.ts_event, "size 2 > 1", "max_order_size")
        return None

    def on_event(self, event: Event) -> None:
        self.seen.append(type(event).__name__)


def test_controls_rejection_reaches_the_robot_and_nothing_reaches_the_venue() -> None:
    events = [trade(0, 100.0), trade(1, 101.0), trade(2, 102.0)]
    rejections: list[Event] = []
    controls = RejectBig()
    runner = Runner(BuyOnceRobot(), venue=NaiveVenue(latency=MS), controls=controls,
                    on_order_event=rejections.append)
    stats = runner.run(events)
    assert [type(e).__name__ for e in rejections] == ["OrderRejected"]
    assert rejections[0].control == "max_order_size"  # type: ignore[union-attr]
    assert "OrderRejected@0" in runner.state.seen and "OrderFilled@1" not in runner.state.seen
    assert stats.rejected_by_controls == 1 and runner.ledger.positions() == []
    assert controls.seen.count("Trade") == 3 and "OrderRejected" in controls.seen


def test_steps_match_run_and_report_state_only_when_changed() -> None:
    events = [trade(i, 100.0 + i) for i in range(6)]
    fast = Runner(BuyOnceRobot(), venue=NaiveVenue(latency=MS))
    stats = fast.run(events)
    slow = Runner(BuyOnceRobot(), venue=NaiveVenue(latency=MS))
    steps = list(slow.steps(events))
    assert slow.intents_sha256 == stats.intents_sha256
    assert [s.seq for s in steps] == sorted(s.seq for s in steps)
    assert sum(len(s.intents) for s in steps) == 1 and steps[0].intents[0].client_order_id == "buy_once-0-0"
    assert all(s.state_json is not None for s in steps)  # every step appends to `seen`
    assert steps[-1].state_json is not None and '"bought":true' in steps[-1].state_json


def test_out_of_order_inputs_are_counted_not_fatal() -> None:
    events = [trade(0, 100.0), trade(5, 101.0), trade(3, 102.0), trade(6, 103.0)]
    stats = Runner(BuyOnceRobot(), venue=NaiveVenue()).run(events)
    assert stats.out_of_order == 1 and stats.events == 4


class FilteredRobot(BuyOnceRobot):
    def subscriptions(self) -> Subscription:
        return Subscription(topics=("t",), instruments=("A",))


def test_subscription_filter_hides_other_instruments_from_the_robot_but_not_the_venue() -> None:
    events = [trade(0, 100.0, "B"), trade(1, 50.0, "A"), trade(2, 101.0, "B"), trade(3, 51.0, "A")]
    runner = Runner(FilteredRobot(), venue=NaiveVenue(latency=MS))
    runner.run(events)
    assert [s for s in runner.state.seen if s.startswith("trade")] == ["trade@1", "trade@3"]
    fills = [s for s in runner.state.seen if s.startswith("OrderFilled")]
    assert fills == ["OrderFilled@2"]
    assert runner.ledger.positions()[0]["avg_price"] == 50.0  # the last A price, not B's


def test_fill_events_reach_on_order_update_with_fill_details() -> None:
    fills: list[OrderFilled] = []
    runner = Runner(BuyOnceRobot(), venue=NaiveVenue(latency=0, fee_bps=10),
                    on_order_event=lambda e: fills.append(e) if isinstance(e, OrderFilled) else None)
    runner.run([trade(0, 100.0), trade(1, 90.0)])
    assert len(fills) == 1 and fills[0].fee == 0.2  # 10 bps of 200
    s = runner.ledger.summary()
    assert s["fees_exact"] == "0.2" and s["pnl_exact"] == "-20.2"  # (90-100)*2 - 0.2
    assert s["max_drawdown"] == 20.2  # from the start (0) to -20.2, fee included


class FlipRobot(Robot[Params, LogState]):
    """Trades on a fixed schedule: buys 3 at step 5, sells 5 at step 40 (short 2), buys 2 at step 80."""

    name = "flip"

    def init_state(self) -> LogState:
        return LogState()

    def on_trade(self, state: LogState, event: Trade, ctx: Context) -> None:
        i = int(event.trade_id)
        if i == 5:
            ctx.buy(event.instrument, 3.0)
        elif i == 40:
            ctx.sell(event.instrument, 5.0)
        elif i == 80:
            ctx.buy(event.instrument, 2.0)


def test_max_drawdown_equals_a_brute_force_exact_equity_curve() -> None:
    from fractions import Fraction

    from robots.api import Rng

    rng = Rng.from_seed(3)
    price = 100.0
    events = []
    for i in range(120):
        price = round(price + (rng.random() - 0.5) * 4, 2)
        events.append(trade(i, price))
    fills: list[OrderFilled] = []
    runner = Runner(FlipRobot(), venue=NaiveVenue(latency=0, fee_bps=5),
                    on_order_event=lambda e: fills.append(e) if isinstance(e, OrderFilled) else None)
    runner.run(events)
    assert len(fills) == 3
    # brute force: exact equity after every event (fills at their trade), peak-to-trough
    cash, qty, peak, dd = Fraction(0), Fraction(0), Fraction(0), Fraction(0)
    by_ts = {f.ts_event: f for f in fills}
    for e in events:
        f = by_ts.get(e.ts_event)
        if f is not None:
            q = Fraction(str(f.size)) * (1 if f.side == "BUY" else -1)
            cash -= q * Fraction(str(f.price)) + Fraction(str(f.fee))
            qty += q
            equity = cash + qty * Fraction(str(f.price))
            peak, dd = max(peak, equity), max(dd, peak - equity)
        equity = cash + qty * Fraction(str(e.price))
        peak, dd = max(peak, equity), max(dd, peak - equity)
    s = runner.ledger.summary()
    assert Fraction(s["max_drawdown_exact"]) == dd
    assert Fraction(s["pnl_exact"]) == cash + qty * Fraction(str(events[-1].price))


class EveryTradeBuyer(Robot[Params, LogState]):
    name = "buyer"

    def init_state(self) -> LogState:
        return LogState()

    def on_trade(self, state: LogState, event: Trade, ctx: Context) -> None:
        ctx.buy(event.instrument, 1.0)


@pytest.mark.parametrize("needs_market_data", [True, False])
def test_kill_switch_from_an_input_control_event(needs_market_data: bool) -> None:
    from robots.controls import controls_from_config
    from ticktape.events import Control

    controls = controls_from_config({})
    controls.needs_market_data = needs_market_data  # type: ignore[attr-defined]
    kill = Control("*", T0 + 2 * MS, T0 + 2 * MS, "KILL", reason="test")
    events: list[Event] = [trade(0, 100.0), trade(1, 101.0), kill, trade(3, 102.0), trade(4, 103.0)]
    answers: list[Event] = []
    stats = Runner(EveryTradeBuyer(), venue=NaiveVenue(), controls=controls, on_order_event=answers.append).run(events)
    rejected = [e for e in answers if isinstance(e, OrderRejected)]
    assert stats.intents == 4 and stats.rejected_by_controls == 2
    # seq counts every robot step: trade 0 (seq 0), its accepted/filled (1, 2), trade 1 (3, then 4, 5),
    # the kill (6), trade 3 (7), its rejection (8), trade 4 (9)
    assert [(e.client_order_id, e.control) for e in rejected] == [("buyer-7-0", "kill_switch"),
                                                                   ("buyer-9-0", "kill_switch")]


def test_a_runner_does_one_run() -> None:
    from robots.api import RobotError

    runner = Runner(BuyOnceRobot(), venue=NaiveVenue())
    runner.run([trade(0, 100.0)])
    with pytest.raises(RobotError, match="one run"):
        runner.run([trade(1, 101.0)])
    # continuing from a state is a new runner
    again = Runner(BuyOnceRobot(), venue=NaiveVenue(), state=runner.state)
    again.run([trade(1, 101.0)])
    assert again.state.seen[-1] == "trade@1" and again.stats.intents == 0  # already bought
