"""Named pre-trade controls: the same objects guard backtests and live trading.

A control is a small object with a `name` and `check(intent, view) -> reason | None`. The
`Controls` object runs them in order on every intent the robot emits; the first that objects
produces an `OrderRejected` whose `control` field names it and whose `reason` says why in
words. `Controls.on_event` keeps the `ControlView` current: positions from fills, open orders
from the intents that passed and the venue's answers, last trade and mid per instrument from
market data, order times per robot (rate windows, event time), and the kill switch / pause
from `Control` events.

Conventions (documented because they are choices):
- Cancels are never blocked: a kill switch must still let a robot pull its orders.
- Position and exposure are *worst case*: the filled position plus every open order on the
  same side, as if they all filled, plus the new order.
- An intent that passes is counted at once as an open (pending) order and in the rate window,
  before the venue acknowledges it, so orders sent within one latency cannot slip past a limit.
  Feeding the same intent to `on_event` later is harmless (recorded once).
- Exposure is priced at the order's limit price, or for market/stop orders at the reference
  price (last trade, else mid); with no price known, the exposure controls reject the order.
- The price band applies to limit and stop prices, not to market orders; with no reference
  price it passes unless `require_reference` is set. The mid comes from quotes, book snapshots
  and Betfair market books (best back/lay); book deltas alone do not move it.
- On Betfair (BUY = back, SELL = lay, size = stake, price = odds) position is net stake on a
  runner and "notional" is stake x odds: the payout, an upper bound of a lay's liability.
- KILL is permanent for the session; PAUSE blocks new orders until RESUME. Target `*` = all robots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from robots.control_view import ALL_ROBOTS, ControlView, OpenOrder
from robots.positions import SCALE, from_units, to_units
from robots.sim.base import Intent
from ticktape.config import read_toml
from ticktape.domain import betfair_instrument
from ticktape.errors import ValidationError
from ticktape.events import (
    BookSnapshot,
    CancelOrder,
    Control,
    Event,
    MarketBook,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    Quote,
    ReplaceOrder,
    Trade,
)

__all__ = [
    "ALL_ROBOTS", "ControlView", "Controls", "ControlsConfig", "KillSwitch", "MaxExposure", "MaxOrderRate",
    "MaxOrderSize", "MaxPosition", "MaxRobotExposure", "OpenOrder", "PreTradeControl", "PriceBand",
    "controls_from_config",
]


class PreTradeControl(Protocol):
    """One named check. Returns a human reason to reject, or None to pass."""

    @property
    def name(self) -> str:
        """The control's name, carried by the rejections it causes."""

    def check(self, intent: PlaceOrder | ReplaceOrder, view: ControlView) -> str | None:
        """Judge `intent` against what `view` knows."""


def _fmt(x: float) -> str:
    return f"{x:g}"


def _limit_for(limits: Mapping[str, float], default: float | None, instrument: str) -> float | None:
    return limits.get(instrument, default)


@dataclass(frozen=True, kw_only=True)
class KillSwitch:
    """Rejects every new order of a killed or paused robot (driven by `Control` events)."""

    name: str = "kill_switch"

    def check(self, intent: PlaceOrder | ReplaceOrder, view: ControlView) -> str | None:
        """Reject while the robot (or every robot) is killed or paused."""
        return view.halted(intent.robot)


@dataclass(frozen=True, kw_only=True)
class MaxOrderSize:
    """Rejects an order larger than `limit` (per-instrument overrides in `per_instrument`)."""

    limit: float | None = None
    per_instrument: Mapping[str, float] = field(default_factory=dict)
    name: str = "max_order_size"

    def check(self, intent: PlaceOrder | ReplaceOrder, view: ControlView) -> str | None:
        """Compare the order size with the limit for its instrument."""
        limit = _limit_for(self.per_instrument, self.limit, intent.instrument)
        if limit is not None and to_units(intent.size) > to_units(limit):
            return f"order size {_fmt(intent.size)} exceeds max order size {_fmt(limit)} for {intent.instrument}"
        return None


@dataclass(frozen=True, kw_only=True)
class MaxPosition:
    """Rejects an order that could take the robot's position in an instrument beyond +/- limit."""

    limit: float | None = None
    per_instrument: Mapping[str, float] = field(default_factory=dict)
    name: str = "max_position"

    def check(self, intent: PlaceOrder | ReplaceOrder, view: ControlView) -> str | None:
        """Worst-case position (fills + same-side open orders + this order) against the limit."""
        limit = _limit_for(self.per_instrument, self.limit, intent.instrument)
        if limit is None:
            return None
        worst = view.worst_case_u(intent)
        if abs(worst) > to_units(limit) and (worst > 0) == (intent.side == "BUY"):
            return (
                f"{intent.side} {_fmt(intent.size)} could take the position in {intent.instrument} to "
                f"{_fmt(from_units(worst))}, beyond max position {_fmt(limit)}"
            )
        return None


