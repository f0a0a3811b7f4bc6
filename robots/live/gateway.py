"""`ticktape gateway --venue paper|binance|betfair`: intents in, venue answers out, once each, whatever crashes.

The gateway is a journaled fold too (`robots.live.engine`). Its inputs: the intents of live
runs (`orders.intent`), their manifests (`runs`), operator commands (`controls`) and the market
data the paper venue matches against; its outputs: every answer on `orders.event`, keyed by
the run. Per run it applies the run's own trading controls (the `[controls]` table of its
manifest: the same objects and `OrderRejected` events as in backtests).

- A client order id is placed at most once: the venue refuses a second `PlaceOrder` with the
  same id, and the journal guarantees the gateway folds each intent record once.
- Intents of runs whose manifest has not been folded yet wait for it; intents of backtests are
  never sent.
- Commands: `KILL` refuses the run's new orders for good (across restarts of the run) and
  cancels its open ones; `PAUSE` refuses new orders (an `OrderRejected` naming `kill_switch`)
  until `RESUME`; `FLATTEN` cancels the open orders and closes each crypto position with a
  market order (Betfair positions are not hedged: the orders are cancelled). A restarted run
  says so (`param="restart"`), and the watchdog covers it again.
- Watchdog: a live run whose heartbeat is older than `dead_after` seconds is declared dead
  (an inline `Control` with `param="watchdog"`, journaled): its open orders are cancelled and
  its new orders refused until its heartbeat returns.

The paper venue is the simulator (`robots.sim`): Betfair intents go to the Betfair simulator,
the others to the crypto one; an intent arrives at the later of its own time and the latest
market event folded, and waits (up to `hold_seconds`, 50 ms) for the market data of its time
when the intent overtook it (the gateway follows topics in parallel). Paper venue state is not
snapshotted: a restarted gateway replays its whole journal (seconds per million inputs; a run's
journal replays at ~230k inputs/s, BENCHMARKS.md).

A real venue (`binance`, `betfair`: `robots.live.real_venues`) is an edge, not a function: the
fold turns intents into commands (`robots.live.venue_orders`), a sender thread executes them
(`robots.live.sender`), and everything the venue says comes back as a journaled report the fold
compares with what it knows (`robots.live.exchange` explains the port). The gateway reconciles
with the venue before it trades (`Gateway.reconcile`) and polls its open orders now and then.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from robots.api import RobotError
from robots.controls import Controls, controls_from_config
from robots.live.engine import LiveLoop, Output, open_live_tape
from robots.live.exchange import (
    REPORT_KIND,
    AccountReport,
    Command,
    LiveVenue,
    OrderReport,
    OutcomeUnknown,
    Refusal,
    VenueBusy,
    report_event,
    report_from_event,
)
from robots.live.fold import DuplicateWindow, base36, run_tag
from robots.live.real_venues import RULES_KIND, is_real_venue, open_real_venue, rules_event
from robots.live.sender import VenueSender
from robots.live.topics import CONTROLS_TOPIC, EVENT_TOPIC, INTENT_TOPIC, RUNS_TOPIC, heartbeat_topic, last_event
from robots.live.venue_orders import VenueOrders
from robots.sim.base import SimVenue
from robots.venues import live_venue, make_venue
from ticktape.errors import TicktapeError
from ticktape.events import (
    BetSettled,
    CancelOrder,
    Control,
    CustomData,
    Event,
    MarketBook,
    MarketDefinition,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    ReplaceOrder,
    RunFinished,
    RunStarted,
)
from ticktape.retry import backoff_delays, retry_call
from ticktape.tape import Tape, open_tape
from ticktape.tape.base import Record

__all__ = ["Gateway", "GatewayFold", "PaperVenue"]

log = logging.getLogger("ticktape.gateway")

T = TypeVar("T")

_INTENTS = (PlaceOrder, CancelOrder, ReplaceOrder)
_BETFAIR_MARKET = (MarketBook, MarketDefinition)


class PaperVenue:
    """The simulated venues behind `--venue paper`: Betfair intents to the Betfair simulator, others to crypto.

    Settings are `crypto.<setting>` and `betfair.<setting>` (`--venue-param crypto.taker_fee=0.001`),
    passed to `robots.sim.crypto` and `robots.sim.betfair`.
    """

    def __init__(self, settings: Mapping[str, object] | None = None) -> None:
        per: dict[str, dict[str, object]] = {"crypto": {}, "betfair": {}}
        for key, value in (settings or {}).items():
            kind, dot, name = key.partition(".")
            if not dot or kind not in per:
                raise RobotError(f"paper venue setting {key!r}: use crypto.<setting> or betfair.<setting>")
            per[kind][name] = value
        self.settings = {f"{k}.{n}": v for k, table in per.items() for n, v in sorted(table.items())}
        self.crypto: SimVenue = make_venue("crypto", per["crypto"])
        self.betfair: SimVenue = make_venue("betfair", per["betfair"])

    def latency_ns(self, intent: PlaceOrder | CancelOrder | ReplaceOrder) -> int:
        return 0  # live: the intent reaches the paper venue when the gateway folds it

    def on_market(self, event: Event) -> Sequence[Event]:
        venue = self.betfair if type(event) in _BETFAIR_MARKET else self.crypto
        return venue.on_market(event)

    def on_intent(self, intent: PlaceOrder | CancelOrder | ReplaceOrder, ts: int) -> Sequence[Event]:
        venue = self.betfair if intent.venue == "betfair" else self.crypto
        return venue.on_intent(intent, ts)


@dataclass
class _Run:
    """What the gateway knows of one live run."""

    run_id: str
    robot_id: str
    controls: Controls
    tag: str
    open: dict[str, PlaceOrder] = field(default_factory=dict)  # client order id -> the order
    accepted: set[str] = field(default_factory=set)  # open orders the venue accepted
    position: dict[tuple[str, str], float] = field(default_factory=dict)  # (venue, instrument) -> signed size
    dead: bool = False  # declared dead by the watchdog
    finished: bool = False


class GatewayFold:
    """The gateway's fold (see the module docstring); `only_run` serves one run (in-process gateway).

    With `orders` (a real venue), intents become `Command`s in `outbox` (the gateway's sender
    sends them) and the venue's reports, journaled inline, become the answers; `check` applies the
    venue's journaled rules (exchange filters) before anything is sent.
    """

    def __init__(self, venue: SimVenue | None, *, venue_name: str = "paper", only_run: str | None = None,
                 orders: VenueOrders | None = None,
                 check: Callable[[Mapping[str, Any], PlaceOrder | ReplaceOrder], Refusal | None] | None = None
                 ) -> None:
        if (venue is None) == (orders is None):
            raise ValueError("a gateway fold needs a simulated venue or real venue orders, not both")
        self.venue = venue
        self.venue_name = venue_name
        self.only_run = only_run
        self.orders = orders
        self.check = check
        self.rules: dict[str, Any] = {}
        self.account: AccountReport | None = None
        self.outbox: list[Command] = []
        self.seq = 0
        self.clock = 0  # latest market ts_event folded
        self.runs: dict[str, _Run] = {}
        self.ignored: set[str] = set()  # backtests and runs on other venues
        self.held: dict[str, list[Event]] = {}  # intents that arrived before their run's manifest
        self.run_of_order: dict[str, str] = {}
        self.run_of_robot: dict[str, str] = {}
        self.intents = DuplicateWindow()

    # ------------------------------------------------------------------ Fold port
    def accept(self, record: Record) -> bool:
        if record.topic == INTENT_TOPIC:
            key = record.key or ""
            if self.only_run is not None:
                return key == self.only_run
            return key not in self.ignored
        if record.topic == RUNS_TOPIC:
            return self.only_run is None or record.key == self.only_run
        return True

    def fold(self, record: Record) -> list[Output]:
        self.seq += 1
        event = record.event
        t = type(event)
        if t in _INTENTS:
            return self._intent(record.key or "", event)
        if t is RunStarted:
            return self._run_started(event)  # type: ignore[arg-type]
        if t is RunFinished:
            run = self.runs.get(event.run_id)  # type: ignore[union-attr]
            if run is not None:
                run.finished = True
            return []
        if t is Control:
            return self._control(event)  # type: ignore[arg-type]
        if t is CustomData:
            return self._custom(event)  # type: ignore[arg-type]
        if record.topic == CONTROLS_TOPIC:
            return []
        if event.ts_event > self.clock:
            self.clock = event.ts_event
        for run in self.runs.values():
            if run.controls.needs_market_data:
                run.controls.on_event(event)
        return [] if self.venue is None else self._answers(self.venue.on_market(event))

    def _custom(self, data: CustomData) -> list[Output]:
        """A real venue's report or rules (journaled inline by the gateway); other custom data is not ours."""
        if self.orders is None:
            return []
        if data.name == REPORT_KIND:
            report = report_from_event(data)
            if isinstance(report, AccountReport):
                self.account = report
                return []
            rid, events = self.orders.apply(report, data.ts_recv)
            return self._answers(events, rid) if rid is not None else []
        if data.name == RULES_KIND:
            self.rules = json.loads(data.payload)
        return []

    def due(self, now: int) -> list[Event]:
        return []  # watchdog verdicts are passed in by the Gateway loop

    def snapshot(self) -> None:
        return None

    def restore(self, state_json: str, engine_json: str) -> None:
        raise NotImplementedError("the paper gateway keeps no snapshots")

    def recorded_outputs(self, tape: Tape, since: dict[str, dict[int, int]]) -> Iterable[Output]:
        live = self.live_runs(tape)
        for p in range(tape.partitions(EVENT_TOPIC)):
            for rec in tape.read(EVENT_TOPIC, p, from_offset=since.get(EVENT_TOPIC, {}).get(p, 0)):
                if rec.key in live:
                    yield EVENT_TOPIC, rec.key, rec.event

    def output_topics(self) -> Sequence[str]:
        return (EVENT_TOPIC,)

    def live_runs(self, tape: Tape) -> set[str]:
        """Run ids of the live runs this gateway serves, from `runs`."""
        out = set()
        for p in range(tape.partitions(RUNS_TOPIC)):
            for rec in tape.read(RUNS_TOPIC, p):
                e = rec.event
                if type(e) is RunStarted and self.serves(e):
                    out.add(e.run_id)
        return out

    # ------------------------------------------------------------------ inputs
    def serves(self, manifest: RunStarted) -> bool:
        """A live run on this venue, served inline by its own process or by the standalone gateway."""
        if manifest.mode != "live" or (self.only_run is not None and manifest.run_id != self.only_run):
            return False
        try:
            spec = json.loads(manifest.venue or "{}")
        except ValueError:
            return False
        mode = "inline" if self.only_run is not None else "external"
        return bool(spec.get("name") == self.venue_name and spec.get("gateway", "external") == mode)

    def _run_started(self, manifest: RunStarted) -> list[Output]:
        rid = manifest.run_id
        if rid in self.runs or rid in self.ignored:
            return []
        if not self.serves(manifest):
            self.ignored.add(rid)
            self.held.pop(rid, None)
            return []
        try:
            table = json.loads(manifest.controls or "{}")
            controls = controls_from_config(table)
        except (ValueError, TypeError) as exc:
            log.error("run %s: its controls do not load (%s); its orders are refused", rid, exc)
            controls = controls_from_config({})
            controls.on_event(Control("*", 0, 0, "KILL", None, None, f"controls do not load: {exc}", "gateway"))
        run = self.runs[rid] = _Run(rid, manifest.robot_id, controls, run_tag(rid))
        self.run_of_robot[manifest.robot_id] = rid
        out: list[Output] = []
        for intent in self.held.pop(rid, []):
            out.extend(self._intent(rid, intent))
        del run
        return out

    def _intent(self, rid: str, intent: Any) -> list[Output]:
        run = self.runs.get(rid)
        if run is None:
            if rid not in self.ignored:
                self.held.setdefault(rid, []).append(intent)  # until its manifest is folded
            return []
        if self.intents.seen_before(intent):
            return []  # a second copy of an intent record (a retried append)
        ts = max(intent.ts_event, self.clock)
        t = type(intent)
        if t is not CancelOrder:
            refusal = self._refusal(run, intent)
            if refusal is not None:
                return self._answers([refusal], rid)
            rejection = run.controls.check(intent)
            if rejection is not None:
                return self._answers([rejection], rid)
            if self.check is not None:
                broken = self.check(self.rules, intent)
                if broken is not None:
                    return self._answers([OrderRejected(intent.robot, intent.client_order_id, None, intent.venue,
                                                        intent.instrument, ts, ts, broken.reason, broken.control)],
                                         rid)
        if t is PlaceOrder:
            self.run_of_order[intent.client_order_id] = rid
            run.open[intent.client_order_id] = intent
        return self._execute(run, intent, ts)

    def _execute(self, run: _Run, intent: Any, ts: int) -> list[Output]:
        """Send an intent that passed every check: the paper venue answers now; a real venue's command is
        queued for the sender (its answers come back as reports)."""
        if self.venue is not None:
            return self._answers(self.venue.on_intent(intent, ts), run.run_id)
        assert self.orders is not None
        t = type(intent)
        if t is PlaceOrder:
            command: Command | OrderRejected = self.orders.place(intent, run.run_id, run.tag)
        elif t is ReplaceOrder:
            command = self.orders.replace(intent)
        else:
            command = self.orders.cancel(intent)
        if isinstance(command, OrderRejected):
            return self._answers([command], run.run_id)
        self.outbox.append(command)
        return []

    def _refusal(self, run: _Run, intent: Any) -> OrderRejected | None:
        reason = control = None
        if run.dead:
            reason, control = "the run's heartbeat stopped: orders refused until it returns", "watchdog"
        elif type(intent) is PlaceOrder and intent.client_order_id in self.run_of_order:
            reason, control = f"duplicate client order id {intent.client_order_id}: already placed", "gateway"
        if reason is None:
            return None
        return OrderRejected(intent.robot, intent.client_order_id, None, intent.venue, intent.instrument,
                             intent.ts_event, intent.ts_event, reason, control)

    def _control(self, command: Control) -> list[Output]:
        targets = [r for r in self.runs.values() if command.target in (r.run_id, "*")]
        out: list[Output] = []
        for run in targets:
            if command.param == "watchdog":
                run.dead = command.command == "PAUSE"
                if run.dead:
                    out.extend(self._cancel_all(run, command, f"watchdog: {command.reason}"))
                continue
            if command.param == "restart":  # the runner started again: watch it again
                run.finished = False
                continue
            if command.param == "stop":
                continue  # the runner's own stop: it cancels its orders itself
            # each run has its own controls: aim the command at the run's robot id (named in rejections)
            run.controls.on_event(command._replace(target=run.robot_id))
            if command.command == "KILL":
                out.extend(self._cancel_all(run, command, f"kill: {command.reason}"))
            elif command.command == "FLATTEN":
                out.extend(self._cancel_all(run, command, f"flatten: {command.reason}"))
                out.extend(self._close_positions(run, command))
        return out

    def _cancel_all(self, run: _Run, command: Control, reason: str) -> list[Output]:
        out: list[Output] = []
        ts = max(command.ts_event, self.clock)
        for coid, order in sorted(run.open.items()):
            cancel = CancelOrder(order.robot, coid, order.venue, order.instrument, ts, ts, reason)
            out.extend(self._execute(run, cancel, ts))
        return out

    def _close_positions(self, run: _Run, command: Control) -> list[Output]:
        out: list[Output] = []
        ts = max(command.ts_event, self.clock)
        k = 0
        for (venue, instrument), size in sorted(run.position.items()):
            if venue == "betfair" or abs(size) < 1e-12:
                continue
            coid = f"{run.tag}-x{base36(self.seq)}-{k}"
            k += 1
            order = PlaceOrder(run.robot_id, coid, venue, instrument, ts, ts, "SELL" if size > 0 else "BUY",
                               "MARKET", 0.0, abs(size), "IOC", f"flatten: {command.reason}")
            self.run_of_order[coid] = run.run_id
            run.open[coid] = order
            out.extend(self._execute(run, order, ts))
        return out

    # ------------------------------------------------------------------ outputs
    def _answers(self, answers: Iterable[Event], rid: str | None = None) -> list[Output]:
        out: list[Output] = []
        for answer in answers:
            coid = getattr(answer, "client_order_id", None)
            owner = self.run_of_order.get(coid, rid) if coid is not None else None
            if owner is None:
                owner = self.run_of_robot.get(getattr(answer, "robot", ""), rid)
            if owner is None:
                continue
            run = self.runs.get(owner)
            if run is not None:
                self._track(run, answer)
                run.controls.on_event(answer)
            out.append((EVENT_TOPIC, owner, answer))
        return out

    @staticmethod
    def _track(run: _Run, answer: Event) -> None:
        t = type(answer)
        if t is OrderFilled:
            fill: OrderFilled = answer  # type: ignore[assignment]
            key = (fill.venue, fill.instrument)
            signed = fill.size if fill.side == "BUY" else -fill.size
            run.position[key] = run.position.get(key, 0.0) + signed
            if fill.leaves_size <= 0:
                run.open.pop(fill.client_order_id, None)
                run.accepted.discard(fill.client_order_id)
        elif t in (OrderCancelled, OrderExpired, BetSettled):
            run.open.pop(answer.client_order_id, None)  # type: ignore[union-attr]
            run.accepted.discard(answer.client_order_id)  # type: ignore[union-attr]
        elif t is OrderAccepted and answer.client_order_id in run.open:  # type: ignore[union-attr]
            run.accepted.add(answer.client_order_id)  # type: ignore[union-attr]
        elif t is OrderRejected and answer.client_order_id not in run.accepted:  # type: ignore[union-attr]
            run.open.pop(answer.client_order_id, None)  # type: ignore[union-attr]  # the place was refused


