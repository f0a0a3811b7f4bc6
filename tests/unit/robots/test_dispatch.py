"""One dispatch rule (`robots.dispatch`): the runner and `Robot.step` deliver the same events to the same handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.api import Context, Params, Robot, Subscription
from robots.dispatch import ANSWER_TYPES, ORDER_EVENT_TYPES, Dispatch, event_kind
from robots.runner import Runner
from ticktape.events import (
    BetSettled,
    Control,
    CustomData,
    Event,
    MarketBook,
    MarketDefinition,
    MarketSettled,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    PositionSnapshot,
    Quote,
    Timer,
    Trade,
)

T0 = 1_700_000_000_000_000_000
ME = "me"
OTHER = "other"


class OrderAmended(NamedTuple):
    """A venue's own answer type that `robots.dispatch` does not know by type (name prefix + robot field)."""

    robot: str
    client_order_id: str
    ts_event: int
    ts_recv: int


class BetVoidedNote(NamedTuple):
    """Named like an answer but without a robot field: market data."""

    market_id: str
    ts_event: int
    ts_recv: int


@dataclass
class Seen:
    calls: list[tuple[str, Any]] = field(default_factory=list)


class Recorder(Robot[Params, Seen]):
    """Overrides every handler and `check`; records (handler, event) in the state, gate calls on `gated`.

    `check` refuses trades with a price under 100 (so the gate decides something) and records
    every event it is asked about (test-only: a real robot keeps nothing on `self`).
    """

    name = "recorder"

    def __init__(self, sub: Subscription | None = None, *, robot_id: str = ME) -> None:
        super().__init__(robot_id=robot_id)
        self.sub = sub or Subscription(topics=("t",))
        self.gated: list[Event] = []

    def subscriptions(self) -> Subscription:
        return self.sub

    def init_state(self) -> Seen:
        return Seen()

    def check(self, event: Event) -> bool:
        self.gated.append(event)
        return not (type(event) is Trade and event.price < 100)

    def _rec(self, name: str, state: Seen, event: Event) -> None:
        state.calls.append((name, event))

    def on_trade(self, state: Seen, event: Trade, ctx: Context) -> None:
        self._rec("on_trade", state, event)

    def on_quote(self, state: Seen, event: Quote, ctx: Context) -> None:
        self._rec("on_quote", state, event)

    def on_book(self, state: Seen, event: Any, ctx: Context) -> None:
        self._rec("on_book", state, event)

    def on_bar(self, state: Seen, event: Any, ctx: Context) -> None:
        self._rec("on_bar", state, event)

    def on_market_book(self, state: Seen, event: MarketBook, ctx: Context) -> None:
        self._rec("on_market_book", state, event)

    def on_market_definition(self, state: Seen, event: MarketDefinition, ctx: Context) -> None:
        self._rec("on_market_definition", state, event)

    def on_order_update(self, state: Seen, event: Event, ctx: Context) -> None:
        self._rec("on_order_update", state, event)

    def on_timer(self, state: Seen, event: Timer, ctx: Context) -> None:
        self._rec("on_timer", state, event)

    def on_control(self, state: Seen, event: Control, ctx: Context) -> None:
        self._rec("on_control", state, event)

    def on_custom(self, state: Seen, event: CustomData, ctx: Context) -> None:
        self._rec("on_custom", state, event)


def via_runner(robot: Recorder, events: list[Any]) -> tuple[list[tuple[str, Any]], list[Event]]:
    robot.gated = []
    runner = Runner(robot)
    runner.run(events)
    return runner.state.calls, robot.gated


def via_step(robot: Recorder, events: list[Any]) -> tuple[list[tuple[str, Any]], list[Event]]:
    robot.gated = []
    state = robot.init_state()
    ctx = Context(robot.robot_id, robot.venue)
    for seq, e in enumerate(events):
        state, _ = robot.step(state, e, seq, ctx)
    return state.calls, robot.gated


# --------------------------------------------------------------------------- event builders