def _order_price(intent: PlaceOrder | ReplaceOrder, view: ControlView) -> float | None:
    if intent.order_type in ("LIMIT", "LIMIT_MAKER", "LIMIT_ON_CLOSE") and intent.price > 0:
        return intent.price
    return view.reference_price(intent.instrument)


@dataclass(frozen=True, kw_only=True)
class MaxExposure:
    """Rejects an order whose worst-case notional in its instrument would exceed `limit`."""

    limit: float | None = None
    per_instrument: Mapping[str, float] = field(default_factory=dict)
    name: str = "max_exposure"

    def check(self, intent: PlaceOrder | ReplaceOrder, view: ControlView) -> str | None:
        """Worst-case position x order (or reference) price against the notional limit."""
        limit = _limit_for(self.per_instrument, self.limit, intent.instrument)
        if limit is None:
            return None
        price = _order_price(intent, view)
        if price is None:
            return f"no price known for {intent.instrument} to value the exposure of a {intent.order_type} order"
        worst = view.worst_case_u(intent)
        if (worst > 0) != (intent.side == "BUY"):
            return None  # the order reduces exposure on its side
        exposure = abs(worst) * to_units(price)
        if exposure > to_units(limit) * SCALE:
            return (
                f"exposure in {intent.instrument} could reach {_fmt(exposure / SCALE / SCALE)}, "
                f"beyond max exposure {_fmt(limit)}"
            )
        return None


@dataclass(frozen=True, kw_only=True)
class MaxRobotExposure:
    """Rejects an order if the robot's worst-case notional over all instruments would exceed `limit`."""

    limit: float
    name: str = "max_robot_exposure"

    def check(self, intent: PlaceOrder | ReplaceOrder, view: ControlView) -> str | None:
        """Sum over instruments of |worst-case position| x price, with this order included."""
        price = _order_price(intent, view)
        if price is None:
            return f"no price known for {intent.instrument} to value the exposure of a {intent.order_type} order"
        total = abs(view.worst_case_u(intent)) * to_units(price)
        for inst in sorted(view.instruments_of(intent.robot) - {intent.instrument}):
            ref = view.reference_price(inst)
            if ref is None:
                continue  # nothing to value it with; the per-instrument control guards it
            pos = view.position_u(intent.robot, inst)
            worst = max(
                abs(pos + view.open_u(intent.robot, inst, "BUY")), abs(pos - view.open_u(intent.robot, inst, "SELL"))
            )
            total += worst * to_units(ref)
        if total > to_units(self.limit) * SCALE:
            reach = _fmt(total / SCALE / SCALE)
            return f"robot exposure could reach {reach}, beyond max robot exposure {_fmt(self.limit)}"
        return None


@dataclass(frozen=True, kw_only=True)
class MaxOrderRate:
    """Rejects an order when the robot already sent `max_orders` within the last `window_ns` (event time)."""

    max_orders: int
    window_ns: int = 1_000_000_000
    name: str = "max_order_rate"

    def check(self, intent: PlaceOrder | ReplaceOrder, view: ControlView) -> str | None:
        """Count places and replaces in (ts - window, ts]."""
        sent = view.recent_orders(intent.robot, intent.ts_event, self.window_ns)
        if sent >= self.max_orders:
            return (
                f"{sent} orders in the last {self.window_ns / 1e9:g}s reach max order rate "
                f"{self.max_orders} per {self.window_ns / 1e9:g}s"
            )
        return None


@dataclass(frozen=True, kw_only=True)
class PriceBand:
    """Rejects a limit/stop price more than `pct` percent away from the last trade (or the mid)."""

    pct: float
    reference: str = "last_trade"
    """`last_trade` (falls back to mid) or `mid` (falls back to last trade)."""
    require_reference: bool = False
    name: str = "price_band"

    def check(self, intent: PlaceOrder | ReplaceOrder, view: ControlView) -> str | None:
        """Compare the order price with reference x (1 +/- pct/100)."""
        if intent.order_type == "MARKET":
            return None
        inst = intent.instrument
        if self.reference == "mid":
            ref, label = (view.mid.get(inst), "mid") if inst in view.mid else (view.last_trade.get(inst), "last trade")
        else:
            ref, label = (
                (view.last_trade.get(inst), "last trade") if inst in view.last_trade else (view.mid.get(inst), "mid")
            )
        if ref is None:
            return f"no reference price for {inst} to check the price band" if self.require_reference else None
        # Exact comparison in units: |price - ref| * 100 > ref * pct.
        if abs(to_units(intent.price) - to_units(ref)) * 100 * SCALE > to_units(ref) * to_units(self.pct):
            return (
                f"price {_fmt(intent.price)} is more than {_fmt(self.pct)}% away from the {label} {_fmt(ref)} of {inst}"
            )
        return None


