"""Betfair order stream changes (`ocm`) -> order events. Pure: state is the orders seen so far.

Betfair sends each order's whole current state (`uo`: status E executable / EC complete, size
matched `sm`, remaining `sr`, cancelled `sc`, lapsed `sl`, voided `sv`, average price matched
`avp`) and, per runner, the account's matched amounts by price (`mb` backs, `ml` lays: `[price,
size]`, size the new total at that price, 0 removes it; a runner's `fullImage` replaces them).
ticktape records what changed as events:

| Betfair, for one bet                                   | event                                              |
| ------------------------------------------------------ | -------------------------------------------------- |
| first seen (any status)                                | `OrderAccepted` with side, price, size, persistence |
| `sm` grew                                              | `OrderFilled` per price it matched at (see below)  |
| became EC with `sc`/`sl`/`sv` > 0                      | `OrderCancelled`, reason names the amounts         |
| `sc`/`sl`/`sv` grew after EC (a void after completion) | `OrderCancelled`: the increase, "after completion" |
| its market's `closed` arrives while it is still E      | `OrderCancelled` "lapsed at market close ..."      |

An order is keyed by (market id, selection id, handicap, bet id): the same bet id on two runners
is two orders (betfairlightweight keeps orders per runner the same way).

Fill price: from the runner's matched-by-price ladder of the order's side: the ladder's growth in
the same change is the matching, split over the orders whose `sm` grew (one order: all of it; more:
the orders with the tightest limit price first, each from the prices its limit allows, best price
first). Where the ladder cannot account for an order's growth (ladders not subscribed, or they do
not add up), the price of the increase from `avp` (`avp * sm` before and after) when that is a
whole cent, else the order's own price: never a price off Betfair's ladder such as 2.892857.
Liquidity: TAKER when the matching shows up in the same update the order is first seen (it
matched on arrival), MAKER when it matched later while resting. Commission is charged at
settlement, so `fee` is 0. Identity: `robot` = `rfs` (customer strategy ref), `client_order_id` =
`rfo` (customer order ref) or the bet id, `venue_order_id` = bet id, `instrument` =
`<market_id>:<selection_id>` (`:<handicap>` appended when the handicap is not 0).

**Reference change**: the identity is fixed when a bet is first seen. Betfair's customer refs do
not change, so a later line of the same bet with other `rfo`/`rfs` is taken as the same bet (its
amounts are used) and its events keep the first refs: a robot never sees its order split in two.
**`closed`** (an `oc` entry's "closed": true: the stream sends nothing more for that market):
every order of the market still executable gets the `OrderCancelled` above (Betfair lapses what is
unmatched at close; the stream sent no final state); the market's orders are kept, so a later
line for them is compared with what was already recorded, not taken as a new order.

Not events of their own: a partial cancellation (size reduced while the order stays
executable) and price/size replacements (Betfair gives the replacement a new bet id, which then
shows up as a new order); the final `OrderCancelled` reason carries the total cancelled. An order
left out of a later full image produces nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ticktape.domain import betfair_instrument, parse_betfair_instrument
from ticktape.events import Event, OrderAccepted, OrderCancelled, OrderFilled, Side

VENUE = "betfair"

_PERSISTENCE = {"L": "LAPSE", "P": "PERSIST", "MOC": "MARKET_ON_CLOSE"}
_DONE_PARTS = (("sc", "cancelled"), ("sl", "lapsed"), ("sv", "voided"))
_NO_GROWTH: dict[float, int] = {}  # never written: a ladder only shrinks when it grew in the same change
_PART_NAMES = [name for _, name in _DONE_PARTS]
_PART_AMOUNT = re.compile(r"(cancelled|lapsed|voided) (-?[0-9]+(?:\.[0-9]+)?)")
_MATCHED_AFTER_VOID = re.compile(r"\(matched [0-9.]+ -> ([0-9.]+)\)")


def instrument_id(market_id: str, selection_id: int, handicap: float = 0) -> str:
    """`<market_id>:<selection_id>`, with `:<handicap>` when the runner has one (`ticktape.domain`)."""
    return betfair_instrument(market_id, selection_id, handicap)


def _c(value: Any) -> int:
    """A Betfair amount (2 decimals) in integer cents."""
    return round(value * 100) if value else 0


def _amount(c: int) -> str:
    """Cents as the shortest decimal text: 400 -> "4", 80 -> "0.8", 123 -> "1.23"."""
    sign = "-" if c < 0 else ""
    whole, frac = divmod(abs(c), 100)
    return f"{sign}{whole}" if not frac else f"{sign}{whole}.{frac:02d}".rstrip("0")


class _Order:
    __slots__ = ("back", "client_id", "done", "limit", "matched", "notional", "parts", "remaining", "robot")

    def __init__(self, robot: str, client_id: str, back: bool, limit: float | None) -> None:
        # Identity is fixed when the order is first seen: later updates may carry other refs.
        self.robot = robot
        self.client_id = client_id
        self.back = back
        self.limit = limit
        self.matched = 0  # cents
        self.notional = 0  # sum of price hundredths x cents matched (the avp fallback)
        self.parts = [0, 0, 0]  # cents cancelled, lapsed, voided as last recorded
        self.remaining: float = 0  # unmatched and live (`sr`) as last seen
        self.done = False


class _Runner:
    """The account's matched amounts by price on one runner, back and lay (price -> cents)."""

    __slots__ = ("mb", "ml")

    def __init__(self) -> None:
        self.mb: dict[float, int] = {}
        self.ml: dict[float, int] = {}


