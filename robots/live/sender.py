"""The gateway's edge to a real venue: one thread sends commands, resolves unknown outcomes, polls.

The fold decides (`robots.live.venue_orders`); this thread acts, one command at a time in the
order given (a cancel is never sent before the place it cancels is resolved), and puts every
report the venue gives into the gateway's inbox, from where the loop journals and folds it.

- Unknown outcome is not failure: when a call raises `OutcomeUnknown`, the order is looked up
  (`LiveVenue.query`) until the venue answers, and the command is sent again only if it is still
  needed: a place the venue does not have, a cancel of an order still open, a replacement of an
  order not over (replacing is idempotent at the venues). Waits between attempts come from
  `ticktape.retry` (backoff with jitter).
- A refusal to run the call (`VenueBusy`: rate limit) waits `retry_after` and sends again.
- Any other failure of a call (an answer the adapter could not read, a bug) is taken as an unknown
  outcome too, and logged with its traceback: the order is looked up, never dropped.
- `verify` (after a restart) is a query first, and a send only if the venue lacks the order (or,
  for a replacement, again: replacing is idempotent at the venues, so one already made is reported).
- A poll (`request_poll`) lists the venue's open orders and queries the orders the gateway
  still thinks open that the list lacks: fills and ends arrive even if the stream went silent.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from robots.live.exchange import DONE, AccountReport, Command, LiveVenue, OrderReport, OutcomeUnknown, VenueBusy
from ticktape.retry import backoff_delays

__all__ = ["Poll", "VenueSender"]

log = logging.getLogger("ticktape.gateway")

Report = OrderReport | AccountReport


@dataclass(frozen=True)
class Poll:
    """Ask the venue for its open orders, and about these commands' orders if it does not list them."""

    expected: tuple[Command, ...]


class VenueSender(threading.Thread):
    """Sends `Command`s to a `LiveVenue` and delivers the reports to `sink` (see the module docstring)."""

    def __init__(self, venue: LiveVenue, sink: Callable[[Report], None], *, first_wait: float = 0.2,
                 max_wait: float = 5.0) -> None:
        super().__init__(name=f"sender-{venue.name}", daemon=True)
        self.venue = venue
        self.sink = sink
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.queue: queue.Queue[Command | Poll | None] = queue.Queue()
        self.stop = threading.Event()
        self.idle = threading.Event()  # set while nothing is queued or being sent
        self.idle.set()
        self.unknown_outcomes = 0  # calls whose outcome had to be looked up (for the operator)
        self.sent = 0

    def submit(self, commands: Sequence[Command]) -> None:
        """Queue commands (from the gateway loop)."""
        for c in commands:
            self.idle.clear()
            self.queue.put(c)

    def request_poll(self, expected: Sequence[Command]) -> None:
        """Queue a poll of the venue's open orders (see the module docstring)."""
        self.idle.clear()
        self.queue.put(Poll(tuple(expected)))

    def close(self) -> None:
        """Stop after the command being sent (the rest stay unsent: a restart verifies them)."""
        self.stop.set()
        self.queue.put(None)

    def run(self) -> None:
        while not self.stop.is_set():
            item = self.queue.get()
            if item is None:
                break
            try:
                if isinstance(item, Poll):
                    self._poll(item)
                else:
                    self._command(item)
            except _Stopped:
                break
            except Exception:  # a bug in an adapter must not kill the gateway's only sender silently
                log.exception("sending %s failed; the next poll or restart looks at that order again", item)
            finally:
                if self.queue.empty():
                    self.idle.set()

    # ------------------------------------------------------------------ commands
    def _command(self, command: Command) -> None:
        coid = command.order.client_order_id
        kind = command.kind
        if kind == "verify":
            found = self._query(command)
            status = found[-1].status
            if status != "unknown":
                self._deliver(found)
            if status in DONE or (status != "unknown" and command.version == 0):
                return  # placed (or over): nothing to send
            # a place the venue never received, or a replacement whose outcome the journal lacks
            # (replacing is idempotent at the venue: a replacement already made is reported, not redone)
            log.info("%s: %s (version %d) is %s at the venue: sending it", self.venue.name, coid, command.version,
                     status)
            kind = "replace" if command.version > 0 else "place"
        send = {"place": self.venue.place, "cancel": self.venue.cancel, "replace": self.venue.replace}[kind]
        delays = backoff_delays(self.first_wait, self.max_wait, jitter=0.5)
        while True:
            try:
                reports = self._busy_retry(lambda: send(command), f"{kind} {coid}")
                self.sent += 1
                self._deliver(reports)
                return
            except OutcomeUnknown as exc:
                self.unknown_outcomes += 1
                log.warning("%s %s: outcome unknown (%s); asking the venue before anything else", kind, coid, exc)
            except Exception:  # a failure the adapter did not foresee: the venue may or may not have acted
                self.unknown_outcomes += 1
                log.exception("%s %s failed unexpectedly; asking the venue before anything else", kind, coid)
            # a request still on its way is processed before we ask; a failing venue is not hammered
            self._wait(next(delays))
            found = self._query(command)
            status = found[-1].status
            if status != "unknown":
                self._deliver(found)
            if status in DONE or (kind == "place" and status != "unknown") or (kind == "cancel" and
                                                                                status == "unknown"):
                return  # it arrived, it is over, or there is nothing to cancel
            # a place that never arrived, a cancel of an order still open, a replacement (idempotent): again
            log.info("%s %s: %s at the venue: sending again", kind, coid, status)

    def _poll(self, poll: Poll) -> None:
        listed = self._call(lambda: list(self.venue.open_orders()), "open orders")
        self._deliver(listed)
        seen = {r.client_order_id for r in listed}
        for command in poll.expected:
            if command.order.client_order_id not in seen:
                self._deliver(self._query(command))

    # ------------------------------------------------------------------ calls
    def _query(self, command: Command) -> list[OrderReport]:
        """What the venue says of the command's order now, its current venue order last (asked until it answers)."""
        return self._call(lambda: list(self.venue.query(command)), f"query {command.order.client_order_id}")

    def _busy_retry(self, call: Callable[[], Sequence[OrderReport]], what: str) -> Sequence[OrderReport]:
        """`call()`, waiting out `VenueBusy` (the venue did not run it); `OutcomeUnknown` propagates."""
        while True:
            try:
                return call()
            except VenueBusy as exc:
                log.warning("%s: venue busy (%s); waiting %.1f s", what, exc, exc.retry_after)
                self._wait(exc.retry_after)

    def _call(self, call: Callable[[], list[OrderReport]], what: str) -> list[OrderReport]:
        """A call that changes nothing at the venue (query, list): retried until it answers."""
        delays = backoff_delays(self.first_wait, self.max_wait, jitter=0.5)
        while True:
            try:
                return list(self._busy_retry(call, what))
            except Exception as exc:  # no answer, or one the adapter could not read: ask again, loudly
                wait = next(delays)
                log.warning("%s: no answer (%s: %s); asking again in %.2f s", what, type(exc).__name__, exc, wait)
                self._wait(wait)

    def _wait(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise _Stopped

    def _deliver(self, reports: Sequence[Report]) -> None:
        for r in reports:
            self.sink(r)


class _Stopped(BaseException):
    """The gateway is stopping: leave the command (a restart verifies it)."""