_NO_MARKET_DATA = (KillSwitch, MaxOrderSize, MaxPosition, MaxOrderRate)
"""Built-in controls that never look at prices."""

_NO_ORDER_STATE = (KillSwitch, MaxOrderSize, PriceBand)
"""Built-in controls that never look at positions, open orders or order times (the view's order fold)."""


class Controls:
    """The ordered set of controls plus the view they share; the runner's single entry point."""

    def __init__(self, controls: Iterable[PreTradeControl] = ()) -> None:
        self.controls: tuple[PreTradeControl, ...] = tuple(controls)
        names = [c.name for c in self.controls]
        if len(names) != len(set(names)):
            raise ValueError(f"control names must be unique, got {names}")
        self.view = ControlView()
        view = self.view
        windows = [c.window_ns for c in self.controls if isinstance(c, MaxOrderRate)]
        view.rate_window_ns = max(windows) if windows else None
        self._handlers: dict[type, Callable[[Any], None]] = {Control: view.on_control}
        # Orders and fills are followed only when a control reads positions, open orders or order
        # times: the kill switch, sizes and price bands alone (the default is the kill switch) then
        # cost nothing per order beyond their own checks. Controls of unknown classes are assumed to.
        self.tracks_orders: bool = any(not isinstance(c, _NO_ORDER_STATE) for c in self.controls)
        """Whether `view` folds fills, order events and passing intents (else its positions and open
        orders stay empty: no configured control reads them)."""
        if self.tracks_orders:
            self._handlers.update({
                OrderFilled: view.on_fill,
                OrderAccepted: self._on_accepted,
                OrderCancelled: self._on_closed,
                OrderExpired: self._on_closed,
                OrderRejected: self._on_rejected,
                PlaceOrder: view.record_intent,
                ReplaceOrder: view.record_intent,
            })
        # Market data is followed only when a control may price with it: the runner calls `on_event`
        # on every input, so the size/position/rate/kill-only set costs nothing per market event.
        # Controls of unknown classes are assumed to need it.
        if any(not isinstance(c, _NO_MARKET_DATA) for c in self.controls):
            self._handlers.update({
                Trade: self._on_trade,
                Quote: self._on_quote,
                BookSnapshot: self._on_book,
                MarketBook: self._on_market_book,
            })
        self.needs_market_data: bool = Trade in self._handlers
        """Whether any control prices with market data (trades, quotes, books); when False the runner
        may skip feeding market events to `on_event` (order events and commands still count)."""

    def check(self, intent: Intent) -> OrderRejected | None:
        """Run every control on `intent`; the first objection becomes an `OrderRejected`.

        A passing place/replace is recorded in the view at once (open order, rate window) when a control reads them.
        """
        if isinstance(intent, CancelOrder):
            return None
        view = self.view
        view._worst = None  # the view may have changed since the last check
        for control in self.controls:
            reason = control.check(intent, view)
            if reason is not None:
                return OrderRejected(
                    robot=intent.robot,
                    client_order_id=intent.client_order_id,
                    venue_order_id=None,
                    venue=intent.venue,
                    instrument=intent.instrument,
                    ts_event=intent.ts_event,
                    ts_recv=intent.ts_recv,
                    reason=reason,
                    control=control.name,
                )
        if self.tracks_orders:
            view.record_intent(intent)
        return None

    @property
    def event_types(self) -> frozenset[type]:
        """The event types `on_event` looks at (a caller may skip the others)."""
        return frozenset(self._handlers)

    def on_event(self, event: Event) -> None:
        """Keep the view current; any event type is accepted (unknown ones are ignored)."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    # -- handlers --------------------------------------------------------------------------
    def _on_accepted(self, event: OrderAccepted) -> None:
        order = self.view.open_orders.get((event.robot, event.client_order_id))
        if order is not None:
            order.accepted = True
            order.previous = None

    def _on_closed(self, event: OrderCancelled | OrderExpired) -> None:
        self.view.drop_open((event.robot, event.client_order_id))

    def _on_rejected(self, event: OrderRejected) -> None:
        # A control's own rejection changed nothing in the view (only passing intents are recorded);
        # a venue rejection undoes what the rejected intent did: a place is forgotten, a replace
        # restores the version before it, and a rejected cancel (or replace) leaves an accepted
        # order live. (A cancel that overtakes its place and is rejected is taken for the place.)
        if event.control is not None:
            return
        key = (event.robot, event.client_order_id)
        order = self.view.open_orders.get(key)
        if order is None:
            return
        if order.previous is not None:
            self.view.set_open(key, order.previous)
        elif not order.accepted:
            self.view.drop_open(key)

    def _on_trade(self, event: Trade) -> None:
        self.view.last_trade[event.instrument] = event.price

    def _on_quote(self, event: Quote) -> None:
        if event.bid_size > 0 and event.ask_size > 0:
            self.view.mid[event.instrument] = (event.bid_price + event.ask_price) / 2

    def _on_book(self, event: BookSnapshot) -> None:
        bids = [lv.price for lv in event.bids if lv.size > 0]
        asks = [lv.price for lv in event.asks if lv.size > 0]
        if bids and asks:
            self.view.mid[event.instrument] = (max(bids) + min(asks)) / 2

    def _on_market_book(self, event: MarketBook) -> None:
        # Betfair: instrument '<market_id>:<selection_id>[:<handicap>]'; mid between best back and best lay odds.
        for runner in event.runners:
            inst = betfair_instrument(event.market_id, runner.selection_id, runner.handicap)
            if runner.last_price_traded is not None:
                self.view.last_trade[inst] = runner.last_price_traded
            backs = [lv.price for lv in runner.available_to_back if lv.size > 0]
            lays = [lv.price for lv in runner.available_to_lay if lv.size > 0]
            if backs and lays:
                self.view.mid[inst] = (max(backs) + min(lays)) / 2


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ControlsConfig:
    """The `[controls]` table. Numbers apply to every instrument; a table gives per-instrument
    limits with an optional `default`, e.g. `max_position = {default = 10, BTCUSDT = 1}`."""

    max_order_size: float | Mapping[str, float] | None = None
    max_position: float | Mapping[str, float] | None = None
    max_exposure: float | Mapping[str, float] | None = None
    max_robot_exposure: float | None = None
    max_orders: int | None = None
    orders_window_ns: int = 1_000_000_000
    price_band_pct: float | None = None
    price_band_reference: str = "last_trade"
    price_band_require_reference: bool = False
    kill_switch: bool = True

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, where: str = "[controls]") -> ControlsConfig:
        """Validate a dict (e.g. a parsed TOML table); unknown keys and bad values name the key."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ValidationError(f"unknown control setting (known: {', '.join(sorted(known))})", where=where,
                                      field=key)
            kwargs[key] = _validate(key, value, where)
        if kwargs.get("price_band_reference", "last_trade") not in ("last_trade", "mid"):
            raise ValidationError("must be 'last_trade' or 'mid'", where=where, field="price_band_reference")
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | Path, *, section: str = "controls") -> ControlsConfig:
        """Read the `[controls]` table of a TOML file (an absent table = no limits but the kill switch)."""
        doc = read_toml(path, "controls file")
        return cls.from_mapping(doc.get(section, {}), where=f"{path} [{section}]")

    def build(self) -> Controls:
        """The `Controls` these settings describe (kill switch first, then cheap to costly)."""
        out: list[PreTradeControl] = []
        if self.kill_switch:
            out.append(KillSwitch())
        for cls_, value in ((MaxOrderSize, self.max_order_size), (MaxPosition, self.max_position),
                            (MaxExposure, self.max_exposure)):
            if value is None:
                continue
            if isinstance(value, Mapping):
                per = {k: float(v) for k, v in value.items() if k != "default"}
                default = value.get("default")
                out.append(cls_(limit=None if default is None else float(default), per_instrument=per))
            else:
                out.append(cls_(limit=float(value)))
        if self.max_robot_exposure is not None:
            out.append(MaxRobotExposure(limit=float(self.max_robot_exposure)))
        if self.max_orders is not None:
            out.append(MaxOrderRate(max_orders=self.max_orders, window_ns=self.orders_window_ns))
        if self.price_band_pct is not None:
            out.append(PriceBand(pct=self.price_band_pct, reference=self.price_band_reference,
                                 require_reference=self.price_band_require_reference))
        return Controls(out)


def _validate(key: str, value: Any, where: str) -> Any:
    if key in ("max_order_size", "max_position", "max_exposure") and isinstance(value, Mapping):
        for inst, v in value.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValidationError(f"limit for {inst!r} must be a non-negative number, got {v!r}", where=where,
                                      field=key)
        return dict(value)
    if key in ("max_order_size", "max_position", "max_exposure", "max_robot_exposure", "price_band_pct"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValidationError(f"must be a non-negative number, got {value!r}", where=where, field=key)
        return float(value)
    if key in ("max_orders", "orders_window_ns"):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValidationError(f"must be a positive integer, got {value!r}", where=where, field=key)
        return value
    if key in ("price_band_require_reference", "kill_switch"):
        if not isinstance(value, bool):
            raise ValidationError(f"must be true or false, got {value!r}", where=where, field=key)
        return value
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {value!r}", where=where, field=key)
    return value


def controls_from_config(table: Mapping[str, Any] | None) -> Controls:
    """Build `Controls` from a `[controls]` table (None or empty = kill switch only)."""
    return ControlsConfig.from_mapping(table or {}).build()
