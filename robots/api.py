"""The Robot API: a robot is a pure fold `step(state, event, seq) -> (state, intents)`.

The class form (`on_trade`, `on_quote`, `on_book`, `on_bar`, `on_market_book`,
`on_order_update`, `on_timer`, `on_control`, and the cheap gate `check`) is sugar over that
one fold: `Robot.step` dispatches on the event's type to the handler, which reads and updates
`state` (in place, or by returning a new state) and emits intents through the `Context`.

Rules a robot follows (enforced where they can be: `robots.purity`, run by the registry, refuses
robot modules that import I/O, clock or randomness modules or call `open`, `hash`, `.now()`...;
the runner serialises the state at start so non-JSON state fails early):
- All mutable data lives in `state`, never on `self` (the robot object holds only params).
- Time is the event's `ts_event` (`ctx.ts`); timers are scheduled in event time (`ctx.set_timer`).
- Randomness only from `Rng` seeded by a parameter and kept in the state.
- Client order ids are `f"{robot_id}-{seq}-{k}"`: robot id, the input's sequence number in the
  run, and the index of the intent within that step, so a replay never makes a second order.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from robots.dispatch import HANDLER_FOR, ORDER_EVENT_TYPES, Dispatch
from robots.sim.base import Intent
from ticktape.errors import TicktapeError
from ticktape.events import (
    Bar,
    BookDelta,
    BookSnapshot,
    CancelOrder,
    Control,
    CustomData,
    Event,
    MarketBook,
    MarketDefinition,
    OrderType,
    PlaceOrder,
    Quote,
    ReplaceOrder,
    Side,
    TimeInForce,
    Timer,
    Trade,
)

__all__ = [
    "ORDER_EVENT_TYPES", "Context", "Intent", "Params", "Rng", "Robot", "RobotError", "StateT",
    "Subscription", "TimerRequest", "parse_param_args",
]

class RobotError(TicktapeError, ValueError):
    """A robot, its parameters or its state break the API's rules (message says which).

    A TicktapeError, so the CLI prints it as one clear line (exit 2) instead of a traceback.
    """


# --------------------------------------------------------------------------- parameters

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(text: str, hint: Any, name: str) -> Any:
    """Parse one `--param` string into the field's declared type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return _coerce(text, args[0], name)
    if origin is tuple:
        item = typing.get_args(hint)[0] if typing.get_args(hint) else str
        return tuple(_coerce(p.strip(), item, name) for p in text.split(";") if p.strip())
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if text not in allowed:
            raise RobotError(f"param {name!r}: {text!r} is not one of {', '.join(map(str, allowed))}")
        return text
    try:
        if hint is bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise RobotError(f"param {name!r}: expected {hint.__name__}, got {text!r}") from None
    if hint is str:
        return text
    raise RobotError(f"param {name!r}: unsupported parameter type {hint!r}")


PT = TypeVar("PT", bound="Params")


@dataclass(frozen=True)
class Params:
    """Base of typed robot parameters: subclass as `@dataclass(frozen=True)` with defaults."""

    @classmethod
    def fields(cls) -> dict[str, Any]:
        """Field name -> resolved type hint."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def parse(cls: type[PT], values: Mapping[str, object] | None = None) -> PT:
        """Build from strings (`--param k=v`) or typed values (a config file); unknown names fail."""
        known = cls.fields()
        kwargs: dict[str, Any] = {}
        for name, value in (values or {}).items():
            if name not in known:
                raise RobotError(f"unknown param {name!r} for {cls.__name__}; known: {', '.join(known) or 'none'}")
            hint = known[name]
            if isinstance(value, str):
                kwargs[name] = _coerce(value, hint, name)
            elif hint is float and isinstance(value, int) and not isinstance(value, bool):
                kwargs[name] = float(value)
            elif isinstance(value, list):
                kwargs[name] = tuple(value)
            else:
                kwargs[name] = value
        params = cls(**kwargs)
        params.validate()
        return params

    def validate(self) -> None:
        """Raise RobotError when the values do not make sense together (override)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), as recorded in the run manifest."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def parse_param_args(args: Iterable[str]) -> dict[str, str]:
    """`["fast=10", "slow=50"]` -> `{"fast": "10", "slow": "50"}` (later ones win)."""
    out: dict[str, str] = {}
    for arg in args:
        name, eq, value = arg.partition("=")
        if not eq or not name.strip():
            raise RobotError(f"--param expects k=v, got {arg!r}")
        out[name.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True)
