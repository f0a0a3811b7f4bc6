"""What the pre-trade controls know: a fold of fills, order events, market data and commands.

Kept apart from the controls themselves (`robots.controls`) so each stays small; `Controls`
owns one `ControlView` and feeds it every event.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from robots.positions import to_units
from robots.sim.base import Intent
from ticktape.events import Control, OrderFilled, PlaceOrder, ReplaceOrder

ALL_ROBOTS = "*"


@dataclass(slots=True)
class OpenOrder:
    """An order the controls consider live (sent, accepted or partially filled)."""

    robot: str
    instrument: str
    side: str
    order_type: str
    price: float
    size_u: int
    leaves_u: int
    accepted: bool = False
    previous: OpenOrder | None = None
    """The version before a pending replace, restored if the venue rejects the replace."""


class ControlView:
    """What the controls know: the fold of fills, order events, market data and commands."""

    def __init__(self) -> None:
        # Controls read positions as quantities only (`position_u`, `instruments_of`): the view folds
        # each fill's signed size in units, exactly what `robots.positions.Position.quantity` holds,
        # without booking cash, cost and marks a second time (the run's ledger books those).
        self.positions: dict[tuple[str, str], int] = {}
        """Signed filled quantity in units (1e-9) per (robot, instrument)."""
        self.open_orders: dict[tuple[str, str], OpenOrder] = {}
        self.last_trade: dict[str, float] = {}
        self.mid: dict[str, float] = {}
        self.order_times: dict[str, deque[int]] = {}
        self.killed: set[str] = set()
        self.paused: set[str] = set()
        self.kill_reasons: dict[str, str] = {}
        self.rate_window_ns: int | None = None
        """Order times are kept only this long (set by `Controls` from its rate controls; None = not kept)."""
        self._open_by: dict[tuple[str, str], dict[str, OpenOrder]] = {}
        self._worst: tuple[object, int] | None = None

    # -- queries ---------------------------------------------------------------------------
    def position_u(self, robot: str, instrument: str) -> int:
        """Filled signed position of `robot` in `instrument`, in units (1e-9)."""
        return self.positions.get((robot, instrument), 0)

    def open_u(self, robot: str, instrument: str, side: str, exclude: str | None = None) -> int:
        """Sum of leaves of `robot`'s open orders on `side` of `instrument` (units)."""
        orders = self._open_by.get((robot, instrument))
        if not orders:
            return 0
        return sum(o.leaves_u for cid, o in orders.items() if o.side == side and cid != exclude)

    def reference_price(self, instrument: str) -> float | None:
        """Last trade price, else mid, else None."""
        price = self.last_trade.get(instrument)
        return price if price is not None else self.mid.get(instrument)

    def instruments_of(self, robot: str) -> set[str]:
        """Instruments where `robot` has a position or an open order."""
        out = {inst for (r, inst), q in self.positions.items() if r == robot and q}
        out.update(inst for (r, inst), orders in self._open_by.items() if r == robot and orders)
        return out

    def worst_case_u(self, intent: PlaceOrder | ReplaceOrder) -> int:
        """Signed position if the robot's open orders on the intent's side and the intent all fill."""
        cached = self._worst
        if cached is not None and cached[0] is intent:
            return cached[1]
        exclude = intent.client_order_id if isinstance(intent, ReplaceOrder) else None
        pos = self.position_u(intent.robot, intent.instrument)
        same_side = self.open_u(intent.robot, intent.instrument, intent.side, exclude)
        new = to_units(intent.size)
        if isinstance(intent, ReplaceOrder):
            old = self.open_orders.get((intent.robot, intent.client_order_id))
            if old is not None:
                new = max(0, new - (old.size_u - old.leaves_u))
        worst = pos + same_side + new if intent.side == "BUY" else pos - same_side - new
        self._worst = (intent, worst)
        return worst

    def halted(self, robot: str) -> str | None:
        """Why `robot` may not send new orders (killed or paused), or None."""
        for target in (robot, ALL_ROBOTS):
            if target in self.killed:
                return f"kill switch engaged for {target}: {self.kill_reasons.get(target) or 'no reason given'}"
        for target in (robot, ALL_ROBOTS):
            if target in self.paused:
                return f"trading paused for {target}"
        return None

    def recent_orders(self, robot: str, now: int, window_ns: int) -> int:
        """How many orders `robot` sent in (now - window_ns, now]."""
        times = self.order_times.get(robot)
        if not times:
            return 0
        while times and times[0] <= now - window_ns:
            times.popleft()
        return len(times)

    # -- updates ---------------------------------------------------------------------------
    def record_intent(self, intent: Intent) -> None:
        """Count an intent that passed the controls (idempotent per order and version)."""
        key = (intent.robot, intent.client_order_id)
        if isinstance(intent, PlaceOrder):
            if key in self.open_orders:
                return
            size_u = to_units(intent.size)
            self.set_open(key, OpenOrder(
                intent.robot, intent.instrument, intent.side, intent.order_type, intent.price, size_u, size_u
            ))
        elif isinstance(intent, ReplaceOrder):
            old = self.open_orders.get(key)
            if old is None:
                return
            size_u = to_units(intent.size)
            if old.previous is not None and old.size_u == size_u and old.price == intent.price:
                return
            filled = old.size_u - old.leaves_u
            self.set_open(key, OpenOrder(
                old.robot, old.instrument, intent.side, intent.order_type, intent.price, size_u,
                max(0, size_u - filled), old.accepted, old,
            ))
        else:
            return
        if self.rate_window_ns is not None:
            times = self.order_times.setdefault(intent.robot, deque())
            times.append(intent.ts_event)
            while times[0] <= intent.ts_event - self.rate_window_ns:  # keeps memory flat over a run
                times.popleft()

    def set_open(self, key: tuple[str, str], order: OpenOrder) -> None:
        """Insert or replace an open order (keeps the per robot and instrument index)."""
        self.open_orders[key] = order
        self._open_by.setdefault((order.robot, order.instrument), {})[key[1]] = order

    def drop_open(self, key: tuple[str, str]) -> None:
        """Forget an open order (closed or rejected)."""
        order = self.open_orders.pop(key, None)
        if order is not None:
            by = self._open_by.get((order.robot, order.instrument))
            if by is not None:
                by.pop(key[1], None)
                if not by:
                    del self._open_by[(order.robot, order.instrument)]

    def on_fill(self, fill: OrderFilled) -> None:
        """Book a fill: position, and the order's leaves."""
        size_u = to_units(fill.size)
        held = (fill.robot, fill.instrument)
        self.positions[held] = self.positions.get(held, 0) + (size_u if fill.side == "BUY" else -size_u)
        key = (fill.robot, fill.client_order_id)
        order = self.open_orders.get(key)
        if order is not None:
            order.leaves_u = to_units(fill.leaves_size)
            order.accepted = True
            if order.leaves_u <= 0:
                self.drop_open(key)

    def on_control(self, event: Control) -> None:
        """Apply an operator command (KILL, PAUSE, RESUME; others are not the controls' business)."""
        if event.command == "KILL":
            self.killed.add(event.target)
            self.kill_reasons[event.target] = event.reason
        elif event.command == "PAUSE":
            self.paused.add(event.target)
        elif event.command == "RESUME":
            self.paused.discard(event.target)
            if event.target == ALL_ROBOTS:
                self.paused.clear()