def trade(ts: int, instrument: str = "X", price: float = 100.0) -> Trade:
    return Trade(venue="sim", instrument=instrument, ts_event=ts, ts_recv=ts, price=price, size=1.0,
                 aggressor_side="BUY", trade_id=str(ts))


def quote(ts: int, instrument: str = "X") -> Quote:
    return Quote(venue="sim", instrument=instrument, ts_event=ts, ts_recv=ts, bid_price=99.0, bid_size=1.0,
                 ask_price=101.0, ask_size=1.0)


def definition(ts: int, market: str = "1.1", market_type: str = "WIN") -> MarketDefinition:
    return MarketDefinition(market_id=market, ts_event=ts, ts_recv=ts, event_id="e", event_type_id="4339",
                            event_name=None, market_name=None, market_type=market_type, country_code="GB",
                            venue=None, market_time=ts, suspend_time=None, settled_time=None, status="OPEN",
                            in_play=False, bet_delay=0, turn_in_play_enabled=True, betting_type="ODDS",
                            number_of_winners=1, version=1, timezone="UTC", runners=())


def market_book(ts: int, market: str = "1.1", in_play: bool = False) -> MarketBook:
    return MarketBook(market_id=market, ts_event=ts, ts_recv=ts, status="OPEN", in_play=in_play, bet_delay=0,
                      total_matched=0.0, version=1, complete=True, cross_matching=False,
                      number_of_active_runners=0, runners=())


def custom(ts: int) -> CustomData:
    return CustomData(name="signal", key="k", ts_event=ts, ts_recv=ts, payload="{}")


def control(ts: int, target: str) -> Control:
    return Control(target=target, ts_event=ts, ts_recv=ts, command="PAUSE")


def accepted(ts: int, robot: str = ME) -> OrderAccepted:
    return OrderAccepted(robot=robot, client_order_id=f"{robot}-1-0", venue_order_id=None, venue="sim",
                         instrument="X", ts_event=ts, ts_recv=ts)


def filled(ts: int, robot: str = ME, instrument: str = "X") -> OrderFilled:
    return OrderFilled(robot=robot, client_order_id=f"{robot}-1-0", venue_order_id=None, venue="sim",
                       instrument=instrument, ts_event=ts, ts_recv=ts, fill_id="f", side="BUY", price=1.0,
                       size=1.0, fee=0.0, liquidity="TAKER")


def rejected(ts: int, robot: str = ME) -> OrderRejected:
    return OrderRejected(robot=robot, client_order_id=f"{robot}-1-0", venue_order_id=None, venue="sim",
                         instrument="X", ts_event=ts, ts_recv=ts, reason="no")


def timer(ts: int, robot: str = ME) -> Timer:
    return Timer(robot=robot, name="t", ts_event=ts, ts_recv=ts)


def bet_settled(ts: int, robot: str = ME, market: str = "1.2") -> BetSettled:
    return BetSettled(robot=robot, client_order_id=f"{robot}-1-0", venue_order_id=None, venue="betfair",
                      instrument=f"{market}:11", market_id=market, selection_id=11, ts_event=ts, ts_recv=ts,
                      side="BUY", size_matched=2.0, average_price_matched=2.0, runner_status="WINNER", profit=2.0)


def market_settled(ts: int, robot: str = ME, market: str = "1.2") -> MarketSettled:
    return MarketSettled(robot=robot, venue="betfair", market_id=market, ts_event=ts, ts_recv=ts, bets=1,
                         profit=2.0, commission_rate=0.05, commission=0.1, net_profit=1.9)


def snapshot(ts: int, robot: str = ME) -> PositionSnapshot:
    return PositionSnapshot(robot=robot, venue="sim", instrument="X", ts_event=ts, ts_recv=ts, quantity=1.0,
                            avg_price=1.0, realized_pnl=0.0, unrealized_pnl=0.0)


# --------------------------------------------------------------------------- the property

ROBOTS = st.sampled_from([ME, OTHER])
INSTRUMENTS = st.sampled_from(["X", "Y", "1.1", "1.2"])
MARKETS = st.sampled_from(["1.1", "1.2"])
TARGETS = st.sampled_from([ME, OTHER, "*", ""])

