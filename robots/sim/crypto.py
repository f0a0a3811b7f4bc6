"""The crypto simulated venue: a deterministic matching engine over recorded trades, quotes and books.

Inputs per instrument: `Trade`, `Quote`, `BookSnapshot`, `BookDelta`, or `Bar` (market data, via
`on_market`) and `PlaceOrder` / `CancelOrder` / `ReplaceOrder` (via `on_intent`, at their
arrival time; the runner adds the configured latency). Outputs: `OrderAccepted`,
`OrderRejected` (venue rejections have `control=None`), `OrderFilled` (deterministic
`fill_id = "<client_order_id>-<n>"`, liquidity, fee, leaves), `OrderCancelled`, `OrderExpired`,
each stamped with the event time at which it happens and, where the schema has one, a reason.

The assumptions, each chosen so that nothing fills that the recorded market could not have filled:

- **Taker liquidity** is the displayed book: the most recently updated of the depth book
  (snapshots + deltas) and the top-of-book quote. Market orders and the crossing part of limit
  orders walk it level by level (one fill per level, at the level's price). The simulated order's
  own consumption is subtracted from the level (in book and quote alike, as both show the same
  market) until the recorded market next updates that level.
  With neither book nor quote, and `trade_fallback` on, a market order may take up to the size
  of the last trade at its price (each trade's size is used once); otherwise it is rejected.
  `unlimited_trade_fallback` (off by default, optimistic) fills such orders in full at that price.
- **Market orders never rest.** Whatever the book cannot fill at arrival expires at once
  (`OrderExpired`, reason says how much was missing), as do IOC and FOK remainders. FOK fills
  completely or not at all. DAY is rejected (crypto has no session).
- **Resting limit orders** join the back of their level: the queue ahead is the displayed size
  at their price at arrival. It is *unknown* (treated as infinite) when the price lies beyond the
  visible depth or no depth is known, until a book update or quote shows the level.
  Trades at the order's price reduce the queue ahead first; only the excess fills the order.
  A trade *through* the price (a sell printing below a resting buy) proves the level was
  emptied, so the order fills from that trade's size. Each trade's size is shared once among all
  simulated orders, in price then time priority; only trades whose aggressor is on the other side
  (or unknown) fill a resting order. A book that merely crosses a resting order fills nothing.
- **Level size decreases** (cancels by others) advance the queue according to `queue_model`:
  `conservative` (default) assumes cancels come from behind the order, so the queue ahead only
  shrinks when the level becomes smaller than it; `pro_rata` spreads the cancels (the decrease
  minus the volume traded at the level since its last update) over the level, so the queue ahead
  loses its proportional share. Increases never move the queue ahead (newcomers join behind).
- **Bars** (when a run has no trades, book or quote): a bar counts as one print of its whole
  volume at its close for market orders (the trade fallback), resting buys fill at their limit when
  the bar's low went below it and sells when its high went above it (one volume pool for both),
  stops trigger on the high/low and then execute at the close.
- **Stop-market orders** trigger on a trade printing at or through the stop price after the order
  arrived (never on arrival), then execute as a market order against the book at that trade's time.
- **Replace** carries the order's new total size (filled + leaves). It keeps queue priority only
  when the price is unchanged and the size does not grow; otherwise it re-enters the queue (and
  may cross, filling as taker). It is acknowledged by an `OrderAccepted` with the same ids.
  Side and order type cannot change. A new size at or below the filled size cancels the rest.
- **Fees**: maker and taker rates of notional (negative = rebate), computed exactly and
  rounded to 1e-9 of the quote currency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from robots.positions import fee_units, from_units, to_units
from robots.sim.base import Intent
from robots.sim.crypto_config import QUEUE_MODELS, CryptoVenueConfig
from robots.sim.crypto_state import MarketState, SimOrder
from ticktape.events import (
    Bar,
    BookDelta,
    BookSnapshot,
    CancelOrder,
    Event,
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

__all__ = ["QUEUE_MODELS", "CryptoVenue", "CryptoVenueConfig", "MarketState", "SimOrder"]


_UNLIMITED = 1 << 62
_LIMIT_TYPES = ("LIMIT", "LIMIT_MAKER")  # orders with a limit price that may rest
"""Size available at the last trade under `unlimited_trade_fallback` (more than any order)."""


def _fmt(units: int) -> str:
    return f"{from_units(units):g}"


class CryptoVenue:
    """Simulated crypto exchange implementing `robots.sim.base.SimVenue` (see the module doc)."""

    def __init__(self, config: CryptoVenueConfig | None = None) -> None:
        self.config = config or CryptoVenueConfig()
        self._markets: dict[str, MarketState] = {}
        self._orders: dict[tuple[str, str], SimOrder] = {}
        self._seen: set[tuple[str, str]] = set()
        self._next_id = 0
        self._priority = 0
        self._pro_rata = self.config.queue_model == "pro_rata"

    # -- SimVenue ----------------------------------------------------------------------------
    def latency_ns(self, intent: Intent) -> int:
        """Place, cancel and replace latencies from the config."""
        if isinstance(intent, PlaceOrder):
            return self.config.place_latency_ns
        if isinstance(intent, CancelOrder):
            return self.config.cancel_latency_ns
        return self.config.replace_latency_ns

    def on_market(self, event: Event) -> Sequence[Event]:
        """Update the recorded market; return fills of resting orders and triggered stops."""
        kind = type(event)
        if kind is Trade:
            m = self._markets.get(event.instrument)  # type: ignore[union-attr]
            if m is not None and not m.resting and not m.stops:  # the hot path: nothing resting
                m.last_trade = event  # type: ignore[assignment]
                m.last_trade_taken = 0
                return ()
            return self._on_trade(event)  # type: ignore[arg-type]
        if kind is Bar:
            return self._on_bar(event)  # type: ignore[arg-type]
        if kind is BookDelta:
            self._on_delta(event)  # type: ignore[arg-type]
        elif kind is BookSnapshot:
            self._on_snapshot(event)  # type: ignore[arg-type]
        elif kind is Quote:
            self._on_quote(event)  # type: ignore[arg-type]
        return ()

    def on_intent(self, intent: Intent, arrival_ts: int) -> Sequence[Event]:
        """Accept/reject, then match, an intent arriving at `arrival_ts`."""
        if isinstance(intent, PlaceOrder):
            return self._place(intent, arrival_ts)
        if isinstance(intent, CancelOrder):
            return self._cancel(intent, arrival_ts)
        return self._replace(intent, arrival_ts)

    # -- inspection --------------------------------------------------------------------------
    def open_orders(self) -> list[SimOrder]:
        """Live orders (resting limits and untriggered stops) in priority order."""
        return sorted(self._orders.values(), key=lambda o: o.priority)

    def market(self, instrument: str) -> MarketState:
        """The venue's view of one instrument (created empty if unseen)."""
        m = self._markets.get(instrument)
        if m is None:
            m = self._markets[instrument] = MarketState()
        return m

    # -- events ------------------------------------------------------------------------------
    def _fill(self, o: SimOrder, price_u: int, size_u: int, liquidity: str, ts: int) -> OrderFilled:
        o.leaves_u -= size_u
        o.n_fills += 1
        rate = self.config.maker_rate if liquidity == "MAKER" else self.config.taker_rate
        fee = fee_units(price_u, size_u, rate)
        return OrderFilled(
            o.robot, o.client_order_id, o.venue_order_id, o.venue, o.instrument, ts, ts,
            f"{o.client_order_id}-{o.n_fills}", o.side, from_units(price_u), from_units(size_u),  # type: ignore[arg-type]
            from_units(fee), liquidity, from_units(o.leaves_u),  # type: ignore[arg-type]
        )

    def _expired(self, o: SimOrder, ts: int, reason: str) -> OrderExpired:
        self._close(o)
        return OrderExpired(o.robot, o.client_order_id, o.venue_order_id, o.venue, o.instrument, ts, ts, reason)

    def _accepted(self, o: SimOrder, ts: int) -> OrderAccepted:
        return OrderAccepted(o.robot, o.client_order_id, o.venue_order_id, o.venue, o.instrument, ts, ts)

    @staticmethod
    def _rejected(intent: Intent, ts: int, reason: str, venue_order_id: str | None = None) -> OrderRejected:
        return OrderRejected(intent.robot, intent.client_order_id, venue_order_id, intent.venue, intent.instrument,
                             ts, ts, reason, None)

    def _close(self, o: SimOrder) -> None:
        self._orders.pop((o.robot, o.client_order_id), None)
        m = self._markets.get(o.instrument)
        if m is not None:
            if o in m.resting:
                m.unrest(o)
            if o in m.stops:
                m.stops.remove(o)

    # -- intents -----------------------------------------------------------------------------
    def _validate(self, intent: PlaceOrder | ReplaceOrder) -> str | None:
        if intent.side not in ("BUY", "SELL"):
            return f"unknown side {intent.side!r}"
        if intent.order_type not in ("MARKET", "LIMIT", "STOP_MARKET", "LIMIT_MAKER"):
            return f"order type {intent.order_type} is not offered by the crypto venue"
        if intent.order_type == "LIMIT_MAKER" and intent.time_in_force != "GTC":
            return f"a LIMIT_MAKER order only rests: time in force must be GTC, not {intent.time_in_force}"
        if not (math.isfinite(intent.size) and intent.size > 0 and to_units(intent.size) > 0):
            return f"size must be positive (at least 1e-9), got {intent.size!r}"
        if intent.order_type != "MARKET" and not (math.isfinite(intent.price) and intent.price > 0):
            return f"{intent.order_type} price must be positive, got {intent.price!r}"
        if intent.time_in_force not in ("GTC", "IOC", "FOK"):
            return f"time in force {intent.time_in_force} is not supported by the crypto venue (GTC, IOC, FOK)"
        return None

    def _place(self, intent: PlaceOrder, ts: int) -> list[Event]:
        key = (intent.robot, intent.client_order_id)
        if key in self._seen:
            return [self._rejected(intent, ts, f"duplicate client order id {intent.client_order_id}")]
        problem = self._validate(intent)
        if problem is not None:
            return [self._rejected(intent, ts, problem)]
        m = self.market(intent.instrument)
        taker = self._post_only_takes(m, intent)
        if taker:
            return [self._rejected(intent, ts, taker)]
        if intent.order_type == "MARKET" and m.source() is None and (
            not self.config.trade_fallback or m.last_trade is None
        ):
            why = f"no liquidity: no book, quote or trade seen yet for {intent.instrument}"
            return [self._rejected(intent, ts, why)]
        self._seen.add(key)
        self._next_id += 1
        size_u = to_units(intent.size)
        o = SimOrder(
            intent.robot, intent.client_order_id, intent.venue, intent.instrument,
            f"{self.config.order_id_prefix}-{self._next_id}", intent.side, intent.order_type, intent.time_in_force,
            to_units(intent.price) if intent.order_type != "MARKET" else 0, size_u, size_u, ts,
        )
        out: list[Event] = [self._accepted(o, ts)]
        self._orders[key] = o
        if o.order_type == "STOP_MARKET":
            self._priority += 1
            o.priority = self._priority
            m.stops.append(o)
            return out
        self._execute(m, o, ts, out)
        return out

    def _post_only_takes(self, m: MarketState, intent: PlaceOrder | ReplaceOrder) -> str | None:
        """Why a LIMIT_MAKER order would take liquidity at once (Binance refuses it), or None."""
        if intent.order_type != "LIMIT_MAKER" or self._available(m, intent.side, to_units(intent.price)) == 0:
            return None
        return f"LIMIT_MAKER {intent.side} at {intent.price:g} would immediately match and take"

    def _execute(self, m: MarketState, o: SimOrder, ts: int, out: list[Event]) -> None:
        """Take what crosses now; rest or expire the rest by order type and time in force."""
        limit = o.price_u if o.order_type in _LIMIT_TYPES else None
        if o.tif == "FOK":
            available = self._available(m, o.side, limit)
            if available < o.leaves_u:
                out.append(self._expired(o, ts, f"FOK: only {_fmt(available)} of {_fmt(o.leaves_u)} available"
                                         + (f" at or better than {_fmt(limit)}" if limit is not None else "")))
                return
        self._take(m, o, limit, ts, out)
        if o.leaves_u == 0:
            self._close(o)
        elif o.order_type not in _LIMIT_TYPES or o.tif != "GTC":
            kind = "market order" if o.order_type not in _LIMIT_TYPES else o.tif
            out.append(self._expired(o, ts, f"{kind}: {_fmt(o.leaves_u)} of {_fmt(o.size_u)} unfilled, "
                                     "no more displayed liquidity" + (f" at or better than {_fmt(limit)}"
                                                                       if limit is not None else "")))
        else:
            self._priority += 1
            o.priority = self._priority
            o.queue_u = m.displayed(o.side, o.price_u)
            m.rest(o)

    def _available(self, m: MarketState, side: str, limit: int | None) -> int:
        src = m.source()
        if src is not None:
            return sum(size for _, size in src.takeable(side, limit))
        last = m.last_trade
        if self.config.trade_fallback and last is not None:
            price = to_units(last.price)
            if limit is None or (price <= limit if side == "BUY" else price >= limit):
                if self.config.unlimited_trade_fallback:
                    return _UNLIMITED
                return max(0, to_units(last.size) - m.last_trade_taken)
        return 0

    def _take(self, m: MarketState, o: SimOrder, limit: int | None, ts: int, out: list[Event]) -> None:
        src = m.source()
        if src is not None:
            for price, size in src.takeable(o.side, limit):
                if o.leaves_u == 0:
                    break
                q = min(o.leaves_u, size)
                src.consume(o.side, price, q)
                # Book and quote show the same market: what was taken from one is gone from the other.
                other = m.quote if src is m.book else m.book
                if other.ts is not None:
                    other.consume(o.side, price, q)
                out.append(self._fill(o, price, q, "TAKER", ts))
            return
        last = m.last_trade
        if self.config.trade_fallback and last is not None:
            price = to_units(last.price)
            left = _UNLIMITED if self.config.unlimited_trade_fallback else to_units(last.size) - m.last_trade_taken
            if left > 0 and (limit is None or (price <= limit if o.side == "BUY" else price >= limit)):
                q = min(o.leaves_u, left)
                m.last_trade_taken += q
                out.append(self._fill(o, price, q, "TAKER", ts))

    def _cancel(self, intent: CancelOrder, ts: int) -> list[Event]:
        key = (intent.robot, intent.client_order_id)
        o = self._orders.get(key)
        if o is None:
            why = "is already closed (filled, cancelled or expired)" if key in self._seen else "is unknown"
            return [self._rejected(intent, ts, f"cancel: order {intent.client_order_id} {why}")]
        self._close(o)
        return [OrderCancelled(o.robot, o.client_order_id, o.venue_order_id, o.venue, o.instrument, ts, ts,
                               intent.reason or "cancelled by robot")]

    def _replace(self, intent: ReplaceOrder, ts: int) -> list[Event]:
        key = (intent.robot, intent.client_order_id)
        o = self._orders.get(key)
        if o is None:
            why = "is already closed (filled, cancelled or expired)" if key in self._seen else "is unknown"
            return [self._rejected(intent, ts, f"replace: order {intent.client_order_id} {why}")]
        problem = self._validate(intent)
        if problem is None and (intent.side != o.side or intent.order_type != o.order_type):
            problem = "replace cannot change side or order type (cancel and place a new order)"
        if problem is None:
            problem = self._post_only_takes(self.market(o.instrument), intent)
        if problem is not None:
            return [self._rejected(intent, ts, f"replace: {problem}", o.venue_order_id)]
        new_size = to_units(intent.size)
        filled = o.size_u - o.leaves_u
        if new_size <= filled:
            self._close(o)
            return [OrderCancelled(o.robot, o.client_order_id, o.venue_order_id, o.venue, o.instrument, ts, ts,
                                   f"replace to size {_fmt(new_size)} at or below the filled {_fmt(filled)}")]
        new_price = to_units(intent.price)
        keep_priority = new_price == o.price_u and new_size <= o.size_u
        o.size_u, o.leaves_u, o.tif = new_size, new_size - filled, intent.time_in_force
        out: list[Event] = [self._accepted(o, ts)]
        if keep_priority or o.order_type == "STOP_MARKET":
            o.price_u = new_price
            return out
        m = self.market(o.instrument)
        m.unrest(o)
        o.price_u = new_price
        self._execute(m, o, ts, out)
        return out

    # -- market data -------------------------------------------------------------------------
    def _on_trade(self, ev: Trade) -> Sequence[Event]:
        m = self._markets.get(ev.instrument) or self.market(ev.instrument)
        m.last_trade = ev
        m.last_trade_taken = 0
        if not m.resting and not m.stops:
            return ()  # the hot path of a backtest with market orders only
        price_u = to_units(ev.price)
        size_u = to_units(ev.size)
        out: list[Event] = []
        if m.resting:  # what resting orders took of this trade is not there for market orders
            m.last_trade_taken = self._fill_resting(m, ev.aggressor_side, price_u, size_u, ev.ts_event, out)
        if m.stops:
            self._trigger_stops(m, price_u, price_u, ev.ts_event, out)
        return out

    def _on_bar(self, ev: Bar) -> Sequence[Event]:
        m = self._markets.get(ev.instrument) or self.market(ev.instrument)
        # Bars only (no trades, book or quote): the bar is taken as one print of its whole volume at
        # its close for market orders; resting orders fill only from prices the bar went *through*.
        m.last_trade = Trade(ev.venue, ev.instrument, ev.ts_event, ev.ts_recv, ev.close, ev.volume, "NONE", "")
        m.last_trade_taken = 0
        if not m.resting and not m.stops:
            return ()
        out: list[Event] = []
        volume = to_units(ev.volume)
        if m.resting:  # buys fill from the low, sells from the high, out of one volume pool
            used = self._fill_resting(m, "SELL", to_units(ev.low), volume, ev.ts_event, out, through_only=True)
            used += self._fill_resting(m, "BUY", to_units(ev.high), volume - used, ev.ts_event, out,
                                       through_only=True)
            m.last_trade_taken = used
        if m.stops:
            self._trigger_stops(m, to_units(ev.high), to_units(ev.low), ev.ts_event, out)
        return out

    def _trigger_stops(self, m: MarketState, high_u: int, low_u: int, ts: int, out: list[Event]) -> None:
        """Buy stops at or below `high_u` and sell stops at or above `low_u` become market orders."""
        for o in [s for s in m.stops if (high_u >= s.price_u if s.side == "BUY" else low_u <= s.price_u)]:
            m.stops.remove(o)
            o.order_type = "MARKET"  # triggered: from now on a market order
            self._execute(m, o, ts, out)

    def _fill_resting(self, m: MarketState, agg: str, price_u: int, size_u: int, ts: int, out: list[Event],
                      through_only: bool = False) -> int:
        """Fill resting orders from a print of `size_u` at `price_u` by aggressor `agg`; returns the size used.

        `through_only`: only orders the print went through (a bar's low/high says nothing of the
        volume traded exactly there)."""
        if self._pro_rata and (("BUY", price_u) in m.at or ("SELL", price_u) in m.at):
            m.traded_at[price_u] = m.traded_at.get(price_u, 0) + size_u
        eligible = [
            o for o in m.resting
            if (o.side == "BUY" and agg != "BUY" and o.price_u >= price_u)
            or (o.side == "SELL" and agg != "SELL" and o.price_u <= price_u)
        ]
        if not eligible or size_u <= 0:
            return 0
        # Price priority (those the trade went through first), then time priority.
        eligible.sort(key=lambda o: (-o.price_u if o.side == "BUY" else o.price_u, o.priority))
        pool = size_u
        at_level: int | None = None  # the volume that reached the trade's own price level
        for o in eligible:
            if o.price_u != price_u:
                o.queue_u = 0  # the level was emptied: the trade printed beyond it
                q = min(o.leaves_u, pool)
            else:
                if through_only:
                    continue
                if at_level is None:
                    at_level = pool
                ahead = o.queue_u
                if ahead is None:
                    continue  # unknown queue: a print at the price does not prove it reached us
                o.queue_u = max(0, ahead - at_level)
                q = min(o.leaves_u, max(0, at_level - ahead), pool)
            if q > 0:
                pool -= q
                out.append(self._fill(o, o.price_u, q, "MAKER", ts))
                if o.leaves_u == 0:
                    self._close(o)
        return size_u - pool

    def _requeue(self, m: MarketState, side: str, price_u: int, old: int, new: int) -> None:
        """A recorded change of the level at `price_u` on `side` from `old` to `new` units."""
        traded = m.traded_at.pop(price_u, 0) if self._pro_rata else 0
        for o in m.at.get((side, price_u), ()):
            ahead = o.queue_u
            if ahead is None:
                o.queue_u = new  # the level became visible: everything shown is ahead (conservative)
                continue
            if self._pro_rata and old > new and old > 0:
                cancels = max(0, old - new - traded)
                ahead -= cancels * ahead // old
            o.queue_u = min(ahead, new)

    def _on_delta(self, ev: BookDelta) -> None:
        m = self.market(ev.instrument)
        m.book.ts = ev.ts_event
        for side, levels in (("BUY", ev.bids), ("SELL", ev.asks)):
            for price_u, old, new in m.book.update(side, levels):
                if m.at and (side, price_u) in m.at:
                    self._requeue(m, side, price_u, old, new)

    def _on_snapshot(self, ev: BookSnapshot) -> None:
        m = self.market(ev.instrument)
        levels = sorted({(o.side, o.price_u) for o in m.resting})
        before = {lv: m.book.displayed(*lv) for lv in levels}
        m.book.replace(ev.bids, ev.asks, ev.ts_event)
        for side, price_u in levels:
            book_side = m.book.side(side)
            if not book_side:
                continue
            worst = min(book_side) if side == "BUY" else max(book_side)
            if (price_u >= worst) if side == "BUY" else (price_u <= worst):  # within the visible depth
                self._requeue(m, side, price_u, before[(side, price_u)], book_side.get(price_u, 0))
        if self._pro_rata:
            m.traded_at.clear()

    def _on_quote(self, ev: Quote) -> None:
        m = self.market(ev.instrument)
        q = m.quote
        q.set_top(to_units(ev.bid_price), to_units(ev.bid_size), to_units(ev.ask_price), to_units(ev.ask_size),
                  ev.ts_event)
        for o in m.resting:
            levels = q.side(o.side)
            if not levels:
                continue
            (top, size), = levels.items()
            if o.price_u == top:
                o.queue_u = size if o.queue_u is None else min(o.queue_u, size)
            elif (o.price_u > top) if o.side == "BUY" else (o.price_u < top):
                o.queue_u = 0  # the quote shows nothing at our price any more
