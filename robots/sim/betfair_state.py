"""State of the simulated Betfair venue: its settings, orders and markets (see `robots.sim.betfair`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, TypeAlias

from robots.sim.betfair_money import cents, hundredths
from ticktape.errors import ValidationError
from ticktape.events import MarketBook, MarketDefinition, PlaceOrder, ReplaceOrder, RunnerBook

SEC = 1_000_000_000

OPEN, PENDING, DONE = 0, 1, 2  # order states
RunnerKey: TypeAlias = tuple[int, float]  # (selection id, handicap)


@dataclass(frozen=True, kw_only=True)
class BetfairSimConfig:
    """Settings of the simulated Betfair venue (latencies default to flumine's simulated ones)."""

    venue: str = "betfair"
    place_latency_ns: int = 120_000_000
    cancel_latency_ns: int = 170_000_000
    replace_latency_ns: int = 280_000_000
    commission_rate: float = 0.05
    shared_liquidity: bool = False
    persistence: Literal["LAPSE", "PERSIST"] = "LAPSE"
    lapse_on_suspension: bool = True
    delay_passive_in_play: bool = True
    """True: every order placed in-play waits `bet_delay`; False: only orders that would match at
    once do (flumine's behaviour, and Betfair's on markets without a passive delay)."""
    min_stake: float = 0.0
    min_reduction_factor: float = 2.5
    """A non-runner's adjustment factor (%) at or above which the matched odds on the other runners
    are reduced (Betfair's rule for WIN markets; flumine applies the same threshold)."""
    traded_share_rounding: Literal["down", "flumine"] = "down"
    """How a resting order's share of new traded volume (half of it: Betfair counts both sides) is
    rounded to the cent when it comes to an exact half cent (an odd number of cents traded past the
    queue). "down" (default): never more than the other side traded, so no fill exceeds what the
    recorded market traded. "flumine": to the nearest cent the way flumine rounds it, `round(x, 2)`
    on a binary float: a half cent goes up or down as its float lies (on 1.197931751, 28.135 -> 28.14
    but 44.095 -> 44.09), which no decimal rule reproduces. The queue ahead is then followed in
    flumine's floats too; the tie of a second order of one robot on the same update is taken from
    the exact remaining volume (flumine carries a float remainder: it may differ by a cent)."""

    def __post_init__(self) -> None:
        if self.traded_share_rounding not in ("down", "flumine"):
            raise ValidationError(f"must be 'down' or 'flumine', got {self.traded_share_rounding!r}",
                                  field="traded_share_rounding")

    def to_json(self) -> str:
        """Canonical JSON (for the run manifest)."""
        return json.dumps({"name": "betfair", **asdict(self)}, sort_keys=True, separators=(",", ":"))


class SimOrder:
    """One order's mutable matching state (venue-internal)."""

    __slots__ = ("back", "client_order_id", "eff_ts", "fill_ts", "fills", "handicap", "instrument", "market_id",
                 "matched_c", "n_fills", "open_c", "persist", "piq", "piq_f", "price", "price_h", "robot", "runner_key",
                 "selection_id", "size_c", "state", "tif", "venue_order_id")

    def __init__(self, intent: PlaceOrder | ReplaceOrder, market_id: str, selection_id: int, handicap: float,
                 persist: bool) -> None:
        self.robot = intent.robot
        self.client_order_id = intent.client_order_id
        self.venue_order_id: str | None = None
        self.instrument = intent.instrument
        self.market_id = market_id
        self.selection_id = selection_id
        self.handicap = handicap
        self.runner_key: RunnerKey = (selection_id, handicap)
        self.back = intent.side == "BUY"
        self.price = intent.price
        self.price_h = hundredths(intent.price)
        self.size_c = cents(intent.size)
        self.tif = intent.time_in_force
        self.persist = persist
        self.matched_c = 0
        self.open_c = self.size_c  # unmatched and still live
        self.piq = 0  # queue ahead, in half-cents (0.005): traded volume is halved
        self.piq_f = 0.0  # the same as flumine's float (for traded_share_rounding="flumine" only)
        self.fills: list[tuple[int, int]] = []  # (price hundredths, cents)
        self.fill_ts: list[int] = []  # when each fill happened (for reduction factors)
        self.n_fills = 0
        self.state = PENDING
        self.eff_ts = 0


@dataclass(frozen=True)
class OrderView:
    """A read-only look at one simulated order (tests, reports)."""

    client_order_id: str
    venue_order_id: str | None
    state: str
    size: float
    matched: float
    remaining: float
    queue_ahead: float
    average_price: float


class SimMarket:
    """Per-market venue state; the market is "live" while it has pending or resting orders or taken liquidity."""

    __slots__ = ("book", "deferred", "definition", "in_play", "market_id", "orders", "pending", "removed",
                 "resting", "settled", "status", "taken", "tv", "version")

    def __init__(self, market_id: str) -> None:
        self.market_id = market_id
        self.book: MarketBook | None = None
        self.definition: MarketDefinition | None = None
        # A definition whose state change (lapse, cancel) waits for the book of its publish time: the
        # volume that book shows traded before the change, so it is matched first. Only set while
        # orders rest (the hot path never looks at it).
        self.deferred: MarketDefinition | None = None
        self.status = ""
        self.in_play = False
        self.version = -1
        self.orders: list[SimOrder] = []  # every accepted order, for settlement
        self.pending: list[SimOrder] = []  # waiting for the in-play bet delay
        self.resting: dict[RunnerKey, list[SimOrder]] = {}  # runner -> open orders, in placement order
        self.tv: dict[RunnerKey, tuple[object, dict[float, int]]] = {}  # runner -> (last tv, price -> cents)
        self.taken: dict[str, dict[tuple[RunnerKey, bool, float], int]] = {}  # pool -> (runner, back?, price) -> cents
        self.settled = False
        self.removed: set[int] = set()  # non-runners whose reduction factor has been applied


def find_runner(book: MarketBook, selection_id: int, handicap: float) -> RunnerBook | None:
    """The runner of `book` with this selection id and handicap (a scan: books hold a few runners)."""
    for r in book.runners:
        if r.selection_id == selection_id and r.handicap == handicap:
            return r
    return None


def parse_instrument(instrument: str) -> tuple[str, int, float] | None:
    """`"1.23:456"` or `"1.23:456:-1.5"` -> (market id, selection id, handicap); None if malformed."""
    parts = instrument.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        return None
    try:
        return parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0
    except ValueError:
        return None