# each draws an event from a time stamp
MAKERS: list[st.SearchStrategy[Any]] = [
    st.builds(lambda i, p: lambda ts: trade(ts, i, p), INSTRUMENTS, st.sampled_from([99.0, 100.0, 101.0])),
    st.builds(lambda i: lambda ts: quote(ts, i), INSTRUMENTS),
    st.builds(lambda m, t: lambda ts: definition(ts, m, t), MARKETS, st.sampled_from(["WIN", "PLACE"])),
    st.builds(lambda m, p: lambda ts: market_book(ts, m, p), MARKETS, st.booleans()),
    st.just(custom),
    st.builds(lambda t: lambda ts: control(ts, t), TARGETS),
    *[st.builds(lambda r, f=f: lambda ts: f(ts, r), ROBOTS)
      for f in (accepted, filled, rejected, timer, bet_settled, market_settled, snapshot)],
    st.builds(lambda r: lambda ts: OrderAmended(r, f"{r}-1-0", ts, ts), ROBOTS),
    st.builds(lambda m: lambda ts: BetVoidedNote(m, ts, ts), MARKETS),
]

SUBSCRIPTIONS = [
    Subscription(topics=("t",)),
    Subscription(topics=("t",), instruments=("X", "1.1", "1.2")),
    Subscription(topics=("t",), market_types=("WIN",)),
    Subscription(topics=("t",), instruments=("X", "1.1"), market_types=("WIN",), in_play=False),
]


@st.composite
def event_sequences(draw: st.DrawFn) -> list[Any]:
    makers = draw(st.lists(st.one_of(*MAKERS), max_size=40))
    gaps = draw(st.lists(st.integers(0, 3), min_size=len(makers), max_size=len(makers)))
    out, ts = [], T0
    for make, gap in zip(makers, gaps, strict=True):
        ts += gap
        out.append(make(ts))
    return out


@settings(max_examples=300, deadline=None)
@given(events=event_sequences(), sub=st.sampled_from(SUBSCRIPTIONS))
def test_runner_and_step_deliver_the_same_events_to_the_same_handlers(events: list[Any], sub: Subscription) -> None:
    robot = Recorder(sub)
    ran, ran_gated = via_runner(robot, events)
    stepped, step_gated = via_step(robot, events)
    assert ran == stepped
    assert ran_gated == step_gated
    assert all(event_kind(type(e)) == "market" for e in ran_gated)  # the gate sees market data only
    for name, e in ran:
        if name in ("on_order_update", "on_timer"):
            assert e.robot == ME
        elif name == "on_control":
            assert e.target in (ME, "*", "")


# --------------------------------------------------------------------------- each rule, by example


def deliveries(events: list[Any], sub: Subscription | None = None) -> list[tuple[str, Any]]:
    """What the runner delivered, checked against `Robot.step` with one context."""
    robot = Recorder(sub)
    ran, _ = via_runner(robot, events)
    assert via_step(robot, events)[0] == ran
    return ran


def test_event_kinds() -> None:
    assert {event_kind(t) for t in ORDER_EVENT_TYPES} == {"answer"}
    assert {BetSettled, MarketSettled, *ORDER_EVENT_TYPES} <= ANSWER_TYPES
    assert event_kind(OrderAmended) == "answer"  # unknown Order* type with a robot field
    assert event_kind(BetVoidedNote) == "market"  # no robot field: cannot be addressed
    assert event_kind(PositionSnapshot) == "market"
    assert event_kind(MarketBook) == event_kind(MarketDefinition) == event_kind(CustomData) == "market"
    assert (event_kind(Timer), event_kind(Control)) == ("timer", "control")


def test_control_reaches_only_its_target() -> None:
    events = [control(T0, OTHER), control(T0 + 1, ME), control(T0 + 2, "*"), control(T0 + 3, "")]
    assert deliveries(events) == [("on_control", e) for e in events[1:]]


def test_answers_and_timers_for_another_robot_are_not_delivered() -> None:
    events = [accepted(T0, OTHER), filled(T0, OTHER), timer(T0, OTHER), market_settled(T0, OTHER),
              OrderAmended(OTHER, "c", T0, T0)]
    assert deliveries(events) == []


