"""The simulated-venue port. Crypto and Betfair venues implement it; the runner drives it.

A simulated venue is pure and deterministic: its only inputs are recorded market events
and intents, each at an event time; its only outputs are order events (`OrderAccepted`,
`OrderRejected`, `OrderFilled`, `OrderCancelled`, `OrderExpired`, and venue-specific
events such as Betfair settlement), each stamped with the event time at which it happened
and a reason. Nothing is filled that the recorded market could not have filled.

Latency is applied by the runner: an intent emitted by a robot while processing an event
at time T reaches the venue at `T + venue.latency_ns(intent)`; the runner first feeds the
venue every market event with `ts_event <= arrival`, then calls `on_intent`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeAlias

from ticktape.events import (
    CancelOrder,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    ReplaceOrder,
)

Intent: TypeAlias = PlaceOrder | CancelOrder | ReplaceOrder
"""What robots emit."""

OrderEvent: TypeAlias = OrderAccepted | OrderRejected | OrderFilled | OrderCancelled | OrderExpired
"""What venues answer (a venue may add its own event types, e.g. settlement)."""

INTENT_TYPES = (PlaceOrder, CancelOrder, ReplaceOrder)


class SimVenue(Protocol):
    """A deterministic matching engine over recorded market data."""

    def latency_ns(self, intent: Intent) -> int:
        """How long `intent` takes to reach the venue (place, cancel, replace may differ)."""

    def on_market(self, event: Event) -> Sequence[Event]:
        """Take in one recorded market event (at its `ts_event`); return the order events it
        causes: fills of resting orders, cancels on suspension or close, settlement."""

    def on_intent(self, intent: Intent, arrival_ts: int) -> Sequence[Event]:
        """Process an intent arriving at `arrival_ts`; return the venue's answers."""
