"""The live run's fold: journaled inputs -> the robot (the same dispatch as backtests) -> intents.

Besides the robot state, the fold keeps what the engine itself needs, all derived from the
inputs alone so a replay rebuilds it: the robot's open orders (from its intents and the
venue's answers), the timers it asked for and that have not fired, and the time of the last
input. A stop (an inline `Control` with `param="stop"` addressed to the run) makes the fold
cancel every open order unless the stop says `value="keep"`: those cancels are intents of the
run like the robot's, recorded and audited.

Client order ids: `<run tag>-<seq base 36>-<k>`, where the run tag is 8 characters derived from
the run id. Deterministic from the journal position, unique across runs, at most 32 characters
of `[a-z0-9-]`: inside Betfair's `customerOrderRef` (32) and Binance's `newClientOrderId` (36,
`[.A-Z:/a-z0-9_-]`) limits.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
from collections import deque
from typing import Any

from robots.api import Context, Intent, Robot, RobotError, TimerRequest
from ticktape.codec import default_codec
from ticktape.events import (
    BetSettled,
    CancelOrder,
    Control,
    Event,
    MarketSettled,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    Timer,
)

__all__ = ["DuplicateWindow", "LiveContext", "RunFold", "base36", "run_tag", "stop_control"]

_CLOSING = (OrderCancelled, OrderExpired)
_ANSWERS = (OrderAccepted, OrderRejected, OrderFilled, OrderCancelled, OrderExpired, BetSettled, MarketSettled)
WINDOW = 1000
"""How many recent records a fold remembers to drop exact second copies (Kafka's retried batches)."""


class DuplicateWindow:
    """The digests of the last `size` events of a kind: an exact copy of one of them is a duplicate record.

    Kafka can write a retried batch twice after a broker crash; a second copy of a venue answer
    (or of an intent, at the gateway) must not count twice. Genuine repeats do not exist: every
    answer carries its order's id and a fill its fill id.
    """

    def __init__(self, size: int = WINDOW, digests: list[str] | None = None) -> None:
        self.size = size
        self.order: deque[str] = deque(digests or (), maxlen=size)
        self.seen = set(self.order)
        self._encode = default_codec().encode

    def seen_before(self, event: Event) -> bool:
        """True if `event` is an exact copy of a recent one; else remember it."""
        digest = hashlib.blake2b(self._encode(event), digest_size=10).hexdigest()
        if digest in self.seen:
            return True
        if len(self.order) == self.size:
            self.seen.discard(self.order[0])
        self.order.append(digest)
        self.seen.add(digest)
        return False
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def run_tag(run_id: str) -> str:
    """8 characters of [a-z2-7] from the run id's sha256: the client order id prefix of a live run."""
    return base64.b32encode(hashlib.sha256(run_id.encode()).digest()).decode()[:8].lower()


def base36(n: int) -> str:
    """`n` >= 0 in base 36 (digits, then a-z): client order ids stay short."""
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out))


class LiveContext(Context):
    """A Context whose client order ids fit every venue: `<run tag>-<seq base 36>-<k>`
    (`robots.live.exchange.CLIENT_ORDER_ID`)."""

    __slots__ = ("tag",)

    def __init__(self, robot_id: str, venue: str, tag: str) -> None:
        super().__init__(robot_id, venue)
        self.tag = tag

    def next_client_order_id(self) -> str:
        coid = f"{self.tag}-{base36(self.seq)}-{self._k}"
        self._k += 1
        return coid


def stop_control(run_id: str, ts: int, wall: int, *, keep_orders: bool, reason: str) -> Control:
    """The inline input a stopping runner journals (cancel its open orders unless `keep_orders`)."""
    return Control(run_id, ts, wall, "PAUSE", "stop", "keep" if keep_orders else "cancel", reason, "ticktape run")


