"""The gateway's sender: an unknown outcome is looked up before anything is sent again.

`BookVenue` is a small venue of our own (a dict of orders keyed by client order id) that answers
as the port says a venue answers, with a script of failures for the next calls; the real venues'
adapters are tested against their local servers (tests/venues) and end to end in
test_gateway_binance.py / test_gateway_betfair.py.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from typing import Any

import pytest

from robots.live.exchange import (
    AccountReport,
    Command,
    OrderReport,
    OutcomeUnknown,
    Refusal,
    ReportSink,
    VenueBusy,
)
from robots.live.sender import VenueSender
from ticktape.events import CancelOrder, PlaceOrder, ReplaceOrder

T = 1_700_000_000_000_000_000


class BookVenue:
    """Orders by client order id; `script` lists what the next calls do: "ok", "unknown_after" (act, then
    raise OutcomeUnknown), "unknown_before" (raise without acting), "busy", "broken" (act, then a bug)."""

    name = "book"
    settles = False

    def __init__(self, script: Sequence[str] = ()) -> None:
        self.script = list(script)
        self.orders: dict[str, str] = {}  # client order id -> status
        self.placed: list[str] = []
        self.calls: list[str] = []

    def _step(self, what: str, act: Any) -> None:
        self.calls.append(what)
        mode = self.script.pop(0) if self.script else "ok"
        if mode == "busy":
            raise VenueBusy("slow down", retry_after=0.01)
        if mode == "unknown_before":
            raise OutcomeUnknown("connection refused")
        act()
        if mode == "unknown_after":
            raise OutcomeUnknown("timed out after sending")
        if mode == "broken":
            raise ValueError("an answer the adapter could not read")

    def _report(self, command: Command) -> OrderReport:
        coid = command.order.client_order_id
        status = self.orders.get(coid, "unknown")
        return OrderReport(coid, "v-" + coid if status != "unknown" else None, command.order.instrument,
                           status, T)  # type: ignore[arg-type]

    def start(self, sink: ReportSink) -> None:
        pass

    def rules(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def check(rules: Any, intent: PlaceOrder | ReplaceOrder) -> Refusal | None:
        return None

    def place(self, command: Command) -> Sequence[OrderReport]:
        coid = command.order.client_order_id

        def act() -> None:
            self.placed.append(coid)
            self.orders[coid] = "open"

        self._step("place", act)
        return [self._report(command)]

    def cancel(self, command: Command) -> Sequence[OrderReport]:
        coid = command.order.client_order_id

        def act() -> None:
            if self.orders.get(coid) == "open":
                self.orders[coid] = "cancelled"

        self._step("cancel", act)
        return [self._report(command)]

    def replace(self, command: Command) -> Sequence[OrderReport]:
        self._step("replace", lambda: None)
        return [self._report(command)]

    def query(self, command: Command) -> Sequence[OrderReport]:
        self._step("query", lambda: None)
        return [self._report(command)]

    def open_orders(self) -> Sequence[OrderReport]:
        return []

    def recent_orders(self, instruments: Sequence[str]) -> Sequence[OrderReport]:
        return []

    def account(self) -> AccountReport:
        return AccountReport(T)

    def close(self) -> None:
        pass


def _order(k: int = 1) -> PlaceOrder:
    return PlaceOrder("bot", f"abcdefgh-{k}-0", "book", "X", T, T, "BUY", "LIMIT", 1.0, 1.0, "GTC")


def _run(venue: BookVenue, commands: Sequence[Command]) -> list[OrderReport]:
    reports: queue.Queue[OrderReport | AccountReport] = queue.Queue()
    sender = VenueSender(venue, reports.put, first_wait=0.001, max_wait=0.01)
    sender.start()
    sender.submit(commands)
    deadline = time.monotonic() + 10
    while not (sender.idle.is_set() and sender.queue.empty()) and time.monotonic() < deadline:
        time.sleep(0.005)
    sender.close()
    sender.join(5)
    out: list[OrderReport] = []
    while not reports.empty():
        r = reports.get()
        assert isinstance(r, OrderReport)
        out.append(r)
    return out


@pytest.mark.parametrize("failure", ["unknown_after", "broken"])
def test_a_place_that_reached_the_venue_is_looked_up_not_sent_again(failure: str) -> None:
    venue = BookVenue([failure])
    order = _order()
    reports = _run(venue, [Command("place", order, order)])
    assert venue.placed == [order.client_order_id]
    assert venue.calls == ["place", "query"]
    assert [r.status for r in reports] == ["open"]


def test_a_place_that_never_arrived_is_sent_again_once_the_venue_says_it_has_none() -> None:
    venue = BookVenue(["unknown_before", "ok"])
    order = _order()
    reports = _run(venue, [Command("place", order, order)])
    assert venue.calls == ["place", "query", "place"] and venue.placed == [order.client_order_id]
    assert [r.status for r in reports] == ["open"]


def test_a_busy_venue_is_waited_out_and_a_lookup_without_an_answer_is_asked_again() -> None:
    venue = BookVenue(["busy", "busy", "unknown_after", "unknown_before", "unknown_before"])
    order = _order()
    reports = _run(venue, [Command("place", order, order)])
    assert venue.calls == ["place", "place", "place", "query", "query", "query"]
    assert venue.placed == [order.client_order_id] and [r.status for r in reports] == ["open"]


def test_verify_after_a_restart_sends_only_what_the_venue_lacks_and_cancels_follow_in_order() -> None:
    venue = BookVenue()
    there, missing = _order(1), _order(2)
    venue.orders[there.client_order_id] = "open"  # placed by the gateway before it restarted
    cancel = CancelOrder("bot", there.client_order_id, "book", "X", T, T)
    reports = _run(venue, [Command("verify", there, there), Command("verify", missing, missing),
                           Command("cancel", there, cancel)])
    assert venue.placed == [missing.client_order_id]
    assert venue.calls == ["query", "query", "place", "cancel"]
    assert [(r.client_order_id, r.status) for r in reports] == [
        (there.client_order_id, "open"), (missing.client_order_id, "open"), (there.client_order_id, "cancelled")]


def test_a_replacement_whose_outcome_is_unknown_is_sent_again_after_the_lookup() -> None:
    """Replacing is idempotent at the venues (one already made is reported, not redone): after the lookup the
    replacement is sent again, unless the order is over."""
    venue = BookVenue(["unknown_after"])
    order = _order()
    venue.orders[order.client_order_id] = "open"
    moved = order._replace(price=1.5)
    replace = ReplaceOrder("bot", order.client_order_id, "book", "X", T, T, "BUY", "LIMIT", 1.5, 1.0, "GTC")
    _run(venue, [Command("replace", moved, replace, 1), Command("verify", moved, moved, 1)])
    assert venue.calls == ["replace", "query", "replace", "query", "replace"]
    venue = BookVenue()
    venue.orders[order.client_order_id] = "cancelled"  # over before the gateway restarted: nothing to replace
    reports = _run(venue, [Command("verify", moved, moved, 1)])
    assert venue.calls == ["query"] and [r.status for r in reports] == ["cancelled"]
