"""Betfair Exchange Stream API messages -> ticktape events. Pure: no I/O, no clock.

One `StreamDecoder` per connection (live) or per historical file: it holds the market and
order caches, the races and the cricket matches, and turns each message (`mcm`, `ocm`, `rcm`,
`ccm`; `connection`/`status` carry no data) into `(topic, event)` pairs:

* every market change (`mc` entry) -> one `MarketBook` on `md.betfair.market` with the full book
  after that change (ts_event = the message's `pt` in ns), preceded by a `MarketDefinition` on
  the same topic when the change carries a definition that differs from the last one recorded;
* order changes (`oc`) -> `OrderAccepted`/`OrderFilled`/`OrderCancelled` on `orders.betfair`
  (see `producers.betfair.orders`);
* race changes (`rc` of an `rcm`, Betfair's race stream) -> `RaceChange` on `md.betfair.race`, and
  cricket changes (`cc` of a `ccm`) -> `CricketMatch` on `md.betfair.cricket`, keyed by market id:
  the race's or match's state after the change, with the change as sent (see `producers.betfair.sports`).

A `pt` in seconds (race stream files have them: 1e9..1e11) is read as seconds, not as ms in 1970.

The same decoder serves `ticktape import betfair` (historical files, ts_recv = pt) and
`ticktape record betfair` (live, ts_recv = the recorder's capture time). With `encode_books` the
MarketBooks come already encoded (`Encoded`: the codec's bytes, written straight from the ladders
without building the book's objects; ~2x faster end to end), for producers that only append them.
"""

from __future__ import annotations

from typing import Any

import orjson

from producers.betfair import cache
from producers.betfair.cache import MarketCache
from producers.betfair.definition import from_stream
from producers.betfair.orders import OrderCache

# The topics and time rules of the sports streams, imported from here as before they moved.
from producers.betfair.sports import CRICKET_TOPIC as CRICKET_TOPIC
from producers.betfair.sports import RACE_TOPIC as RACE_TOPIC
from producers.betfair.sports import SportsStreams
from producers.betfair.stream_time import MS as MS
from producers.betfair.stream_time import PT_SECONDS as PT_SECONDS
from producers.betfair.stream_time import pt_ns as pt_ns
from ticktape.errors import ValidationError
from ticktape.events import Event, MarketDefinition
from ticktape.tape.base import Encoded

MARKET_TOPIC = "md.betfair.market"
ORDERS_TOPIC = "orders.betfair"
RAW_TOPIC = "raw.betfair"
GAP_TOPIC = "md.betfair.gap"
CLOCK_TOPIC = "meta.betfair.clock"
"""The live recorder's checkpoints (`StreamClock`): the stream's clocks after the events they cover."""

_new = tuple.__new__

CLOSED_TTL = 8 * 3600 * 1_000_000_000
"""How long (ns of stream time) a closed market's state is kept after its last change: betfairlightweight's
`MAX_CACHE_AGE` (8 h), after which its live stream drops a closed market's cache when a new one arrives."""