def test_settlement_read_from_the_inputs_reaches_on_order_update() -> None:
    events = [market_settled(T0), bet_settled(T0 + 1), OrderAmended(ME, "c", T0 + 2, T0 + 2)]
    # the market 1.2 has no definition and is outside the instrument filter: answers pass anyway
    sub = Subscription(topics=("t",), instruments=("X",), market_types=("WIN",))
    assert deliveries(events, sub) == [("on_order_update", e) for e in events]


def test_gate_and_filter_apply_to_market_data_not_to_answers() -> None:
    robot = Recorder(Subscription(topics=("t",), instruments=("X",)))
    cheap = trade(T0, "X", 99.0)  # refused by check
    other = trade(T0 + 1, "Y", 101.0)  # refused by the filter
    fill_y = filled(T0 + 2, ME, "Y")  # an answer on an instrument outside the filter
    ok = trade(T0 + 3, "X", 101.0)
    calls, gated = via_runner(robot, [cheap, other, fill_y, ok])
    assert calls == [("on_order_update", fill_y), ("on_trade", ok)]
    assert gated == [cheap, ok]  # check is asked after the filter, and never about answers


def test_betfair_filter_keeps_its_definitions_across_steps_in_one_context() -> None:
    sub = Subscription(topics=("t",), market_types=("WIN",))
    events: list[Event] = [definition(T0, "1.1", "WIN"), definition(T0, "1.2", "PLACE"),
                           market_book(T0 + 1, "1.1"), market_book(T0 + 1, "1.2")]
    assert deliveries(events, sub) == [("on_market_definition", events[0]), ("on_market_book", events[2])]
    # without a context each step starts with an empty filter: the book's market is unknown
    robot = Recorder(sub)
    state, _ = robot.step(robot.init_state(), events[2], 0)
    assert state.calls == []


def test_in_process_answers_are_delivered_to_the_robot() -> None:
    from robots.sim.naive import NaiveVenue

    class Buyer(Recorder):
        def on_trade(self, state: Seen, event: Trade, ctx: Context) -> None:
            super().on_trade(state, event, ctx)
            if len(state.calls) == 1:
                ctx.buy("X", 1.0)
                ctx.set_timer("t", event.ts_event + 5)

    runner = Runner(Buyer(), venue=NaiveVenue(latency=1))
    runner.run([trade(T0 + i, "X", 101.0) for i in range(10)])
    names = [(name, type(e).__name__) for name, e in runner.state.calls if name != "on_trade"]
    assert names == [("on_order_update", "OrderAccepted"), ("on_order_update", "OrderFilled"), ("on_timer", "Timer")]


def test_a_context_reused_by_another_robot_gets_that_robot_s_tables() -> None:
    a, b = Recorder(robot_id="a"), Recorder(robot_id="b")
    ctx = Context("a", "sim")
    a.step(a.init_state(), trade(T0), 0, ctx)
    first = ctx.dispatch
    state, _ = b.step(b.init_state(), timer(T0, "b"), 1, ctx)
    assert isinstance(first, Dispatch) and ctx.dispatch is not None and ctx.dispatch is not first
    assert ctx.dispatch.robot is b
    assert state.calls == [("on_timer", timer(T0, "b"))]


@pytest.mark.parametrize("robot_id", [ME, OTHER])
def test_unhandled_types_go_nowhere(robot_id: str) -> None:
    class OnlyTrades(Robot[Params, Seen]):
        def init_state(self) -> Seen:
            return Seen()

        def on_trade(self, state: Seen, event: Trade, ctx: Context) -> None:
            state.calls.append(("on_trade", event))

    bot = OnlyTrades(robot_id=robot_id)
    events: list[Event] = [filled(T0, robot_id), timer(T0, robot_id), control(T0, "*"), quote(T0), trade(T0 + 1)]
    runner = Runner(bot)
    runner.run(events)
    assert runner.state.calls == [("on_trade", events[-1])] and runner.stats.robot_steps == 1
