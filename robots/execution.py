"""The execution port: where a fold's intents go, and how the answers come back.

One fold (the robot through `robots.dispatch`, the clock, the controls) serves backtests,
replays, audits and live runs; what differs is the port its intents go through:

- `SimulatedExecution` (backtests, replays, audits): a simulated venue in the same process.
  `submit` returns the venue's answers at once; the runner delivers them to the robot at their
  event time, after applying the venue's latency (`latency_ns`) and feeding it the market data
  (`on_market`).
- `TapeExecution` (live runs, `robots.live`): `submit` appends the intent to the run's
  outgoing batch for `orders.intent` and returns nothing; the gateway's answers come back as
  inputs from `orders.event`, through the run's journal like every other input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from robots.sim.base import Intent, SimVenue
from ticktape.events import Event

__all__ = ["ExecutionPort", "SimulatedExecution", "TapeExecution"]


class ExecutionPort(Protocol):
    """Sends a fold's intents; answers known at once are returned, the others come back as inputs."""

    def submit(self, intent: Intent, ts: int) -> Sequence[Event]:
        """Send `intent` (arriving at event time `ts`); return the answers known now (maybe none)."""


class SimulatedExecution:
    """A simulated venue in process: answers at once, in event time."""

    def __init__(self, venue: SimVenue) -> None:
        self.venue = venue
        self.latency_ns = venue.latency_ns
        self.on_market = venue.on_market

    def submit(self, intent: Intent, ts: int) -> Sequence[Event]:
        return self.venue.on_intent(intent, ts)


class TapeExecution:
    """A live run's port: intents are collected for `orders.intent` (key = run id), answers come back later."""

    def __init__(self, topic: str, run_id: str) -> None:
        self.topic = topic
        self.run_id = run_id
        self.outbox: list[tuple[str, str, Event]] = []

    def submit(self, intent: Intent, ts: int) -> Sequence[Event]:
        self.outbox.append((self.topic, self.run_id, intent))
        return ()

    def take(self) -> list[tuple[str, str, Event]]:
        """The intents submitted since the last call, in order (the loop appends them in one batch)."""
        out, self.outbox = self.outbox, []
        return out