class Gateway:
    """A running gateway: the loop, plus the watchdog turning stale heartbeats into journaled verdicts.

    On a real venue (`binance`, `betfair`; or an adapter passed as `real`) it also runs the
    venue's sender (`robots.live.sender`), journals every report the venue gives, reconciles with
    the venue when it starts (`reconcile`), and polls the venue's open orders every `poll_seconds`.
    """

    def __init__(self, tape: str, *, venue: str = "paper", topics: Sequence[str] = (), dead_after: float = 5.0,
                 only_run: str | None = None, poll: float = 0.0005, hold_seconds: float = 0.05,
                 venue_settings: Mapping[str, object] | None = None, real: LiveVenue | None = None,
                 credentials_file: str | None = None, poll_seconds: float = 5.0,
                 check_positions: bool = True) -> None:
        self.uri = tape
        self.venue_name = venue
        self.real: LiveVenue | None = None
        if real is not None or is_real_venue(venue):
            if only_run is not None:
                raise RobotError(f"venue {venue!r}: a run on a real venue is served by `ticktape gateway`, "
                                 "not inline (--gateway external)")
            self.real = real if real is not None else open_real_venue(venue, venue_settings, credentials_file)
        self.tape = open_live_tape(tape)
        self.dead_after = dead_after
        self.market_topics = frozenset(topics)
        self.hold_seconds = hold_seconds
        self.poll_seconds = poll_seconds
        self.check_positions = check_positions
        self._held_since: dict[tuple[int, int], float] = {}
        self._beats = HeartbeatWatcher(tape)
        for topic in (INTENT_TOPIC, EVENT_TOPIC, CONTROLS_TOPIC, RUNS_TOPIC):
            if self.tape.partitions(topic) == 0:
                self.tape.create_topic(topic)
        self.inbox: queue.Queue[OrderReport | AccountReport] = queue.Queue()
        self.sender: VenueSender | None = None
        if self.real is not None:
            self.fold = GatewayFold(None, venue_name=venue, only_run=only_run, orders=VenueOrders(venue),
                                    check=type(self.real).check)
            self.sender = VenueSender(self.real, self._report)
        else:
            self.fold = GatewayFold(live_venue(venue, venue_settings), venue_name=venue, only_run=only_run)
        stream = f"gateway-{venue}" + (f"-{only_run}" if only_run else "")
        self.loop = LiveLoop(self.tape, tape, stream, self.fold,
                             (*topics, RUNS_TOPIC, INTENT_TOPIC, CONTROLS_TOPIC), store=None, poll=poll)
        self._last_watch = 0.0
        self._last_poll = time.monotonic()

    def start(self) -> None:
        """Recover (replay the whole journal) and get ready to follow; on a real venue, reconcile first."""
        t0 = time.perf_counter()
        # every manifest matters (a run may have started just before us); old intents do not
        self.loop.recover(start="latest", earliest=(RUNS_TOPIC,))
        log.info("gateway %s: replayed %d inputs in %.3f s", self.loop.stream, self.loop.replayed,
                 time.perf_counter() - t0)
        if self.real is not None and self.sender is not None:
            self.fold.outbox.clear()  # the replayed past's commands: answered in the journal, or verified below
            self.real.start(self._report)
            self.loop.step([], [rules_event(self.venue_name, _patiently("rules", self.real.rules), time.time_ns())])
            self.reconcile()
            self.sender.start()
            assert self.fold.orders is not None
            self.sender.submit(self.fold.orders.pending())

    def reconcile(self, passes: int = 5) -> None:
        """Compare the venue with the tape before trading; append what the tape lacks; refuse what no one explains.

        The venue's open orders (ticktape's client order ids) and the current state of every order the
        journal holds as not done are journaled as reports (source "reconcile"), so the fold appends
        the fills and ends the tape missed while the gateway was away; each such event is also named
        on `gateway.reconcile`. An open order of a ticktape id this gateway never sent, a position
        that differs from the sum of the fills on the tape (futures), or a spot base asset the account
        holds less of than the runs' long positions in it (`spot_shortfalls`) stops the start with a
        `TicktapeError` naming it (the last two unless `check_positions` is off). So does an order of one of
        this tape's runs that the venue has, in any status, and the journal never sent
        (`LiveVenue.recent_orders`: Binance's latest 500 orders per instrument the runs traded, Betfair's
        unsettled bets): the tape is older than the account, and the runs' re-derived intents would place
        those orders again (unless `check_positions` is off).

        Orders keep filling while this runs, so positions are compared only on a consistent look:
        the account read before and after the orders shows the same positions and balances (no fill
        in between).
        After `passes` looks without one, the comparison is skipped with a warning.
        """
        orders = self.fold.orders
        real = self.real
        assert orders is not None and real is not None
        if self.check_positions:
            unknown = self._unknown_orders_of_our_runs()
            if unknown:
                raise TicktapeError(
                    f"gateway {self.venue_name}: the venue has orders of this tape's runs that the tape does not "
                    f"hold ({', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}): the tape is older than "
                    "the account (restored from a copy, or another tape with the same run ids); their intents "
                    "would be placed again. Start from the tape that sent them, or new run ids (start with "
                    "--no-position-check to trade anyway)")
        for attempt in range(passes):
            if attempt:
                time.sleep(0.2 * attempt)
            before = _patiently("account", real.account)
            after = self._reconcile_pass()
            strangers = sorted(c for c, r in orders.strangers.items() if r.status == "open")
            if strangers:
                raise TicktapeError(f"gateway {self.venue_name}: the venue has open orders this gateway never sent "
                                    f"({', '.join(strangers[:5])}{' ...' if len(strangers) > 5 else ''}): cancel "
                                    "them at the venue, or start the gateway (tape) that owns them")
            if not self.check_positions:
                return
            if (dict(before.positions), dict(before.balances)) != (dict(after.positions), dict(after.balances)):
                continue  # something filled while we looked: look again
            wrong = self._position_mismatches(after)
            if wrong:
                raise TicktapeError(f"gateway {self.venue_name}: positions differ from the fills on the tape: "
                                    f"{'; '.join(wrong)} (start with --no-position-check to trade anyway, e.g. when "
                                    "the account holds positions ticktape did not open)")
            return
        log.warning("gateway %s: positions kept changing during %d looks at the venue; not compared this start",
                    self.venue_name, passes)

    def _unknown_orders_of_our_runs(self) -> list[str]:
        """Client order ids of this tape's runs (by run tag) that the venue has, in any status, on the runs'
        instruments, and that the gateway's journal never sent: sorted."""
        real, orders = self.real, self.fold.orders
        assert real is not None and orders is not None
        tags = {run.tag for run in self.fold.runs.values()}  # and runs whose manifest is not folded yet:
        tags |= {run_tag(rec.event.run_id) for p in range(self.tape.partitions(RUNS_TOPIC))
                 for rec in self.tape.read(RUNS_TOPIC, p)
                 if type(rec.event) is RunStarted and self.fold.serves(rec.event)}
        if not tags:
            return []
        instruments = {o.order.instrument for o in orders.orders.values()}
        instruments |= {i for run in self.fold.runs.values() for (_venue, i) in run.position}
        recent = _patiently("recent orders", functools.partial(real.recent_orders, sorted(instruments)))
        return sorted({r.client_order_id for r in recent if r.client_order_id not in orders.orders
                       and r.client_order_id.split("-", 1)[0] in tags})

    def _reconcile_pass(self) -> AccountReport:
        """One look at the venue: its open orders, our orders not done, its account; all journaled."""
        real, orders = self.real, self.fold.orders
        assert real is not None and orders is not None
        listed = list(_patiently("open orders", real.open_orders))
        seen = {r.client_order_id for r in listed}
        for live in orders.open_orders():
            if live.order.client_order_id not in seen:
                command = Command("verify", live.order, live.order, live.version, live.run_ref)
                found = _patiently(f"query {live.order.client_order_id}", functools.partial(real.query, command))
                if found[-1].status != "unknown":  # unknown: never reached the venue; the sender places it
                    listed.extend(found)
        account = _patiently("account", real.account)
        now = time.time_ns()
        reports = [report_event(replace_source(r, "reconcile"), self.venue_name, now) for r in listed]
        self.loop.step([], [*reports, report_event(account, self.venue_name, now)])
        self._mark_reconciled(self.loop.last_outputs, now)
        return account

    def _position_mismatches(self, account: AccountReport) -> list[str]:
        """"instrument: tape x, venue y" for each position that differs; on a spot account (balances, no
        positions), each base asset the account holds less of than the runs' long positions in it
        (`spot_shortfalls`). Betfair reports neither: nothing is compared."""
        mine: dict[str, float] = {}
        for run in self.fold.runs.values():
            for (_venue, instrument), size in run.position.items():
                mine[instrument] = mine.get(instrument, 0.0) + size
        if not account.positions:
            return spot_shortfalls(mine, account.balances, self.fold.rules.get("symbols") or {})
        return [f"{i}: tape {mine.get(i, 0.0):g}, venue {account.positions.get(i, 0.0):g}"
                for i in sorted(set(mine) | set(account.positions))
                if abs(mine.get(i, 0.0) - account.positions.get(i, 0.0)) > 1e-9]

    def _mark_reconciled(self, outputs: Sequence[Output], now: int) -> None:
        if not outputs:
            return
        marks = [CustomData("gateway.reconciled", getattr(e, "client_order_id", ""), now, now, json.dumps(
            {"run": key, "event": type(e).__name__, "fill_id": getattr(e, "fill_id", None)}, sort_keys=True))
            for _, key, e in outputs]
        if self.tape.partitions(RECONCILE_TOPIC) == 0:
            self.tape.create_topic(RECONCILE_TOPIC)
        self.tape.append(RECONCILE_TOPIC, marks, keys=[m.key for m in marks])
        log.warning("gateway %s: reconciliation appended %d events the tape was missing", self.venue_name, len(marks))

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set."""
        self.loop.start_inputs()
        reader = self.loop.inputs_reader
        assert reader is not None
        self._beats.start()
        runs = self.fold.runs
        held: list[Record] = []
        while not stop.is_set():
            records = held + reader.get(0.002 if held else 0.05)
            records, held = self._market_first(records)
            # An intent of a run declared dead: look at its heartbeat first (a restarted runner beats
            # before it sends anything), so the verdict "alive again" is journaled before the intent.
            recheck = any(r.topic == INTENT_TOPIC and r.key in runs and runs[r.key].dead for r in records)
            self.loop.step(records, self._reports(), before=self.watch(force=recheck))
            if self.sender is not None:
                self._dispatch(self.sender)

    def _report(self, report: OrderReport | AccountReport) -> None:
        """A venue's report (from the sender or a stream thread): to the inbox, and wake the loop for it."""
        self.inbox.put(report)
        reader = self.loop.inputs_reader
        if reader is not None:
            reader.wake()

    def _reports(self) -> list[Event]:
        """The venue's reports since the last step, as journal inputs."""
        out: list[Event] = []
        now = time.time_ns()
        while True:
            try:
                out.append(report_event(self.inbox.get_nowait(), self.venue_name, now))
            except queue.Empty:
                return out

    def _dispatch(self, sender: VenueSender) -> None:
        """Hand the fold's new commands to the sender; poll the venue's open orders now and then."""
        if self.fold.outbox:
            sender.submit(self.fold.outbox)
            self.fold.outbox.clear()
        now = time.monotonic()
        if now - self._last_poll >= self.poll_seconds and sender.idle.is_set():
            self._last_poll = now
            assert self.fold.orders is not None
            orders = self.fold.orders
            asked = orders.open_orders() + (orders.unsettled() if self.real is not None and self.real.settles else [])
            expected = [Command("verify", o.order, o.order, o.version, o.run_ref) for o in asked]
            if expected:
                sender.request_poll(expected)

    def _market_first(self, records: list[Record]) -> tuple[list[Record], list[Record]]:
        """(to fold now, to hold): an intent waits (up to `hold_seconds`) until the venue has the market
        data of its time; the robot decided on it, and the paper venue must not match on an older book.

        The gateway follows its topics in separate threads, so an intent can arrive before the market
        record that caused it. Records of other partitions may overtake (their arrival order is
        arbitrary anyway); within `orders.intent` the order is kept: everything after a held intent
        waits with it.
        """
        if not self.market_topics or not any(r.topic == INTENT_TOPIC for r in records):
            return records, []
        clock = self.fold.clock
        for r in records:
            if r.topic in self.market_topics and r.event.ts_event > clock:
                clock = r.event.ts_event
        now = time.monotonic()
        ready = [r for r in records if r.topic != INTENT_TOPIC]
        held: list[Record] = []
        blocked: set[int] = set()
        for r in records:
            if r.topic != INTENT_TOPIC:
                continue
            key = (r.partition, r.offset)
            first = self._held_since.setdefault(key, now)
            if r.partition in blocked or (clock and r.event.ts_event > clock and now - first < self.hold_seconds):
                blocked.add(r.partition)
                held.append(r)
            else:
                self._held_since.pop(key, None)
                ready.append(r)
        return ready, held

    def watch(self, now: float | None = None, *, force: bool = False) -> list[Event]:
        """Watchdog verdicts due now: a run whose heartbeat is stale is declared dead, and alive again."""
        mono = time.monotonic()
        if now is None and not force and mono - self._last_watch < 0.25:
            return []
        self._last_watch = mono
        wall = time.time_ns() if now is None else int(now * 1e9)
        verdicts: list[Event] = []
        # the watcher keeps every unfinished run's heartbeat fresh (a run with no open orders may
        # place some at any moment); verdicts concern runs with open orders, or declared dead
        self._beats.wanted = [r.run_id for r in self.fold.runs.values() if r.dead or not r.finished]
        watched = [r.run_id for r in self.fold.runs.values() if r.dead or (r.open and not r.finished)]
        for run_id in watched:
            run = self.fold.runs[run_id]
            # the watcher thread's copy, unless asked to look now (a dead run's intent is waiting)
            beat = last_heartbeat(self.tape, run_id) if force else self._beats.beats.get(run_id)
            if beat is None:
                continue
            age = (wall - beat.ts_recv) / 1e9
            status = json.loads(beat.payload).get("status", "running")
            stale = age > self.dead_after and status != "stopped"
            if stale and not run.dead and run.open:
                verdicts.append(Control(run.run_id, self.fold.clock, wall, "PAUSE", "watchdog", None,
                                        f"no heartbeat for {age:.1f} s", "gateway watchdog"))
            elif not stale and run.dead:
                verdicts.append(Control(run.run_id, self.fold.clock, wall, "RESUME", "watchdog", None,
                                        "heartbeat is back", "gateway watchdog"))
        return verdicts

    def caught_up(self) -> bool:
        """Whether every intent on the tape now has been folded (the stop's cancels answered)."""
        ends = self.tape.end_offsets(INTENT_TOPIC)
        return all(self.loop.positions.get((INTENT_TOPIC, p), 0) >= end for p, end in ends.items())

    def close(self) -> None:
        """Stop following and release the tape (and the venue)."""
        self._beats.stop.set()
        if self.sender is not None:
            self.sender.close()
            if self.sender.is_alive():
                self.sender.join(timeout=10)
        if self.real is not None:
            self.real.close()
        self.loop.close()
        self.tape.close()