class Subscription:
    """What a robot reads: topics (their order is the merge tie-break) and a filter.

    Empty filter fields mean "everything". `instruments` matches an event's `instrument`
    (or a Betfair `market_id`); the Betfair fields are matched against the market's latest
    `MarketDefinition` (a market whose definition has not been seen yet does not pass a
    Betfair filter); `in_play` matches `MarketBook.in_play`.
    """

    topics: tuple[str, ...]
    instruments: tuple[str, ...] = ()
    event_type_ids: tuple[str, ...] = ()
    market_types: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    in_play: bool | None = None

    @property
    def has_filter(self) -> bool:
        return bool(self.instruments or self.event_type_ids or self.market_types or self.countries
                    or self.in_play is not None)


# --------------------------------------------------------------------------- determinism helpers


@dataclass
class Rng:
    """A seeded, serialisable random source (64-bit LCG + xorshift output); keep it in the state."""

    state: int

    @classmethod
    def from_seed(cls, seed: int) -> Rng:
        return cls((seed * 0x9E3779B97F4A7C15 + 1) % (1 << 64))

    def random(self) -> float:
        """Uniform in [0, 1)."""
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        x = self.state ^ (self.state >> 29)
        return (x >> 11) / float(1 << 53)


class TimerRequest(typing.NamedTuple):
    """A timer a robot asked for: fire `name` at event time `ts` (ns)."""

    ts: int
    name: str
    payload: str


