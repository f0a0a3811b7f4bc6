"""The port a real venue implements for the gateway (`ticktape gateway --venue binance|betfair`).

A real venue is an edge: calls have side effects and answers arrive later, on other threads,
possibly twice, possibly never. The gateway keeps it out of its deterministic fold this way:

- The fold turns an intent into a `Command` (place, cancel, replace) and queues it; a sender
  thread calls the venue (`LiveVenue.place` ...).
- Everything the venue says about an order, whatever the source (the REST answer, the user-data
  or order stream, a query, the start-up reconciliation, the periodic poll), is an `OrderReport`:
  "this order, at the venue, now". Reports are journaled as the fold's inline inputs and folded
  idempotently: the fold compares each with what it already knows (fill ids, cumulative matched
  size, status) and writes only what is new to `orders.event`. A fill reported twice, a stale
  report, a report after a restart: each is harmless.
- A call whose outcome is unknown (a timeout, a 5xx, a connection dropped after sending) raises
  `OutcomeUnknown`: the sender asks the venue about that client order id (`query`) before
  anything is sent again, and the venue's own de-duplication (Binance's `newClientOrderId`,
  Betfair's `customerRef`) covers a request still in flight.
- A call the venue refused to run (HTTP 429/418, Betfair's TOO_MANY_REQUESTS) raises
  `VenueBusy`: nothing happened, the sender waits `retry_after` and sends again.

Fills come in two shapes: individual fills with venue ids (`OrderReport.fills`, Binance trades)
or a cumulative matched size and average price per venue order (`matched`/`avg_price`, Betfair
bets); the fold derives each increase of the latter as one `OrderFilled`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from ticktape.events import CancelOrder, CustomData, Liquidity, PlaceOrder, ReplaceOrder, Side

__all__ = [
    "CLIENT_ORDER_ID",
    "REPORT_KIND",
    "AccountReport",
    "Command",
    "Fill",
    "LiveVenue",
    "OrderReport",
    "OutcomeUnknown",
    "Refusal",
    "ReportSink",
    "VenueBusy",
    "is_client_order_id",
    "report_event",
    "report_from_event",
]

Status = Literal["open", "filled", "cancelled", "expired", "rejected", "unknown"]
"""An order's status at the venue; "unknown": the venue has no order with this client order id."""

DONE: frozenset[str] = frozenset({"filled", "cancelled", "expired", "rejected"})
"""Statuses after which an order changes no more (Betfair may still void a matched bet later)."""

CLIENT_ORDER_ID = r"[a-z2-7]{8}-[0-9a-z]+-[0-9]+"
"""The shape of a live run's client order ids (`robots.live.fold.LiveContext`, the gateway's flatten
orders): `<run tag>-<seq base 36>-<k>`. Adapters build their venue id patterns on it (Binance's `.n`
replacements) and keep to the orders that have it (not those placed by hand)."""

_CLIENT_ORDER_ID = re.compile(CLIENT_ORDER_ID)


def is_client_order_id(text: object) -> bool:
    """Whether `text` is a client order id a ticktape live run makes."""
    return isinstance(text, str) and _CLIENT_ORDER_ID.fullmatch(text) is not None


REPORT_KIND = "gateway.report"
"""`CustomData.kind` of a journaled venue report (the gateway's inline input)."""


class OutcomeUnknown(Exception):
    """The request may or may not have reached the venue (timeout, 5xx, connection dropped after sending)."""


class VenueBusy(Exception):
    """The venue refused to run the request now (rate limit, 429/418): nothing happened; retry after `retry_after` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Fill:
    """One execution with the venue's id (Binance trade id)."""

    fill_id: str
    price: float
    size: float
    fee: float = 0.0
    liquidity: Liquidity = "TAKER"
    ts_event: int = 0


@dataclass(frozen=True)
class OrderReport:
    """What the venue says of one order now (see the module docstring). Every field is the venue's."""

    client_order_id: str
    venue_order_id: str | None
    instrument: str
    status: Status
    ts_event: int  # venue time of the latest change, ns
    side: Side | None = None
    fills: tuple[Fill, ...] = ()  # individual fills (any subset: the fold de-duplicates by id)
    matched: float | None = None  # cumulative matched size of this venue order (venues without fill ids)
    avg_price: float | None = None  # average matched price, with `matched`
    reason: str = ""  # why rejected / cancelled / expired, as the venue says it
    source: str = ""  # rest, stream, query, poll, reconcile (for the audit)
    profit: float | None = None  # set once the venue settled the order (Betfair: its cleared bet's profit)
    runner_status: str = ""  # with `profit`: the selection's result (WINNER, LOSER, ...)


