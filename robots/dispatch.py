"""How an event reaches a robot's handler: the one rule `Robot.step` and the `Runner` share.

Every event type is of one of four kinds (`event_kind`):

- **market data**: every type that is none of the three below (trades, quotes, books, bars,
  Betfair books and definitions, custom data, ...). It reaches the robot when it passes the
  subscription filter (`SubscriptionFilter`) and then the robot's `check` gate; the handler is
  the one for its exact type (`HANDLER_FOR`: `CustomData` -> `on_custom`, ...). A type the
  robot has no handler for goes nowhere, but the filter still sees it (it remembers the
  Betfair market definitions), and `check` is not called for it.
- **order answer**: a venue's answer to a robot's intents: the `ANSWER_TYPES`
  (`ORDER_EVENT_TYPES` plus the Betfair venue's `BetSettled` and `MarketSettled`), and any
  other type whose name starts with one of `ANSWER_PREFIXES` (`Order`, `Bet`) and that has a
  `robot` field (a venue's own answers). It reaches the robot only when addressed to it
  (`event.robot == robot.robot_id`), with no filter and no gate; the handler is the one for
  its exact type, else `on_order_update`.
- **Timer**: only when `event.robot == robot.robot_id`; `on_timer`; no filter, no gate.
- **Control**: only when `event.target` is the robot id, `"*"` or `""` (every robot);
  `on_control`; no filter, no gate.

The rule does not depend on where an event comes from: an answer read from the inputs (live,
answers come back on `orders.event`) is treated like one the simulated venue hands the runner
in-process. The runner's in-process deliveries (venue answers, control rejections, timers)
always take the addressed path (`Dispatch.addressed`), whatever their type; one without a
`robot` field (only this robot's venue can have made it) counts as addressed to the robot.

`Dispatch` holds one robot's tables for one run; the runner builds one per run, and
`Robot.step` keeps one in its `Context` (`Context.dispatch`, made on first use), so a caller
that passes the same context to every step filters exactly as the runner does (the filter's
memory of market definitions lives there). The tables are filled lazily: the first event of a
type resolves the type's entry once, later ones cost one dict lookup. The runner inlines
`Dispatch.route` in its hot loop; a property test holds the two to the same deliveries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

from ticktape.events import (
    Bar,
    BetSettled,
    BookDelta,
    BookSnapshot,
    Control,
    CustomData,
    Event,
    MarketBook,
    MarketDefinition,
    MarketSettled,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    Quote,
    Timer,
    Trade,
)

if TYPE_CHECKING:
    from robots.api import Context, Robot, Subscription

__all__ = [
    "ADDRESSED", "ANSWER_PREFIXES", "ANSWER_TYPES", "EVERY_ROBOT", "HANDLER_FOR", "ORDER_EVENT_TYPES", "Addressed",
    "Dispatch", "EventKind", "Handler", "MarketEntry", "SubscriptionFilter", "event_kind",
]

ORDER_EVENT_TYPES: tuple[type[Event], ...] = (OrderAccepted, OrderRejected, OrderFilled, OrderCancelled,
                                               OrderExpired)
"""Venue answers a robot gets in `on_order_update` (venues may add their own types)."""

ANSWER_TYPES: frozenset[type[Event]] = frozenset((*ORDER_EVENT_TYPES, BetSettled, MarketSettled))
"""The order answers known by type: the common ones and the Betfair venue's settlement."""

ANSWER_PREFIXES: tuple[str, ...] = ("Order", "Bet")
"""Another type is an order answer when its name starts with one of these and it has a `robot` field."""

HANDLER_FOR: dict[type[Event], str] = {
    Trade: "on_trade", Quote: "on_quote", BookDelta: "on_book", BookSnapshot: "on_book", Bar: "on_bar",
    MarketBook: "on_market_book", MarketDefinition: "on_market_definition", Timer: "on_timer",
    Control: "on_control", CustomData: "on_custom",
    **{t: "on_order_update" for t in ORDER_EVENT_TYPES},
}
"""Event type -> the name of the robot method that handles exactly that type."""

EVERY_ROBOT: Final = ("*", "")
"""`Control.target` values that address every robot."""

EventKind = Literal["market", "answer", "timer", "control"]
Handler = Callable[[Any, Any, "Context"], Any]
"""A bound robot handler: `(state, event, ctx) -> new state or None`."""
Addressed = Callable[[Any], "Handler | None"]
"""An addressed type's entry: the event -> its handler when the event is for this robot, else None."""
MarketEntry = Handler | None | Literal[False]
"""A market-table value: the handler; None (market data the robot does not handle); `ADDRESSED`."""

ADDRESSED: Final = False
"""Market-table value of a type that is not market data (answers, Timer, Control): see the direct table.

False rather than a sentinel object so the hot loop tells the three values apart with a truth
test (`if entry:` is a handler) and only the rare non-handler values need a second test."""


def _has_field(t: type, name: str) -> bool:
    return name in getattr(t, "_fields", ()) or name in getattr(t, "__dataclass_fields__", {})