SPOT_FEE_ALLOWANCE = 0.005
"""Share of a spot long position the account may hold less of than the tape says: Binance may take its fee
in the asset bought (0.1% at the base rate), which the tape's positions (sums of fill sizes) do not deduct."""


def spot_shortfalls(positions: Mapping[str, float], balances: Mapping[str, float],
                    symbols: Mapping[str, Any]) -> list[str]:
    """"BTC: tape long 0.5 (BTCUSDT), venue holds 0.2" for each base asset the account holds less of than the
    runs' long positions in it, less `SPOT_FEE_ALLOWANCE` (pure).

    A spot account's balances include what ticktape never traded, so only this side can be judged: an
    account holding more than the runs bought is normal; one holding less lost what the robots think they
    own (sold or withdrawn by hand, or a tape of another account). `symbols` are the venue rules' symbols
    (`base` asset per instrument); instruments it does not name are not compared.
    """
    need: dict[str, float] = {}
    names: dict[str, list[str]] = {}
    for instrument, size in positions.items():
        base = str((symbols.get(instrument) or {}).get("base") or "")
        if base:
            need[base] = need.get(base, 0.0) + size
            names.setdefault(base, []).append(instrument)
    out = []
    for base in sorted(need):
        have = float(balances.get(base, 0.0))
        if need[base] > 0 and have < need[base] * (1 - SPOT_FEE_ALLOWANCE) - 1e-12:
            out.append(f"{base}: tape long {need[base]:g} ({', '.join(sorted(names[base]))}), venue holds {have:g}")
    return out


