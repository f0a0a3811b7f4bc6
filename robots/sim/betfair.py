"""The simulated Betfair exchange: back/lay limit orders against recorded `MarketBook`s.

Pure and deterministic (implements `robots.sim.base.SimVenue`). Instruments are
`"<market_id>:<selection_id>"` (optionally `":<handicap>"`); side BUY is a back, SELL a lay.
The matching follows flumine's simulation (flumine/simulation/simulatedorder.py and
flumine/markets/middleware.py), re-derived in exact integers:

* **At arrival** a back at price p takes the `available_to_back` levels priced >= p (best first,
  at each level's price: Betfair's best-price execution); a lay takes `available_to_lay` levels
  priced <= p. The rest rests at p (GTC/DAY), is cancelled (IOC), or nothing happens unless all
  of it can match at once (FOK).
* **Resting** orders fill from traded-volume progress: the growth of the runner's traded volume
  since the previous book, at prices >= p for a back (<= p for a lay), halved because Betfair's
  traded volume counts both sides. The queue ahead of the order ("piq") is the size waiting at p
  on the same side when it was placed (`available_to_lay` at p for a back); it must trade first.
  Fills are at the order's price, MAKER. Within one robot the traded volume of an update is
  consumed in flumine's order (lays by descending price, then backs by ascending price). A share
  that comes to an exact half cent is rounded down by default (no fill exceeds what the other side
  traded); `traded_share_rounding="flumine"` rounds it as flumine's floats do (see the config).
* **Liquidity isolation**: each robot has its own pool; a robot's taker fills reduce what it can
  take again at that price (until the displayed size drops below what it took) and what its
  other resting orders can fill from one update, but never what another robot sees.
  `shared_liquidity=True` makes one pool for all robots.
* **Market state**: no placing while the market is not OPEN (rejected with the reason); orders
  placed in-play take effect `bet_delay` seconds after arrival (no event until then; then
  accepted and matched against the book of that time, or rejected if the market suspended);
  unmatched LAPSE orders lapse when the market turns in-play, when it suspends with a new market
  version (a material change, as flumine) and at close; PERSIST orders lapse at close. A stream
  change that carries a definition becomes a `MarketDefinition` followed by a `MarketBook`, both at
  its publish time: the definition's state change (lapse, cancel on a removed runner) waits for that
  book, whose new traded volume is matched first (it traded before the change; flumine, which sees
  one book per change, does the same). A definition with no book at its time takes effect at its
  own time when the market's next event or an intent comes. CLOSED is not deferred: as flumine,
  nothing is matched at close.
* **Settlement** when the market closes (its `MarketDefinition`, or a `MarketBook`, says CLOSED):
  a `BetSettled` per order with a matched part (WINNER / LOSER; REMOVED voids) and a
  `MarketSettled` per robot with commission on its positive net market profit.

* **Non-runners**: bets on a REMOVED runner are void; when its `MarketDefinition` gives an
  adjustment factor >= `min_reduction_factor` (2.5%), the odds of bets on the other runners matched
  before its removal are cut by that factor (price x (1 - factor/100), rounded to the cent, at
  least 1.01) for settlement; `BetSettled.average_price_matched` shows the reduced odds.

Every decision is an event with a reason. Not modelled: BSP/MARKET_ON_CLOSE orders, dead heats,
each-way (PLACED) settlement, Betfair's minimum-stake rules (`min_stake` is a plain floor).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from robots.sim.base import Intent
from robots.sim.betfair_money import (
    average_price,
    bet_profit_cents,
    cents,
    commission_cents,
    hundredths,
    is_valid_price,
)
from robots.sim.betfair_state import (
    DONE,
    OPEN,
    PENDING,
    SEC,
    BetfairSimConfig,
    OrderView,
    SimMarket,
    SimOrder,
    find_runner,
    parse_instrument,
)
from ticktape.events import (
    BetSettled,
    CancelOrder,
    Event,
    MarketBook,
    MarketDefinition,
    MarketSettled,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    ReplaceOrder,
    RunnerBook,
    RunnerDefinition,
)

_NONE: tuple[Event, ...] = ()
_MARKET_STATES = frozenset(("OPEN", "SUSPENDED", "CLOSED", "INACTIVE"))

__all__ = ["BetfairSimConfig", "BetfairSimVenue", "OrderView", "parse_instrument"]


def _flumine_order(o: SimOrder) -> tuple[int, int]:
    # flumine's middleware matches lays by descending price, then backs by ascending price.
    return (1, o.price_h) if o.back else (0, -o.price_h)


class BetfairSimVenue:
    """A deterministic Betfair exchange over recorded market data (see the module doc)."""

    def __init__(self, config: BetfairSimConfig | None = None) -> None:
        self.config = config or BetfairSimConfig()
        self.venue = self.config.venue
        self._rate = Fraction(str(self.config.commission_rate))
        self._markets: dict[str, SimMarket] = {}
        self._orders: dict[tuple[str, str], SimOrder] = {}
        self._next_bet_id = 1

    # ------------------------------------------------------------------ SimVenue

    def latency_ns(self, intent: Intent) -> int:
        """Place, cancel and replace latencies from the config."""
        if type(intent) is PlaceOrder:
            return self.config.place_latency_ns
        if type(intent) is CancelOrder:
            return self.config.cancel_latency_ns
        return self.config.replace_latency_ns

    def on_market(self, event: Event) -> tuple[Event, ...] | list[Event]:
        """Take in a `MarketBook` or `MarketDefinition`; other events are ignored."""
        if type(event) is MarketBook:
            m = self._markets.get(event.market_id)
            if m is None:
                m = self._markets[event.market_id] = SimMarket(event.market_id)
            if not (m.pending or m.resting or m.taken):
                # The hot path: a market where nothing of ours is live only needs its latest book.
                m.book = event
                if m.orders and not m.settled and event.status == "CLOSED":
                    out: list[Event] = []
                    self._close(m, event.ts_event, {r.selection_id: r.status for r in event.runners}, out)
                    return out
                return _NONE
            return self._on_live_book(m, event)
        if type(event) is MarketDefinition:
            return self._on_definition(event)
        return _NONE

    def on_intent(self, intent: Intent, arrival_ts: int) -> list[Event]:
        """Answer a place / cancel / replace arriving at `arrival_ts`."""
        out: list[Event] = []
        parsed = parse_instrument(intent.instrument)
        m = self._markets.get(parsed[0]) if parsed is not None else None
        if m is not None and m.deferred is not None:
            self._apply_deferred(m, out)  # the runner fed every market event up to arrival_ts first
        if m is not None and m.pending:
            self._run_pending(m, arrival_ts, True, out)
        if type(intent) is PlaceOrder:
            self._place(intent, parsed, m, arrival_ts, out)
        elif type(intent) is CancelOrder:
            self._cancel(intent, m, arrival_ts, out)
        else:
            assert type(intent) is ReplaceOrder
            self._replace(intent, parsed, m, arrival_ts, out)
        return out

    # ------------------------------------------------------------------ inspection

    def order(self, robot: str, client_order_id: str) -> OrderView | None:
        """The current state of one order (None if the venue never saw it)."""
        o = self._orders.get((robot, client_order_id))
        if o is None:
            return None
        state = {OPEN: "OPEN", PENDING: "PENDING", DONE: "DONE"}[o.state]
        return OrderView(o.client_order_id, o.venue_order_id, state, o.size_c / 100, o.matched_c / 100,
                         o.open_c / 100, o.piq / 200, average_price(o.fills))

    # ------------------------------------------------------------------ market events

    def _on_live_book(self, m: SimMarket, book: MarketBook) -> list[Event]:
        out: list[Event] = []
        md = m.deferred
        if md is not None and md.ts_event != book.ts_event:
            self._apply_deferred(m, out)  # no book came with that definition: its change stands alone
            md = None
        if m.pending:
            self._run_pending(m, book.ts_event, False, out)
        m.book = book
        if m.taken:
            self._forget_taken(m, book)
        if m.resting:
            # Volume that shows up with a suspension (in a SUSPENDED book, or in the book published with a
            # new definition) traded before it: match it first, then lapse (as flumine).
            self._match_traded(m, book, out)
        if md is not None:
            self._apply_deferred(m, out)
        self._on_state(m, book.ts_event, book.status, book.in_play, book.version, book.runners, out)
        return out

    def _on_definition(self, md: MarketDefinition) -> tuple[Event, ...] | list[Event]:
        m = self._markets.get(md.market_id)
        if m is None:
            m = self._markets[md.market_id] = SimMarket(md.market_id)
        m.definition = md
        if not m.settled:
            for rd in md.runners:  # definitions are rare: the scan costs nothing
                if rd.status == "REMOVED" and rd.selection_id not in m.removed:
                    m.removed.add(rd.selection_id)
                    if m.orders:
                        self._reduce(m, rd.selection_id, rd.adjustment_factor, rd.removal_date or md.ts_event)
        if m.settled or not (m.orders or m.pending) or md.status not in _MARKET_STATES:
            return _NONE  # (a catalogue snapshot, status CATALOGUE, says nothing about the market's state)
        out: list[Event] = []
        if m.deferred is not None:
            self._apply_deferred(m, out)
        if m.pending:
            self._run_pending(m, md.ts_event, False, out)
        if m.resting and md.status != "CLOSED":
            # The importer publishes a definition just before the book of the same change: that book's
            # new traded volume is matched before this state change lapses or cancels anything.
            # (At CLOSED, as flumine, nothing more is matched: settle now.)
            m.deferred = md
            return out
        self._on_state(m, md.ts_event, md.status, md.in_play, md.version, md.runners, out)
        return out

    def _apply_deferred(self, m: SimMarket, out: list[Event]) -> None:
        md = m.deferred
        assert md is not None
        m.deferred = None
        self._on_state(m, md.ts_event, md.status, md.in_play, md.version, md.runners, out)

    def _on_state(self, m: SimMarket, ts: int, status: str, in_play: bool, version: int,
                  runners: tuple[RunnerBook, ...] | tuple[RunnerDefinition, ...], out: list[Event]) -> None:
        if status == "CLOSED":
            if not m.settled:
                self._close(m, ts, {r.selection_id: r.status for r in runners}, out)
            return
        if m.resting:
            removed = {r.selection_id for r in runners if r.status == "REMOVED"}
            for (sel, _), orders in list(m.resting.items()):
                if sel in removed:
                    for o in list(orders):
                        self._finish(m, o, ts, "cancelled: runner removed", out)
            if in_play and not m.in_play:
                self._lapse(m, ts, "lapsed at in-play", out)
            elif status == "SUSPENDED" and version != m.version and self.config.lapse_on_suspension:
                self._lapse(m, ts, "lapsed at suspension (new market version)", out)
        m.status, m.in_play, m.version = status, in_play, version

    def _lapse(self, m: SimMarket, ts: int, reason: str, out: list[Event]) -> None:
        for orders in list(m.resting.values()):
            for o in list(orders):
                if not o.persist:
                    self._finish(m, o, ts, reason, out)

    def _close(self, m: SimMarket, ts: int, runner_status: dict[int, str], out: list[Event]) -> None:
        """Lapse everything still open, then settle every robot's bets in the market."""
        for o in list(m.pending):
            o.state = DONE
            o.open_c = 0
            out.append(OrderRejected(o.robot, o.client_order_id, None, self.venue, o.instrument, ts, ts,
                                     "market closed before the bet delay elapsed"))
        m.pending.clear()
        for orders in list(m.resting.values()):
            for o in list(orders):
                self._finish(m, o, ts, "lapsed at market close", out)
        m.taken.clear()
        m.tv.clear()
        m.settled = True
        m.status = "CLOSED"
        totals: dict[str, list[int]] = {}  # robot -> [bets, profit cents]
        for o in m.orders:
            total = totals.setdefault(o.robot, [0, 0])
            if not o.matched_c:
                continue
            status = runner_status.get(o.selection_id, "REMOVED")
            profit = bet_profit_cents(o.back, status, o.fills)
            total[0] += 1
            total[1] += profit
            out.append(BetSettled(o.robot, o.client_order_id, o.venue_order_id, self.venue, o.instrument,
                                  m.market_id, o.selection_id, ts, ts, "BUY" if o.back else "SELL",
                                  o.matched_c / 100, average_price(o.fills), status, profit / 100))
        for robot, (bets, profit) in totals.items():
            commission = commission_cents(profit, self._rate)
            out.append(MarketSettled(robot, self.venue, m.market_id, ts, ts, bets, profit / 100,
                                     self.config.commission_rate, commission / 100, (profit - commission) / 100))

    def _reduce(self, m: SimMarket, removed: int, factor: float | None, removed_at: int) -> None:
        """A non-runner's reduction factor cuts the odds of bets on the others matched before it went."""
        if factor is None or factor < self.config.min_reduction_factor:
            return
        keep = 1 - Fraction(str(factor)) / 100
        for o in m.orders:
            if o.selection_id == removed:
                continue
            for i, ts in enumerate(o.fill_ts):
                if ts < removed_at:
                    price_h, size_c = o.fills[i]
                    cut = price_h * keep
                    o.fills[i] = (max(101, round(cut.numerator / cut.denominator)), size_c)

    # ------------------------------------------------------------------ matching

    def _forget_taken(self, m: SimMarket, book: MarketBook) -> None:
        """What a pool took at a level can only be taken again once the displayed size shows it gone.

        Each book caps a pool's taken size at the size now displayed: a level that shrank (others took
        it or it was withdrawn) can no longer hide our earlier fills. This keeps, per pool and level,
        total taken <= the first displayed size plus every later increase of it.
        """
        for pool, taken in list(m.taken.items()):
            for key in list(taken):
                (sel, handicap), back, price = key
                r = find_runner(book, sel, handicap)
                shown = 0
                if r is not None:
                    for ps in (r.available_to_back if back else r.available_to_lay):
                        if ps.price == price:
                            shown = cents(ps.size)
                            break
                if shown <= 0:
                    del taken[key]
                elif taken[key] > shown:
                    taken[key] = shown
            if not taken:
                del m.taken[pool]

    def _match_traded(self, m: SimMarket, book: MarketBook, out: list[Event]) -> None:
        """Fill resting orders from the traded volume added since the previous book (flumine's rule)."""
        ts = book.ts_event
        for runner_key, orders in list(m.resting.items()):
            r = find_runner(book, *runner_key)
            if r is None:
                continue
            tv = r.traded_volume
            last_tv, last = m.tv[runner_key]
            if tv == last_tv:
                continue
            now: dict[float, int] = {}
            deltas: list[tuple[float, int]] = []  # ascending price, as the book lists them
            for ps in tv:
                c = cents(ps.size)
                now[ps.price] = c
                d = c - last.get(ps.price, 0)
                if d > 0:
                    deltas.append((ps.price, d))
            m.tv[runner_key] = (tv, now)
            if not deltas:
                continue
            if self.config.shared_liquidity or len(orders) == 1:
                pools = [orders]
            else:
                by_robot: dict[str, list[SimOrder]] = {}
                for o in orders:
                    by_robot.setdefault(o.robot, []).append(o)
                pools = list(by_robot.values())
            as_flumine = self.config.traded_share_rounding == "flumine"
            for pool in pools:
                traded = dict(deltas)  # each pool sees the whole update (liquidity isolation)
                for o in sorted(pool, key=_flumine_order) if len(pool) > 1 else pool:
                    got = 0
                    for price, vol in traded.items():
                        if vol <= 0 or (price < o.price if o.back else price > o.price):
                            continue
                        # vol is double-counted cents = one-sided half-cents, the unit of piq.
                        if o.piq < vol:
                            share, half = divmod(vol - o.piq, 2)
                            if half and as_flumine and round(round(vol / 100 / 2 - o.piq_f, 2) * 100) > share:
                                share += 1  # flumine's float of the half cent lies above it
                            size = min(o.open_c - got, share)
                            traded[price] = max(0, vol - o.piq - 2 * size)
                            o.piq = 0
                            o.piq_f = 0.0
                            got += size
                            if got == o.open_c:
                                break
                        else:
                            o.piq -= vol
                            o.piq_f -= vol / 100 / 2
                            traded[price] = 0
                    if got:
                        self._fill(o, o.price_h, got, "MAKER", ts, out)
                        if not o.open_c:
                            self._remove_resting(m, o)

    def _take(self, m: SimMarket, o: SimOrder, r: RunnerBook, ts: int, dry: bool, out: list[Event]) -> int:
        """Match `o` at arrival against the opposite offers at or better than its price; return cents matched."""
        pool_key = "" if self.config.shared_liquidity else o.robot
        taken = m.taken.get(pool_key)
        want = o.open_c
        got = 0
        back = o.back
        for ps in (r.available_to_back if back else r.available_to_lay):
            if (ps.price < o.price) if back else (ps.price > o.price):
                break  # ladders are best first
            key = (o.runner_key, back, ps.price)
            avail = cents(ps.size) - (taken.get(key, 0) if taken else 0)
            if avail <= 0:
                continue
            x = min(avail, want - got)
            got += x
            if not dry:
                if taken is None:
                    taken = m.taken[pool_key] = {}
                taken[key] = taken.get(key, 0) + x
                self._fill(o, hundredths(ps.price), x, "TAKER", ts, out)
            if got == want:
                break
        return got

    def _fill(self, o: SimOrder, price_h: int, size_c: int, liquidity: Literal["MAKER", "TAKER"], ts: int,
              out: list[Event]) -> None:
        o.matched_c += size_c
        o.open_c -= size_c
        o.fills.append((price_h, size_c))
        o.fill_ts.append(ts)
        o.n_fills += 1
        out.append(OrderFilled(o.robot, o.client_order_id, o.venue_order_id, self.venue, o.instrument, ts, ts,
                               f"{o.venue_order_id}-{o.n_fills}", "BUY" if o.back else "SELL", price_h / 100,
                               size_c / 100, 0.0, liquidity, o.open_c / 100))
        if not o.open_c:
            o.state = DONE

    def _remove_resting(self, m: SimMarket, o: SimOrder) -> None:
        orders = m.resting.get(o.runner_key)
        if orders is None:
            return
        orders.remove(o)
        if not orders:
            del m.resting[o.runner_key]
            m.tv.pop(o.runner_key, None)

    def _finish(self, m: SimMarket, o: SimOrder, ts: int, reason: str, out: list[Event]) -> None:
        """Take the unmatched rest of a resting order off the book (cancel, lapse)."""
        o.open_c = 0
        o.state = DONE
        self._remove_resting(m, o)
        out.append(OrderCancelled(o.robot, o.client_order_id, o.venue_order_id, self.venue, o.instrument, ts, ts,
                                  reason))

    # ------------------------------------------------------------------ intents

    def _reject(self, intent: Intent, ts: int, reason: str, out: list[Event], venue_order_id: str | None = None
                ) -> None:
        out.append(OrderRejected(intent.robot, intent.client_order_id, venue_order_id, self.venue, intent.instrument,
                                 ts, ts, reason))

    def _validate(self, intent: PlaceOrder | ReplaceOrder, parsed: tuple[str, int, float] | None) -> str | None:
        if parsed is None:
            return f"bad instrument {intent.instrument!r}: expected '<market_id>:<selection_id>'"
        if intent.order_type in ("MARKET", "LIMIT_ON_CLOSE"):
            return (f"order type {intent.order_type} not supported: BSP bets (MARKET_ON_CLOSE, LIMIT_ON_CLOSE) "
                    "are not simulated, the simulator takes LIMIT orders")
        if intent.order_type != "LIMIT":
            return f"order type {intent.order_type} not supported: Betfair takes LIMIT orders"
        if not is_valid_price(intent.price):
            return f"invalid odds {intent.price}: not a tick of the Betfair price ladder (1.01-1000)"
        size_c = cents(intent.size)
        if size_c <= 0 or abs(size_c - intent.size * 100) > 1e-6:
            return f"invalid size {intent.size}: must be positive with at most two decimals"
        if intent.size < self.config.min_stake:
            return f"size {intent.size} below the minimum stake {self.config.min_stake}"
        return None

    def _place(self, intent: PlaceOrder | ReplaceOrder, parsed: tuple[str, int, float] | None, m: SimMarket | None,
               ts: int, out: list[Event]) -> None:
        key = (intent.robot, intent.client_order_id)
        if type(intent) is PlaceOrder and key in self._orders:
            self._reject(intent, ts, f"duplicate client order id {intent.client_order_id!r}", out)
            return
        problem = self._validate(intent, parsed)
        if problem is None and (m is None or m.book is None):
            problem = f"no market data for market {parsed[0] if parsed else intent.instrument}"
        if problem is not None:
            self._reject(intent, ts, problem, out)
            return
        assert parsed is not None and m is not None and m.book is not None
        o = SimOrder(intent, parsed[0], parsed[1], parsed[2], self.config.persistence == "PERSIST")
        self._orders[key] = o
        book = m.book
        if book.in_play and book.bet_delay > 0 and book.status == "OPEN":
            r = find_runner(book, o.selection_id, o.handicap)
            if self.config.delay_passive_in_play or (r is not None and self._take(m, o, r, ts, True, out)):
                o.eff_ts = ts + book.bet_delay * SEC
                m.pending.append(o)
                return
        self._execute(m, o, ts, out)

    def _run_pending(self, m: SimMarket, now: int, inclusive: bool, out: list[Event]) -> None:
        """Execute the in-play orders whose bet delay ended before `now` (at `now` too if `inclusive`)."""
        due = [o for o in m.pending if o.eff_ts < now or (inclusive and o.eff_ts == now)]
        if not due:
            return
        m.pending = [o for o in m.pending if o not in due]
        for o in due:
            self._execute(m, o, o.eff_ts, out)

    def _execute(self, m: SimMarket, o: SimOrder, ts: int, out: list[Event]) -> None:
        """Accept or reject `o` against the market as it is at `ts`, take what it can, rest the rest."""
        book = m.book
        assert book is not None
        reason = None
        r = find_runner(book, o.selection_id, o.handicap)
        if book.status != "OPEN":
            reason = f"market {book.status.lower()}" if o.eff_ts == 0 else \
                f"market {book.status.lower()} during the in-play bet delay"
        elif r is None:
            reason = f"no runner {o.selection_id} in market {m.market_id}"
        elif r.status != "ACTIVE":
            reason = f"runner {o.selection_id} is {r.status}"
        if reason is not None or r is None:
            o.state = DONE
            o.open_c = 0
            out.append(OrderRejected(o.robot, o.client_order_id, None, self.venue, o.instrument, ts, ts,
                                     reason or "no runner"))
            return
        o.venue_order_id = str(self._next_bet_id)
        self._next_bet_id += 1
        o.state = OPEN
        if not (m.pending or m.resting or m.taken):
            m.status, m.in_play, m.version = book.status, book.in_play, book.version  # fast path skipped these
        if o.tif == "FOK" and self._take(m, o, r, ts, True, out) < o.open_c:
            out.append(OrderAccepted(o.robot, o.client_order_id, o.venue_order_id, self.venue, o.instrument, ts, ts))
            m.orders.append(o)
            o.open_c = 0
            o.state = DONE
            out.append(OrderCancelled(o.robot, o.client_order_id, o.venue_order_id, self.venue, o.instrument, ts, ts,
                                      "fill or kill: not all of it could match at once"))
            return
        out.append(OrderAccepted(o.robot, o.client_order_id, o.venue_order_id, self.venue, o.instrument, ts, ts))
        m.orders.append(o)
        self._take(m, o, r, ts, False, out)
        if not o.open_c:
            return
        if o.tif in ("IOC", "FOK"):
            o.open_c = 0
            o.state = DONE
            out.append(OrderCancelled(o.robot, o.client_order_id, o.venue_order_id, self.venue, o.instrument, ts, ts,
                                      "immediate or cancel: unmatched rest cancelled"))
            return
        # Rest: the same-side money already waiting at this price is ahead of us in the queue.
        for ps in (r.available_to_lay if o.back else r.available_to_back):
            if ps.price == o.price:
                o.piq = 2 * cents(ps.size)
                o.piq_f = ps.size
                break
        orders = m.resting.get(o.runner_key)
        if orders is None:
            m.resting[o.runner_key] = [o]
            m.tv[o.runner_key] = (r.traded_volume, {ps.price: cents(ps.size) for ps in r.traded_volume})
        else:
            orders.append(o)

    def _cancel(self, intent: CancelOrder, m: SimMarket | None, ts: int, out: list[Event]) -> None:
        o = self._orders.get((intent.robot, intent.client_order_id))
        if o is None:
            self._reject(intent, ts, "cancel rejected: unknown order", out)
        elif o.state == PENDING:
            self._reject(intent, ts, "cancel rejected: order is in the in-play bet delay", out)
        elif o.state == DONE:
            self._reject(intent, ts, "cancel rejected: order is no longer open", out, o.venue_order_id)
        elif m is None or m.book is None or m.book.status != "OPEN":
            self._reject(intent, ts, "cancel rejected: market not open", out, o.venue_order_id)
        else:
            self._finish(m, o, ts, intent.reason or "cancelled by request", out)

    def _replace(self, intent: ReplaceOrder, parsed: tuple[str, int, float] | None, m: SimMarket | None, ts: int,
                 out: list[Event]) -> None:
        """Betfair's replace: cancel the unmatched rest, then place a new bet (new bet id, new queue place)."""
        o = self._orders.get((intent.robot, intent.client_order_id))
        problem = self._validate(intent, parsed)
        if o is None:
            problem = "replace rejected: unknown order"
        elif o.state != OPEN:
            problem = "replace rejected: order is not open"
        elif m is None or m.book is None or m.book.status != "OPEN":
            problem = "replace rejected: market not open"
        elif problem is None and parsed is not None and (parsed[1], parsed[2]) != (o.selection_id, o.handicap):
            problem = "replace rejected: instrument differs from the order's"
        if problem is not None or o is None or m is None:
            self._reject(intent, ts, problem or "replace rejected", out)
            return
        self._finish(m, o, ts, "replaced", out)
        self._place(intent, parsed, m, ts, out)