class Context:
    """What a handler uses to act: the step's time and sequence number, and intent builders.

    The runner reuses one Context for a whole run (resetting it per step), so handlers must not
    keep references to it. It also carries the run's `robots.dispatch.Dispatch` (`dispatch`),
    which holds the subscription filter's memory of market definitions: pass one Context to
    every `Robot.step` of a run to filter as the runner does.
    """

    __slots__ = ("_k", "dispatch", "intents", "robot_id", "seq", "timers", "ts", "venue")

    def __init__(self, robot_id: str, venue: str) -> None:
        self.dispatch: Dispatch | None = None
        """The run's dispatch tables and subscription filter (`Robot.step` makes them on first use)."""
        self.robot_id = robot_id
        self.venue = venue
        self.seq = 0
        self.ts = 0
        self._k = 0
        self.intents: list[Intent] = []
        self.timers: list[TimerRequest] = []

    def reset(self, seq: int, ts: int) -> None:
        """Start a new step (the runner calls this)."""
        self.seq = seq
        self.ts = ts
        self._k = 0
        if self.intents:
            self.intents = []
        if self.timers:
            self.timers = []

    def next_client_order_id(self) -> str:
        """`{robot_id}-{seq}-{k}`: deterministic, unique within the run."""
        coid = f"{self.robot_id}-{self.seq}-{self._k}"
        self._k += 1
        return coid

    def place(self, instrument: str, side: Side, size: float, *, order_type: OrderType = "MARKET",
              price: float = 0.0, time_in_force: TimeInForce = "GTC", venue: str | None = None,
              reason: str = "") -> str:
        """Emit a PlaceOrder; returns its client order id.

        `order_type`: MARKET, LIMIT, LIMIT_MAKER (post-only: refused if it would match on arrival),
        LIMIT_ON_CLOSE (Betfair BSP with a limit price) or STOP_MARKET; README "Order types" says
        which venue takes which.
        """
        coid = self.next_client_order_id()
        ts = self.ts
        self.intents.append(PlaceOrder(self.robot_id, coid, venue or self.venue, instrument, ts, ts, side,
                                       order_type, float(price), float(size), time_in_force, reason))
        return coid

    def buy(self, instrument: str, size: float, price: float | None = None, **kw: Any) -> str:
        """Market buy, or a limit buy when `price` is given."""
        if price is None:
            return self.place(instrument, "BUY", size, **kw)
        return self.place(instrument, "BUY", size, order_type="LIMIT", price=price, **kw)

    def sell(self, instrument: str, size: float, price: float | None = None, **kw: Any) -> str:
        """Market sell, or a limit sell when `price` is given."""
        if price is None:
            return self.place(instrument, "SELL", size, **kw)
        return self.place(instrument, "SELL", size, order_type="LIMIT", price=price, **kw)

    def cancel(self, client_order_id: str, instrument: str, *, venue: str | None = None, reason: str = "") -> None:
        """Emit a CancelOrder for one of this robot's orders."""
        ts = self.ts
        self.intents.append(CancelOrder(self.robot_id, client_order_id, venue or self.venue, instrument, ts, ts,
                                        reason))

    def replace(self, client_order_id: str, instrument: str, side: Side, size: float, price: float, *,
                order_type: OrderType = "LIMIT", time_in_force: TimeInForce = "GTC", venue: str | None = None,
                reason: str = "") -> None:
        """Emit a ReplaceOrder (new price and/or size) for a resting order."""
        ts = self.ts
        self.intents.append(ReplaceOrder(self.robot_id, client_order_id, venue or self.venue, instrument, ts, ts,
                                         side, order_type, float(price), float(size), time_in_force, reason))

    def set_timer(self, name: str, at: int, payload: str = "") -> None:
        """Ask for a `Timer(name)` event at event time `at` (ns; not before the current time)."""
        if at < self.ts:
            raise RobotError(f"timer {name!r} at {at} is in the past (now {self.ts})")
        self.timers.append(TimerRequest(int(at), name, payload))


# --------------------------------------------------------------------------- the robot

P = TypeVar("P", bound=Params)
StateT = TypeVar("StateT")
Handler = Callable[[Any, Any, Context], Any]

_HANDLER_FOR = HANDLER_FOR  # the table lives in robots.dispatch, with the rest of the rule