def event_kind(t: type) -> EventKind:
    """Which of the module's four kinds the event type `t` is."""
    if t is Timer:
        return "timer"
    if t is Control:
        return "control"
    if t in ANSWER_TYPES:
        return "answer"
    if t not in HANDLER_FOR and t.__name__.startswith(ANSWER_PREFIXES) and _has_field(t, "robot"):
        return "answer"
    return "market"


def _for_targets(handler: Handler, targets: tuple[str, ...]) -> Addressed:
    def entry(event: Any) -> Handler | None:
        return handler if event.target in targets else None
    return entry


def _for_robot(handler: Handler, robot_id: str) -> Addressed:
    def entry(event: Any) -> Handler | None:
        # an in-process answer without a robot field can only be for the runner's one robot
        return handler if getattr(event, "robot", robot_id) == robot_id else None
    return entry


class SubscriptionFilter:
    """Decides whether a market-data event reaches the robot (the venue sees every input).

    Stateful: it remembers, per Betfair market, whether the market's latest `MarketDefinition`
    passed the Betfair fields of the subscription, so it must see every market-data event.
    """

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.instruments = frozenset(sub.instruments)
        self.betfair = bool(sub.event_type_ids or sub.market_types or sub.countries)
        self.markets: dict[str, bool] = {}  # market_id -> passes the Betfair definition filter

    def __call__(self, event: Event) -> bool:
        sub = self.sub
        t = type(event)
        if t is MarketDefinition:
            md: MarketDefinition = event  # type: ignore[assignment]
            self.markets[md.market_id] = ((not sub.event_type_ids or md.event_type_id in sub.event_type_ids)
                                          and (not sub.market_types or md.market_type in sub.market_types)
                                          and (not sub.countries or (md.country_code or "") in sub.countries))
        market_id = getattr(event, "market_id", None)
        if self.instruments:
            key = market_id if market_id is not None else getattr(event, "instrument", None)
            if key is not None and key not in self.instruments:
                return False
        if self.betfair and market_id is not None and not self.markets.get(market_id, False):
            return False
        return not (sub.in_play is not None and t is MarketBook and event.in_play != sub.in_play)  # type: ignore[union-attr]


class Dispatch:
    """One robot's dispatch tables for one run (see the module docstring for the rule).

    `market`: type -> `MarketEntry`, for inputs (the filter and gate apply to handler entries);
    `direct`: type -> `Addressed` or None, for answers, timers and controls (the addressee
    check is folded into the entry). Both are plain dicts filled by `market_entry` and
    `direct_entry` on a type's first event (a plain dict's lookup is the fastest Python has;
    a subclass with `__missing__` costs about 20 ns more per lookup). `gate` and `passes` are
    the robot's `check` (None when not overridden) and the subscription filter (None when the
    subscription has no filter).
    """

    __slots__ = ("_fallback", "_handlers", "direct", "gate", "market", "passes", "robot", "robot_id")

    def __init__(self, robot: Robot[Any, Any]) -> None:
        self.robot = robot
        self.robot_id = robot.robot_id
        self._handlers = robot.handlers()
        # on_order_update when overridden (HANDLER_FOR maps every ORDER_EVENT_TYPES type to it)
        self._fallback = self._handlers.get(OrderFilled)
        self.gate = robot.gate()
        sub = robot.subscriptions()
        self.passes = SubscriptionFilter(sub) if sub.has_filter else None
        self.market: dict[type, MarketEntry] = {}
        self.direct: dict[type, Addressed | None] = {}

    def market_entry(self, t: type) -> MarketEntry:
        """Resolve (once) and cache the market-table entry of type `t`."""
        entry: MarketEntry = self._handlers.get(t) if event_kind(t) == "market" else ADDRESSED
        self.market[t] = entry
        return entry

    def direct_entry(self, t: type) -> Addressed | None:
        """Resolve (once) and cache the direct-table entry of type `t` (any type: answers by default)."""
        handler = self._handlers.get(t)
        if t is not Control and t is not Timer and handler is None:
            handler = self._fallback
        entry: Addressed | None = None
        if handler is None:
            pass
        elif t is Control:
            entry = _for_targets(handler, (self.robot_id, *EVERY_ROBOT))
        else:
            entry = _for_robot(handler, self.robot_id)
        self.direct[t] = entry
        return entry

    def addressed(self, event: Event) -> Handler | None:
        """The handler of an answer, Timer or Control when addressed to this robot, else None."""
        t = type(event)
        try:
            entry = self.direct[t]
        except KeyError:
            entry = self.direct_entry(t)
        return entry(event) if entry is not None else None

    def route(self, event: Event) -> Handler | None:
        """The handler an input event reaches, or None (the filter sees every market-data event)."""
        t = type(event)
        try:
            entry = self.market[t]
        except KeyError:
            entry = self.market_entry(t)
        if entry:
            passes = self.passes
            gate = self.gate
            if (passes is None or passes(event)) and (gate is None or gate(event)):
                return entry
            return None
        if entry is None:
            if self.passes is not None:
                self.passes(event)
            return None
        return self.addressed(event)