def _ladder_growth(ladder: dict[float, int], rows: list[list[float]] | None, old: dict[float, int]
                   ) -> dict[float, int]:
    """Apply `rows` to `ladder` in place (`old` is the ladder before: itself, or the one a full image
    replaces); return the growth by price."""
    growth: dict[float, int] = {}
    for price, size in rows or ():
        c = round(size * 100) if size else 0
        before = old.get(price, 0)
        if c:
            ladder[price] = c
        else:
            ladder.pop(price, None)
        if c > before:
            growth[price] = c - before
    return growth


class OrderCache:
    """Every order of the stream by (market, selection, handicap, bet id); `apply` turns one `oc` entry into events."""

    def __init__(self) -> None:
        self.orders: dict[tuple[str, int, float, str], _Order] = {}
        self.runners: dict[str, dict[tuple[int, float], _Runner]] = {}  # market -> (selection, handicap) ->
        self.by_market: dict[str, list[tuple[str, int, float, str]]] = {}

    def restore(self, events: Iterable[Event]) -> int:
        """Rebuild the state that emitting `events` (this stream's `orders.betfair` events, in order) left;
        returns how many were folded in. A restarted recorder without raw payloads does this, then
        subscribes afresh: the image's orders are compared with what was recorded, so an order is not
        accepted twice nor its matched stake filled again, and only what changed while it was down
        becomes events.

        Each order: its identity, side and limit from `OrderAccepted`; matched stake and the notional
        from its fills (their prices also rebuild the runner's matched-by-price ladders, which Betfair
        builds from the same matches); the cancelled/lapsed/voided amounts recorded from the reasons
        of its `OrderCancelled` events (this module writes them: "cancelled 2, lapsed 0.5", "... after
        completion", "lapsed ... at market close"); complete once an `OrderCancelled` or a fill leaving
        nothing unmatched was recorded. Orders whose `OrderAccepted` is not among `events` are skipped.
        """
        n = 0
        for event in events:
            if not isinstance(event, OrderAccepted | OrderFilled | OrderCancelled) or event.venue != VENUE:
                continue
            market_id, selection_id, handicap = parse_betfair_instrument(event.instrument)
            key = (market_id, selection_id, handicap, event.venue_order_id or "")
            o = self.orders.get(key)
            if isinstance(event, OrderAccepted):
                if o is None:
                    o = self.orders[key] = _Order(event.robot, event.client_order_id, event.side == "BUY", event.price)
                    o.remaining = event.size or 0
                    self.by_market.setdefault(market_id, []).append(key)
            elif o is None:
                continue
            elif isinstance(event, OrderFilled):
                cents = round(event.size * 100)
                o.matched += cents
                o.notional += round(event.price * 100) * cents
                o.remaining = event.leaves_size
                o.done = o.done or event.leaves_size <= 0
                runner = self.runners.setdefault(market_id, {}).setdefault((selection_id, handicap), _Runner())
                ladder = runner.mb if o.back else runner.ml
                ladder[event.price] = ladder.get(event.price, 0) + cents
            else:
                o.done = True
                for name, amount in _PART_AMOUNT.findall(event.reason):
                    o.parts[_PART_NAMES.index(name)] += _c(float(amount))
                voided = _MATCHED_AFTER_VOID.search(event.reason)
                if voided:
                    o.matched = _c(float(voided.group(1)))
            n += 1
        return n

    def apply(self, oc: dict[str, Any], ts_event: int, ts_recv: int) -> list[Event]:
        """Events for one order-market change (`oc` entry of an `ocm`)."""
        market_id = str(oc["id"])
        out: list[Event] = []
        runners = self.runners.get(market_id)
        if runners is None or oc.get("fullImage"):
            runners = self.runners[market_id] = {}  # a market's full image replaces all its runners' ladders
        for orc in oc.get("orc") or ():
            selection_id = int(orc["id"])
            handicap = float(orc.get("hc") or 0)
            instrument = instrument_id(market_id, selection_id, handicap)
            full = bool(orc.get("fullImage"))
            mb, ml = orc.get("mb"), orc.get("ml")
            backs = lays = _NO_GROWTH
            if full or mb is not None or ml is not None:
                runner = runners.get((selection_id, handicap))
                if runner is None:
                    runner = runners[(selection_id, handicap)] = _Runner()
                if full:
                    runner.mb, old_mb, runner.ml, old_ml = {}, runner.mb, {}, runner.ml
                    backs = _ladder_growth(runner.mb, mb, old_mb)
                    lays = _ladder_growth(runner.ml, ml, old_ml)
                else:
                    if mb is not None:
                        backs = _ladder_growth(runner.mb, mb, runner.mb)
                    if ml is not None:
                        lays = _ladder_growth(runner.ml, ml, runner.ml)
            grown: list[tuple[_Order, dict[str, Any], int, bool, str]] = []
            ended: list[Event] = []  # an order's cancellation comes after its fills of the same change
            for uo in orc.get("uo") or ():
                self._order(market_id, selection_id, handicap, instrument, uo, ts_event, ts_recv, grown, out, ended)
            if grown:
                self._fills(grown, backs, lays, ts_event, ts_recv, out)
            if ended:
                out.extend(ended)
        if oc.get("closed"):
            self._close(market_id, ts_event, ts_recv, out)
        return out

    def _order(self, market_id: str, selection_id: int, handicap: float, instrument: str, uo: dict[str, Any],
               ts_event: int, ts_recv: int, grown: list[tuple[_Order, dict[str, Any], int, bool, str]],
               out: list[Event], ended: list[Event]) -> None:
        bet_id = str(uo["id"])
        key = (market_id, selection_id, handicap, bet_id)
        o = self.orders.get(key)
        new = o is None
        if o is None:
            back = uo.get("side") != "L"
            price = uo.get("p")
            o = self.orders[key] = _Order(str(uo.get("rfs") or ""), str(uo.get("rfo") or bet_id), back,
                                          None if price is None else float(price))
            self.by_market.setdefault(market_id, []).append(key)
            size = uo.get("s")
            pt = uo.get("pt")
            # by position on this per-update path: robot, client_order_id, venue_order_id, venue, instrument,
            # ts_event, ts_recv, side, price, size, persistence
            out.append(OrderAccepted(o.robot, o.client_id, bet_id, VENUE, instrument, ts_event, ts_recv,
                                     "BUY" if back else "SELL", o.limit, None if size is None else float(size),
                                     None if pt is None else _PERSISTENCE.get(pt, str(pt))))
        sm = uo.get("sm")
        matched = round(sm * 100) if sm else 0
        o.remaining = uo.get("sr") or 0
        if matched > o.matched:
            grown.append((o, uo, matched, new, instrument))
        if not o.done and uo.get("status") != "EC":
            return  # executable: partial cancellations are not events of their own
        parts = [_c(uo.get(k)) for k, _ in _DONE_PARTS]
        if o.done:
            more = [(name, now - before) for (_, name), now, before in zip(_DONE_PARTS, parts, o.parts, strict=True)
                    if now > before]
            if more:
                o.parts = parts
                text = ", ".join(f"{name} {_amount(c)}" for name, c in more) + " after completion"
                if matched < o.matched:  # a void of matched stakes
                    text += f" (matched {_amount(o.matched)} -> {_amount(matched)})"
                    o.matched = matched
                ended.append(OrderCancelled(o.robot, o.client_id, bet_id, VENUE, instrument, ts_event, ts_recv, text))
        elif uo.get("status") == "EC":
            o.done = True
            o.parts = parts
            if any(parts):
                text = ", ".join(f"{name} {_amount(c)}" for (_, name), c in zip(_DONE_PARTS, parts, strict=True) if c)
                ended.append(OrderCancelled(o.robot, o.client_id, bet_id, VENUE, instrument, ts_event, ts_recv, text))

    def _fills(self, grown: list[tuple[_Order, dict[str, Any], int, bool, str]], backs: dict[float, int],
               lays: dict[float, int], ts_event: int, ts_recv: int, out: list[Event]) -> None:
        """OrderFilled events for the orders of one runner whose `sm` grew in one change."""
        # Tightest limit first: a back at 3.0 can only have matched at >= 3.0, one at 2.0 anywhere >= 2.0.
        ordered = grown if len(grown) == 1 else sorted(
            grown, key=lambda g: (not g[0].back, -(g[0].limit or 0) if g[0].back else (g[0].limit or 0)))
        pieces: dict[int, list[tuple[float, int]]] = {}
        for o, _uo, matched, _new, _instrument in ordered:
            ladder = backs if o.back else lays
            want = matched - o.matched
            got: list[tuple[float, int]] = []
            prices = sorted(ladder, reverse=o.back) if len(ladder) > 1 else ladder  # best first
            for price in prices:
                if want == 0:
                    break
                if o.limit is not None and (price < o.limit if o.back else price > o.limit):
                    continue
                x = min(ladder[price], want)
                if x:
                    got.append((price, x))
                    ladder[price] -= x
                    want -= x
            if want:  # the ladder cannot account for all of it
                for price, x in got:
                    ladder[price] += x
                got = []
            pieces[id(o)] = got
        for o, uo, matched, new, instrument in grown:
            got = pieces[id(o)]
            if not got:
                got = [(self._fallback_price(o, uo, matched), matched - o.matched)]
            bet_id = str(uo["id"])
            side: Side = "BUY" if o.back else "SELL"
            leaves = _c(uo.get("sr"))
            rest = matched - o.matched
            cum = o.matched
            for price, x in got:
                cum += x
                rest -= x
                out.append(OrderFilled(o.robot, o.client_id, bet_id, VENUE, instrument, ts_event, ts_recv,
                                       f"{bet_id}:{_amount(cum)}", side, float(price), x / 100, 0.0,
                                       "TAKER" if new else "MAKER", (leaves + rest) / 100))
                o.notional += round(price * 100) * x
            o.matched = matched

    @staticmethod
    def _fallback_price(o: _Order, uo: dict[str, Any], matched: int) -> float:
        """The increase's price from `avp` when that is a whole cent, else the order's own price."""
        raw = uo.get("avp")
        avp = None if raw is None else float(raw)
        if avp is not None:
            # avp is rounded by Betfair: only a whole number of hundredths is trusted as a price
            exact = (round(avp * 100) * matched - o.notional) / (matched - o.matched)
            if abs(exact - round(exact)) < 1e-6 and exact > 100:
                return round(exact) / 100
        if o.limit is not None:
            return o.limit
        return round(avp, 2) if avp is not None else 0.0

    def _close(self, market_id: str, ts_event: int, ts_recv: int, out: list[Event]) -> None:
        """The stream closed the market: what is still executable was lapsed by the close."""
        for key in self.by_market.get(market_id, ()):
            o = self.orders[key]
            if o.done:
                continue
            o.done = True
            o.parts[1] += _c(o.remaining)  # Betfair lapses it: a later final state saying so is not news
            _, selection_id, handicap, bet_id = key
            reason = f"lapsed {_amount(_c(o.remaining))} at market close (the stream closed the market, no final state)"
            instrument = instrument_id(market_id, selection_id, handicap)
            out.append(OrderCancelled(o.robot, o.client_id, bet_id, VENUE, instrument, ts_event, ts_recv, reason))