class RunFold:
    """One live run's fold. `step(event)` -> the intents to send; everything else is its state."""

    def __init__(self, robot: Robot[Any, Any], run_id: str) -> None:
        self.robot = robot
        self.run_id = run_id
        self.robot_id = robot.robot_id
        self.ctx = LiveContext(robot.robot_id, robot.venue, run_tag(run_id))
        self.state: Any = robot.init_state()
        self.seq = 0
        self.last_ts = 0
        self.open: dict[str, tuple[str, str]] = {}  # client order id -> (venue, instrument)
        self.accepted: set[str] = set()  # open orders the venue accepted (a later rejection is of a replace)
        self.timers: list[tuple[int, int, str, str]] = []  # heap of (ts, order asked, name, payload)
        self._asked = 0
        self.stopped = False
        self.answers = DuplicateWindow()

    # ------------------------------------------------------------------ the fold
    def step(self, event: Event) -> list[Intent]:
        """Fold one input (already journaled); return the intents it caused, in order."""
        t = type(event)
        if isinstance(event, Control) and event.target == self.run_id:
            if event.param == "stop":
                return self._stop(event)
            if event.param == "restart":  # the runner's note to the gateway that it is back
                self.seq += 1
                return []
            event = event._replace(target=self.robot_id)  # the robot knows its robot id, not the run id
        elif t is Timer:
            self._fired(event)  # type: ignore[arg-type]
        elif t in _ANSWERS and self.answers.seen_before(event):
            self.seq += 1
            return []  # a second copy of an answer record
        seq = self.seq
        self.seq += 1
        if event.ts_event > self.last_ts:
            self.last_ts = event.ts_event
        try:
            self.state, intents = self.robot.step(self.state, event, seq, self.ctx)
        except RobotError:
            raise
        except Exception as exc:  # a robot bug: name the input (it is journaled: a restart meets it again)
            raise RobotError(f"run {self.run_id}: robot {self.robot_id} failed on input #{seq} "
                             f"({type(event).__name__} at ts_event {event.ts_event}): {exc!r}") from exc
        if t in _CLOSING or (t is OrderFilled and event.leaves_size <= 0):  # type: ignore[union-attr]
            self.open.pop(event.client_order_id, None)  # type: ignore[union-attr]
            self.accepted.discard(event.client_order_id)  # type: ignore[union-attr]
        elif t is OrderAccepted:
            if event.client_order_id in self.open:  # type: ignore[union-attr]
                self.accepted.add(event.client_order_id)  # type: ignore[union-attr]
        elif t is OrderRejected and event.client_order_id not in self.accepted:  # type: ignore[union-attr]
            self.open.pop(event.client_order_id, None)  # type: ignore[union-attr]  # the place was refused
        for req in self.ctx.timers:
            self._ask(req)
        if intents:
            intents = list(intents)
            for intent in intents:
                if type(intent) is PlaceOrder:
                    self.open[intent.client_order_id] = (intent.venue, intent.instrument)
        return intents

    def _ask(self, req: TimerRequest) -> None:
        heapq.heappush(self.timers, (req.ts, self._asked, req.name, req.payload))
        self._asked += 1

    def _fired(self, timer: Timer) -> None:
        for i, (ts, _, name, payload) in enumerate(self.timers):
            if ts == timer.ts_event and name == timer.name and payload == timer.payload:
                self.timers.pop(i)
                heapq.heapify(self.timers)
                return

    def _stop(self, event: Control) -> list[Intent]:
        self.seq += 1
        self.stopped = True
        if event.value == "keep":
            return []
        ts = max(self.last_ts, event.ts_event)
        return [CancelOrder(self.robot_id, coid, venue, instrument, ts, ts, f"stop: {event.reason}")
                for coid, (venue, instrument) in sorted(self.open.items())]

    def due_timers(self, now: int) -> list[Event]:
        """Timers whose time has come at `now` (ns), oldest first, as the inputs to journal."""
        out: list[Event] = []
        for ts, _, name, payload in sorted(self.timers):
            if ts > now:
                break
            out.append(Timer(self.robot_id, name, ts, now, payload))
        return out

    # ------------------------------------------------------------------ snapshots
    def engine_json(self) -> str:
        """The fold's own state (not the robot's) as JSON."""
        return json.dumps({"seq": self.seq, "last_ts": self.last_ts, "asked": self._asked, "stopped": self.stopped,
                           "open": {k: [*v, k in self.accepted] for k, v in sorted(self.open.items())},
                           "timers": [list(t) for t in sorted(self.timers)], "answers": list(self.answers.order)},
                          sort_keys=True, separators=(",", ":"))

    def state_json(self) -> str:
        """The robot's state as JSON."""
        return self.robot.state_to_json(self.state)

    def restore(self, state_json: str, engine_json: str) -> None:
        """Continue from a snapshot."""
        try:
            engine = json.loads(engine_json)
            self.state = self.robot.state_from_json(state_json)
        except (ValueError, TypeError) as exc:
            raise RobotError(f"run {self.run_id}: the snapshot does not load: {exc}") from exc
        self.seq = int(engine["seq"])
        self.last_ts = int(engine["last_ts"])
        self._asked = int(engine["asked"])
        self.stopped = bool(engine.get("stopped", False))
        self.open = {k: (v[0], v[1]) for k, v in engine["open"].items()}
        self.accepted = {k for k, v in engine["open"].items() if v[2]}
        self.timers = [(int(a), int(b), str(c), str(d)) for a, b, c, d in engine["timers"]]
        heapq.heapify(self.timers)
        self.answers = DuplicateWindow(digests=list(engine.get("answers", [])))