@dataclass(frozen=True)
class AccountReport:
    """Positions (futures, per instrument, signed) or balances (per asset) at the venue now."""

    ts_event: int
    positions: Mapping[str, float] = field(default_factory=dict)
    balances: Mapping[str, float] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class Command:
    """What the sender asks the venue to do.

    `order` is the order as it stands (the original `PlaceOrder`, with the price and size of its
    latest replacement); `version` counts its replacements (0: the original); `run_ref` is a
    short id of the run (Betfair's `customerStrategyRef`, at most 15 characters).
    """

    kind: Literal["place", "cancel", "replace", "verify"]
    order: PlaceOrder
    intent: PlaceOrder | CancelOrder | ReplaceOrder
    version: int = 0
    run_ref: str = ""


@dataclass(frozen=True)
class Refusal:
    """A venue rule the intent breaks, found before sending: an `OrderRejected` naming `control`."""

    control: str
    reason: str


ReportSink = Callable[[OrderReport | AccountReport], None]
"""Where a venue delivers reports from its stream threads (thread-safe)."""


class LiveVenue(Protocol):
    """A real venue behind the gateway. Every method but `check` is I/O, called from the sender thread
    (stream callbacks deliver through the `ReportSink` given to `start`).

    - `place`/`cancel`/`replace` return the reports the venue's answer carries (an accepted
      order, a rejection, the fills of an order that matched at once); they raise
      `OutcomeUnknown` or `VenueBusy` as described in the module docstring. Cancelling an order
      the venue no longer has open is not an error: return its final report.
    - `query` returns the order's reports, one per venue order (a replacement may be a new venue
      order), the current one last, with every fill so far; `[status "unknown"]` when the venue
      has no order with this client order id.
    - `open_orders` lists the open orders of this gateway's runs (client order ids made by
      ticktape); `recent_orders(instruments)` the venue's recent orders of ticktape client order ids
      on those instruments, in any status (done ones too); `account` the positions/balances.
    - A venue that `settles` reports a settled order with its `profit` (the gateway keeps asking
      about filled, unsettled orders at each poll until it does).
    - `rules` is the venue's trading rules as JSON-able data (Binance's filters from
      `exchangeInfo`); the gateway journals them, and `check(rules, intent)`, pure, is the
      exchange-filters control applied before sending.
    """

    name: str
    settles: bool  # whether the venue settles filled orders later (Betfair bets): the gateway asks until it has

    def start(self, sink: ReportSink) -> None: ...

    def rules(self) -> dict[str, Any]: ...

    @staticmethod
    def check(rules: Mapping[str, Any], intent: PlaceOrder | ReplaceOrder) -> Refusal | None: ...

    def place(self, command: Command) -> Sequence[OrderReport]: ...

    def cancel(self, command: Command) -> Sequence[OrderReport]: ...

    def replace(self, command: Command) -> Sequence[OrderReport]: ...

    def query(self, command: Command) -> Sequence[OrderReport]: ...

    def open_orders(self) -> Sequence[OrderReport]: ...

    def recent_orders(self, instruments: Sequence[str]) -> Sequence[OrderReport]: ...

    def account(self) -> AccountReport: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------- journal form

def report_event(report: OrderReport | AccountReport, venue: str, ts_recv: int) -> CustomData:
    """A report as the gateway journals it: `CustomData(kind="gateway.report", key=venue)`, JSON payload."""
    body = asdict(report)
    body["type"] = "order" if isinstance(report, OrderReport) else "account"
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return CustomData(REPORT_KIND, venue, report.ts_event, ts_recv, payload, "application/json")


def report_from_event(event: CustomData) -> OrderReport | AccountReport:
    """The report a journaled `report_event` carries."""
    body = json.loads(event.payload)
    kind = body.pop("type")
    if kind == "account":
        return AccountReport(**body)
    body["fills"] = tuple(Fill(**f) for f in body.get("fills") or ())
    return OrderReport(**body)
