"""The deterministic runner: one merged input sequence -> robot -> controls -> simulated venue.

The backtest form of the fold; its execution port is `robots.execution.SimulatedExecution`
(a live run's fold, `robots.live.fold`, uses the same dispatch with `TapeExecution`).

Order of processing (it depends only on the data):
- Inputs come in merged order (`ts_event`, topic order, partition, offset; see
  `robots.sources`). Each input first goes to the venue (`on_market`: fills of resting orders,
  suspensions, settlement), those answers go to the robot, then the input itself goes to the
  robot by the rule of `robots.dispatch` (the one `Robot.step` uses): market data when it
  passes the subscription filter and `check`; answers, timers and controls read from the
  inputs only when addressed to this robot.
- An intent emitted at event time T is hashed and recorded, checked by the controls (a rejection
  is an `OrderRejected` at T), and otherwise reaches the venue at T + `venue.latency_ns(intent)`.
- Internal items (intent arrivals, control rejections, timers) at time A are processed after
  every input with `ts_event <= A` and before the first input after A; equal times keep the
  order they were created in. So the venue sees all market data up to an intent's arrival.
- Every robot step has a sequence number `seq` (inputs and internal deliveries alike); client
  order ids derive from it.

`Runner.run(events)` is the fast path. `Runner.steps(events)` yields a `Step` per robot step,
with the state as JSON when it changed, for the analyzer's replay and audit.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol

from robots.api import Context, Robot, RobotError, StateT
from robots.dispatch import Dispatch, Handler, SubscriptionFilter
from robots.execution import SimulatedExecution
from robots.ledger import Ledger, LedgerLike
from robots.sim.base import Intent, SimVenue
from ticktape.domain import IntentDigest
from ticktape.events import Control, Event, OrderFilled, OrderRejected, Timer
from ticktape.timeutil import VirtualClock

__all__ = ["RunStats", "Runner", "Step", "SubscriptionFilter"]


class Step(NamedTuple):
    """One robot step: its sequence number, the event it got, the state as JSON if the step
    changed it (else None), and the intents it emitted."""

    seq: int
    event: Event
    state_json: str | None
    intents: tuple[Intent, ...]


class ControlsLike(Protocol):
    """What the runner needs from trading controls (`robots.controls.Controls`)."""

    def check(self, intent: Intent) -> OrderRejected | None:
        """None to let the intent through, else the rejection (naming the control)."""

    def on_event(self, event: Event) -> None:
        """Track market data, order events and commands (positions, rates, kill switch)."""


@dataclass
class RunStats:
    """Counters of a run (the ledger has the money)."""

    events: int = 0
    robot_steps: int = 0
    intents: int = 0
    order_events: int = 0
    rejected_by_controls: int = 0
    out_of_order: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    intents_sha256: str = ""


class Runner(Generic[StateT]):
    """Runs one robot over a merged input sequence against a simulated venue.

    `venue=None` runs the robot alone (intents recorded, nothing filled). `controls` is an
    object with `check(intent) -> OrderRejected | None` and `on_event(event)` (see
    `robots.controls.Controls`). `on_intent` / `on_order_event` receive every intent and venue
    answer as they happen (the backtest writes them to the output tape). `horizon` bounds
    timers after the inputs end (default: the last input's time). A Runner does one run
    (`run` or `steps`, once): the intents in flight and the hash belong to that run.
    """

    def __init__(self, robot: Robot[Any, StateT], *, venue: SimVenue | None = None,
                 controls: ControlsLike | None = None, ledger: LedgerLike | None = None, state: StateT | None = None,
                 on_intent: Callable[[Intent], None] | None = None,
                 on_order_event: Callable[[Event], None] | None = None,
                 horizon: int | None = None, mark_to_market: bool = True) -> None:
        self.robot = robot
        self.venue = venue
        self.controls = controls
        venue_ledger = getattr(venue, "ledger", None)
        self.ledger: LedgerLike = ledger or venue_ledger or Ledger()
        self.state: StateT = robot.init_state() if state is None else state
        try:
            robot.state_to_json(self.state)
        except (TypeError, ValueError) as exc:
            raise RobotError(f"{type(robot).__name__}: the state must serialise to JSON: {exc}") from exc
        self.on_intent = on_intent
        self.on_order_event = on_order_event
        self.horizon = horizon
        self.mark_to_market = mark_to_market
        self.clock = VirtualClock()
        self.stats = RunStats()
        self._digest = IntentDigest()
        self._started = False

    # ------------------------------------------------------------------ public API
    def run(self, events: Iterable[Event]) -> RunStats:
        """Process every input; return the counters (intents_sha256 set)."""
        for _ in self._drive(events, None):
            pass
        return self.stats

    def steps(self, events: Iterable[Event]) -> Iterator[Step]:
        """Like `run`, yielding every robot step with the state JSON when it changed."""
        buf: list[Step] = []
        to_json = self.robot.state_to_json
        last = [to_json(self.state)]

        def observe(seq: int, event: Event, intents: list[Intent]) -> None:
            now = to_json(self.state)
            changed = now if now != last[0] else None
            last[0] = now
            buf.append(Step(seq, event, changed, tuple(intents)))

        for _ in self._drive(events, observe):
            if buf:
                yield from buf
                buf.clear()
        yield from buf

    # ------------------------------------------------------------------ the loop
    def _drive(self, events: Iterable[Event], observe: Callable[[int, Event, list[Intent]], None] | None
               ) -> Iterator[None]:
        if self._started:
            raise RobotError("a Runner does one run; make a new Runner (with `state=` to continue from a state)")
        self._started = True
        robot = self.robot
        venue = self.venue
        controls = self.controls
        ledger = self.ledger
        stats = self.stats
        clock = self.clock
        digest_add = self._digest.defer  # encoded and hashed in batches: same digest
        sink_intent = self.on_intent
        sink_event = self.on_order_event
        dispatch = Dispatch(robot)  # the tables are per run: the filter remembers market definitions
        market = dispatch.market
        market_entry = dispatch.market_entry
        addressed = dispatch.addressed
        gate = dispatch.gate
        passes = dispatch.passes
        ctx = Context(robot.robot_id, robot.venue)
        ctx.dispatch = dispatch
        execution = SimulatedExecution(venue) if venue is not None else None  # the port of a backtest
        venue_on_market = execution.on_market if execution is not None else None
        controls_on_event = getattr(controls, "on_event", None)
        # controls that use no prices (size, position, rate, kill switch) may say so and skip market data
        controls_on_market = controls_on_event if getattr(controls, "needs_market_data", True) else None
        mark = ledger.on_market if self.mark_to_market else None
        heap: list[tuple[int, int, int, Any]] = []  # (time, creation order, kind, item)
        push = heapq.heappush
        pop = heapq.heappop
        created = 0
        seq = 0
        steps = 0
        state = self.state
        now = clock.now()
        robot_id = robot.robot_id

        def schedule(intents: list[Intent], timers: list[Any], ts: int) -> None:
            """Record a step's intents (hash, sinks), apply controls, queue arrivals and timers."""
            nonlocal created
            for intent in intents:
                stats.intents += 1
                digest_add(intent)
                if sink_intent is not None:
                    sink_intent(intent)
                if controls is not None:
                    rejection = controls.check(intent)
                    if rejection is not None:
                        stats.rejected_by_controls += 1
                        push(heap, (ts, created, 1, rejection))
                        created += 1
                        continue
                arrival = ts + (execution.latency_ns(intent) if execution is not None else 0)
                push(heap, (arrival, created, 0, intent))
                created += 1
            for t in timers:
                push(heap, (t.ts, created, 2, Timer(robot_id, t.name, t.ts, t.ts, t.payload)))
                created += 1

        def run_step(handler: Handler, event: Event, ts: int, now: int) -> None:
            """One robot step outside the market-data hot path (answers, timers, controls)."""
            nonlocal state, steps
            ctx.seq = seq
            ctx.ts = ts
            new = handler(state, event, ctx)
            if new is not None:
                state = self.state = new
            steps += 1
            if ctx.intents or ctx.timers:
                if now > clock.now():
                    clock.advance(now)
                schedule(ctx.intents, ctx.timers, ts)
                if observe is not None:
                    observe(seq, event, ctx.intents)
                ctx.reset(seq, ts)
            elif observe is not None:
                observe(seq, event, ctx.intents)

        def deliver(event: Event, ts: int) -> None:
            """A venue answer, control rejection or timer: bookkeeping, then a robot step if addressed to it."""
            nonlocal seq
            t = type(event)
            if t is not Timer:
                stats.order_events += 1
                if controls_on_event is not None:
                    controls_on_event(event)
                if t is OrderFilled:
                    ledger.on_fill(event)  # type: ignore[arg-type]
                else:
                    ledger.on_event(event)
                if sink_event is not None:
                    sink_event(event)
            handler = addressed(event)
            if ts > clock.now():
                clock.advance(ts)
            if handler is not None:
                run_step(handler, event, ts, ts)
            seq += 1

        def process(item: tuple[int, int, int, Any]) -> None:
            ts, _, kind, payload = item
            if kind == 0:  # an intent reaches the venue
                if execution is not None:
                    for answer in execution.submit(payload, ts):
                        deliver(answer, answer.ts_event)
            else:  # a control rejection or a timer
                deliver(payload, ts)

        n_events = 0
        disorder = 0
        # The hot loop: one pass per input, nothing per-run done here (everything above is set-up).
        for event in events:
            ts = event.ts_event
            if heap and heap[0][0] < ts:
                clock.advance(max(now, clock.now()))
                while heap and heap[0][0] < ts:
                    process(pop(heap))
                    if observe is not None:
                        yield None
                now = max(now, clock.now())
            if ts > now:
                now = ts
            elif ts < now:
                disorder += 1
            if venue_on_market is not None:
                answers = venue_on_market(event)
                if answers:
                    clock.advance(now)
                    for answer in answers:
                        deliver(answer, answer.ts_event)
            if controls_on_market is not None:
                controls_on_market(event)
            elif controls_on_event is not None and type(event) is Control:
                controls_on_event(event)  # operator commands (kill switch) always reach the controls
            if mark is not None and ledger.open:
                mark(event)
            # robots.dispatch.Dispatch.route, inlined: one lookup, then the filter and gate for market data
            try:
                handler = market[type(event)]
            except KeyError:
                handler = market_entry(type(event))
            if handler:
                if (passes is None or passes(event)) and (gate is None or gate(event)):
                    ctx.seq = seq
                    ctx.ts = ts
                    new = handler(state, event, ctx)
                    if new is not None:
                        state = self.state = new
                    steps += 1
                    if ctx.intents or ctx.timers:
                        clock.advance(now)
                        schedule(ctx.intents, ctx.timers, ts)
                        if observe is not None:
                            observe(seq, event, ctx.intents)
                        ctx.reset(seq, ts)
                    elif observe is not None:
                        observe(seq, event, ctx.intents)
            elif handler is None:
                if passes is not None:
                    passes(event)  # keep the filter's market definitions current
            else:  # an answer, Timer or Control among the inputs: only when addressed to this robot
                direct = addressed(event)
                if direct is not None:
                    run_step(direct, event, ts, now)
            seq += 1
            n_events += 1
            if n_events == 1:
                stats.first_ts = ts
            if observe is not None:
                clock.advance(now)
                stats.events = n_events
                yield None
        clock.advance(max(now, clock.now()))
        stats.events = n_events
        stats.out_of_order = disorder
        # inputs exhausted: let queued intents reach the venue; timers only up to the horizon
        horizon = self.horizon if self.horizon is not None else now
        while heap:
            item = pop(heap)
            if item[2] == 2 and item[0] > horizon:
                continue
            process(item)
            if observe is not None:
                yield None
        stats.robot_steps = steps
        stats.last_ts = max(now, clock.now()) if n_events else None
        stats.intents_sha256 = self._digest.hexdigest()

    @property
    def intents_sha256(self) -> str:
        """sha256 over the single-object encoding of every intent so far, in order."""
        return self._digest.hexdigest()