RECONCILE_TOPIC = "gateway.reconcile"
"""Names every event a gateway's start-up reconciliation appended to `orders.event` (CustomData)."""


def replace_source(report: OrderReport, source: str) -> OrderReport:
    """The report, marked as coming from `source`."""
    return dataclasses.replace(report, source=source)


def _patiently(what: str, call: Callable[[], T]) -> T:
    """A read-only venue call at start-up, asked again (with backoff) until the venue answers."""
    return retry_call(call, retry_on=(OutcomeUnknown, VenueBusy), delays=backoff_delays(0.2, 5.0, jitter=0.5),
                      on_retry=lambda exc, wait: log.warning("%s: %s; asking again in %.1f s", what, exc, wait))


def paper_topics(uri: str, venue: str = "paper") -> list[str]:
    """The market topics of the live runs a standalone gateway serves (its default `--topics`: the paper
    venue matches against them; on any venue the runs' controls that need market data read them)."""
    tape = open_tape(uri)
    try:
        fold = (GatewayFold(None, venue_name=venue, orders=VenueOrders(venue)) if is_real_venue(venue)
                else GatewayFold(live_venue(venue), venue_name=venue))
        topics: list[str] = []
        for p in range(tape.partitions(RUNS_TOPIC)):
            for rec in tape.read(RUNS_TOPIC, p):
                e = rec.event
                if type(e) is RunStarted and fold.serves(e):
                    topics.extend(t for t in e.topics if t not in topics)
        return topics
    finally:
        tape.close()


class HeartbeatWatcher(threading.Thread):
    """Reads the latest heartbeat of the runs in `wanted` every `interval` s, off the gateway's loop
    (on Kafka a read is a round trip: the loop must not wait for it)."""

    def __init__(self, uri: str, interval: float = 0.25) -> None:
        super().__init__(name="heartbeats", daemon=True)
        self.uri = uri
        self.interval = interval
        self.wanted: list[str] = []
        self.beats: dict[str, CustomData] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        tape = open_tape(self.uri)
        try:
            while not self.stop.wait(self.interval):
                for run_id in list(self.wanted):
                    try:
                        beat = last_heartbeat(tape, run_id)
                    except Exception as exc:  # a broker restarting: the next round reads again
                        log.warning("reading the heartbeat of %s: %s", run_id, exc)
                        continue
                    if beat is not None:
                        self.beats[run_id] = beat
        finally:
            tape.close()


def last_heartbeat(tape: Tape, run_id: str) -> CustomData | None:
    """The latest heartbeat of a live run, or None."""
    event = last_event(tape, heartbeat_topic(run_id))
    return event if type(event) is CustomData else None