class StreamDecoder:
    """Stateful fold of one stream's messages into events (state: market and order caches).

    A closed market keeps its state, as betfairlightweight keeps it: a CLOSED definition re-sent
    (e.g. with the settled time) or a runner change after the close folds into the market's last
    book, never into an empty one. Memory: with `evict_closed` (the default), a closed market is
    dropped once it has had no change for `CLOSED_TTL` (8 h) of stream time, checked when a new
    market's cache is made -- betfairlightweight's live rule (`clear_stale_cache`); its historical
    stream never drops one, a difference only for a market changed again 8 h after its close.
    So a stream of thousands of markets holds the open ones plus those closed in the last 8 h of
    its time: each costs its ladders' state (measured with tracemalloc: ~50 KB for the recorded
    6-runner greyhound market 1.197931750, on either twin; more runners and deeper ladders cost more).
    """

    def __init__(self, *, evict_closed: bool = True, runner_names: dict[str, dict[int, str]] | None = None,
                 market_names: dict[str, str] | None = None, encode_books: bool = False) -> None:
        self.markets: dict[str, MarketCache] = {}
        self.orders = OrderCache()
        self.sports = SportsStreams()
        self.evict_closed = evict_closed
        self.runner_names = runner_names or {}
        self.market_names = market_names or {}
        self._last_definition: dict[str, MarketDefinition] = {}
        # Closed markets by the pt (ns) of their last change, oldest first: pt does not go backwards in
        # a stream, so re-inserting on each change keeps the order and eviction looks at the front only.
        self._closed: dict[str, int] = {}
        self.market_updates = 0
        self.last_pt: int | None = None
        self.encode_books = encode_books

    def decode_line(self, line: bytes | str, ts_recv: int | None = None) -> list[tuple[str, Event | Encoded]]:
        """Parse one JSON line and decode it; `ts_recv` None means 'use the message's pt' (historical).

        With the C twin, a market change's runner ladders are parsed in C (`split_market_line`),
        the rest by orjson; lines it does not take are parsed by orjson whole, as without it.
        """
        fast = cache.FAST
        split = fast.split_market_line(line) if fast is not None and type(line) is bytes else None
        try:
            data = orjson.loads(line) if split is None else _join_split(split[0], split[1], line)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValidationError(f"expected a JSON object, got {type(data).__name__}")
        return self.decode(data, ts_recv)

    def decode(self, data: dict[str, Any], ts_recv: int | None = None) -> list[tuple[str, Event | Encoded]]:
        """Events of one stream message (already parsed JSON)."""
        op = data.get("op")
        if op == "mcm":
            pt = _pt(data)
            return self.market_changes(data.get("mc") or (), pt, pt if ts_recv is None else ts_recv)
        if op == "ocm":
            pt = _pt(data)
            recv = pt if ts_recv is None else ts_recv
            out: list[tuple[str, Event | Encoded]] = []
            for oc in data.get("oc") or ():
                out.extend((ORDERS_TOPIC, e) for e in self.orders.apply(oc, pt, recv))
            return out
        if op == "rcm":
            pt = _pt(data)
            return list(self.sports.race(data, pt, pt if ts_recv is None else ts_recv))
        if op == "ccm":
            pt = _pt(data)
            return list(self.sports.cricket(data, pt, pt if ts_recv is None else ts_recv))
        if op in ("connection", "status", "marketCatalogue"):
            return []
        raise ValidationError(f"unknown stream operation op={op!r}")

    def market_changes(self, mcs: Any, pt: int, ts_recv: int) -> list[tuple[str, Event | Encoded]]:
        """Events of an `mcm`'s market changes, all published at `pt` (ns)."""
        out: list[tuple[str, Event | Encoded]] = []
        markets = self.markets
        for mc in mcs:
            market_id = mc["id"]
            cache = markets.get(market_id)
            if cache is None or mc.get("img"):
                # A full image replaces the cache, as betfairlightweight does (historical files have no img).
                if self.evict_closed:
                    self._evict_closed(pt)
                cache = markets[market_id] = MarketCache(market_id)
            definition = mc.get("marketDefinition")
            cache.fold(mc)
            if definition is not None:
                md = from_stream(market_id, definition, pt, ts_recv, self.runner_names.get(market_id),
                                 self.market_names.get(market_id))
                last = self._last_definition.get(market_id)
                if last is None or last[3:] != md[3:]:  # fields after the times: a real change
                    self._last_definition[market_id] = md
                    out.append((MARKET_TOPIC, md))
            closed = self._closed
            if market_id in closed:
                del closed[market_id]  # re-inserted below at the end: its last change is now
            if cache.closed:
                closed[market_id] = pt
            if self.encode_books:
                # tuple.__new__: Encoded's own __new__ is a Python function (~0.1 µs more an update)
                out.append((MARKET_TOPIC, _new(Encoded, (market_id, pt, cache.encoded_book(pt, ts_recv)))))
            else:
                out.append((MARKET_TOPIC, cache.book(pt, ts_recv)))
            self.market_updates += 1
        self.last_pt = pt
        return out

    def restore_market(self, market: MarketCache, definition: MarketDefinition | None, pt: int) -> None:
        """Take a market's state rebuilt elsewhere (a restarted recorder: `producers.betfair.resume`):
        its cache, the last definition recorded for it (later equal ones are not emitted again) and
        `pt` (ns), its last change (a closed market is evicted `CLOSED_TTL` after it). Restore markets
        in the order of their `pt`, as eviction looks at the oldest closed market first."""
        self.markets[market.market_id] = market
        if definition is not None:
            self._last_definition[market.market_id] = definition
        self._closed.pop(market.market_id, None)
        if market.closed:
            self._closed[market.market_id] = pt

    def market(self, market_id: str) -> MarketCache | None:
        """The cache of a market (None when unknown, or dropped 8 h of stream time after it closed)."""
        return self.markets.get(market_id)

    def _evict_closed(self, pt: int) -> None:
        """Drop the closed markets with no change in the last `CLOSED_TTL` before `pt` (oldest first)."""
        closed = self._closed
        while closed:
            market_id, last = next(iter(closed.items()))
            if pt - last <= CLOSED_TTL:
                break
            del closed[market_id]
            self.markets.pop(market_id, None)
            self._last_definition.pop(market_id, None)


def _join_split(reduced: bytes, changes: list[Any], line: bytes | str) -> Any:
    """The parsed line from `split_market_line`'s answer: orjson parses the line without its runner
    ladders, and each market change's `rc` (its index into `changes`) becomes the parsed `Changes`.

    The shortened line is valid JSON exactly when the line is; should orjson refuse it anyway,
    the line itself is parsed, so an error names the original position.
    """
    try:
        data = orjson.loads(reduced)
    except orjson.JSONDecodeError:
        return orjson.loads(line)
    for mc in data["mc"]:
        if "rc" in mc:
            mc["rc"] = changes[mc["rc"]]
    return data


def _pt(data: dict[str, Any]) -> int:
    """The message's publish time in ns; `pt` in ms, or in seconds where it can only be seconds."""
    pt = data.get("pt")
    if not isinstance(pt, int) or isinstance(pt, bool):
        raise ValidationError(f"message without a valid publish time pt: {pt!r}")
    ns = pt_ns(pt)
    if not -(1 << 63) <= ns < 1 << 63:  # refused here, not when its events' batch is encoded (that stops an import)
        raise ValidationError(f"publish time pt out of range: {pt!r}")
    return ns