class Robot(Generic[P, StateT]):
    """Base class of robots. Subclass, set `name`, `params_type`, override `subscriptions`,
    `init_state` and the handlers you need; each handler gets `(state, event, ctx)` and returns
    None (state updated in place) or a new state.
    """

    name: ClassVar[str] = ""
    """Registry name (`ticktape backtest NAME`)."""
    params_type: ClassVar[type[Params]] = Params
    venue: ClassVar[str] = "sim"
    """Default venue of the intents (`PlaceOrder.venue`)."""

    def __init__(self, params: P | None = None, *, robot_id: str | None = None) -> None:
        self.params: P = params if params is not None else typing.cast(P, self.params_type.parse({}))
        if not isinstance(self.params, self.params_type):
            raise RobotError(f"{type(self).__name__} takes {self.params_type.__name__}, got {type(self.params)}")
        self.robot_id = robot_id or self.name or type(self).__name__

    # -- what the robot reads ------------------------------------------------------------
    def subscriptions(self) -> Subscription:
        """Topics and filter (override)."""
        return Subscription(topics=())

    def init_state(self) -> StateT:
        """The state before the first event (override)."""
        raise NotImplementedError(f"{type(self).__name__}.init_state")

    def check(self, event: Event) -> bool:
        """Cheap gate before the handler (like flumine's check_market_book); False skips the event."""
        return True

    # -- handlers (override what you need) ----------------------------------------------
    def on_trade(self, state: StateT, event: Trade, ctx: Context) -> StateT | None:
        """A trade print."""
        return None

    def on_quote(self, state: StateT, event: Quote, ctx: Context) -> StateT | None:
        """Best bid/offer."""
        return None

    def on_book(self, state: StateT, event: BookDelta | BookSnapshot, ctx: Context) -> StateT | None:
        """An order book snapshot or delta."""
        return None

    def on_bar(self, state: StateT, event: Bar, ctx: Context) -> StateT | None:
        """An OHLCV bar (ts_event = close time)."""
        return None

    def on_market_book(self, state: StateT, event: MarketBook, ctx: Context) -> StateT | None:
        """A Betfair market book."""
        return None

    def on_market_definition(self, state: StateT, event: MarketDefinition, ctx: Context) -> StateT | None:
        """A Betfair market definition."""
        return None

    def on_order_update(self, state: StateT, event: Event, ctx: Context) -> StateT | None:
        """One of this robot's orders was accepted, rejected, (partly) filled, cancelled or expired."""
        return None

    def on_timer(self, state: StateT, event: Timer, ctx: Context) -> StateT | None:
        """A timer set with `ctx.set_timer` fired."""
        return None

    def on_control(self, state: StateT, event: Control, ctx: Context) -> StateT | None:
        """An operator command addressed to this robot (the controls act on KILL/PAUSE too)."""
        return None

    def on_custom(self, state: StateT, event: CustomData, ctx: Context) -> StateT | None:
        """Custom data (signals, race data)."""
        return None

    # -- the fold ---------------------------------------------------------------------------
    def handlers(self) -> dict[type[Event], Handler]:
        """Event type -> bound handler, only for the handlers this robot overrides."""
        out: dict[type[Event], Handler] = {}
        for etype, meth in HANDLER_FOR.items():
            if getattr(type(self), meth) is not getattr(Robot, meth):
                out[etype] = getattr(self, meth)
        return out

    def gate(self) -> Callable[[Event], bool] | None:
        """The `check` method if overridden, else None (the runner skips the call)."""
        return self.check if type(self).check is not Robot.check else None

    def step(self, state: StateT, event: Event, seq: int, ctx: Context | None = None) -> tuple[StateT, list[Intent]]:
        """The fold: one input (its run sequence number `seq`) -> new state and the intents.

        The event reaches a handler by the runner's rule (`robots.dispatch`): market data through
        the subscription filter and `check`; answers and timers only when addressed to this robot,
        controls when their target is this robot or every robot. The filter's state (the Betfair
        market definitions seen) is kept in `ctx.dispatch`, so pass the same `ctx` to every step of
        a run to get the runner's deliveries; without a `ctx` each call starts with an empty filter.
        Timer requests are in `ctx.timers` after the call when a context is passed.
        """
        if ctx is None:
            ctx = Context(self.robot_id, self.venue)
        ctx.reset(seq, event.ts_event)
        dispatch = ctx.dispatch
        if dispatch is None or dispatch.robot is not self:
            dispatch = ctx.dispatch = Dispatch(self)
        handler = dispatch.route(event)
        if handler is not None:
            new = handler(state, event, ctx)
            if new is not None:
                state = new
        return state, ctx.intents

    # -- state serialisation ------------------------------------------------------------
    def state_to_json(self, state: StateT) -> str:
        """Deterministic JSON of the state (sorted keys); dataclasses, dicts, lists, numbers, str."""
        return json.dumps(_plain(state), sort_keys=True, separators=(",", ":"), allow_nan=True)

    def state_from_json(self, text: str) -> StateT:
        """Inverse of `state_to_json` (override when the state is not a plain dataclass/dict)."""
        data = json.loads(text)
        template = self.init_state()
        if dataclasses.is_dataclass(template) and not isinstance(template, type):
            return typing.cast(StateT, _rebuild(type(template), data))
        return typing.cast(StateT, data)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise RobotError(f"robot state holds a {type(value).__name__}, which does not serialise to JSON")


def _rebuild(cls: type, data: Any) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        hint = hints[f.name]
        value = data[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _rebuild(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)
