"""A restarted `record betfair` (without `--raw`) resumes its market stream from the tape's last checkpoint.

The recorder appends a `StreamClock` on `meta.betfair.clock` after each flush of the market
stream's events (`checkpoint`): the stream's initialClk/clk then, and the end offsets of
`md.betfair.market` that the clocks cover. A kill -9 can land anywhere; the books are always
appended before the checkpoint that covers them, so at restart:

* books and definitions below the last checkpoint's offsets rebuild each market's cache (its last
  `MarketBook` is the whole state the cache shows; its last stream `MarketDefinition` is what later
  definitions are compared to), and the stream resubscribes with the checkpoint's clocks;
* events at or after those offsets were appended but not checkpointed (the kill came between the
  two appends): Betfair resends their messages, and each resent event equal to the next of these
  is not appended again (`StreamSession.resume`); nothing is lost, nothing is on the tape twice.

The order stream keeps no clocks: its cache is rebuilt from the `orders.betfair` events the killed
recorder appended and it subscribes afresh (`resume_order_stream`); Betfair's image of the current
orders then gives events only for what changed while the recorder was down.

What a `MarketBook` v1 cannot give back, and the safe behaviour for it: the positional best-offer
ladders (`batb`/`bdatb`/`batl`/`bdatl`: the book has their levels without positions, and only when
the full-depth ladder is empty) -- a subscription with EX_BEST_OFFERS or EX_BEST_OFFERS_DISP
subscribes afresh for a new image, and the restart is recorded as an unrepaired gap. The starting
prices (`spn`/`spf`/`spb`/`spl`) are on v2 books and restored from them; a book written before v2
reads back without them, so a restart across that upgrade starts their ladders empty (the resent
deltas then build on nothing until the next image). `RESTORED_RUNNER_FIELDS` makes a `RunnerBook`
with more fields (a later version) refuse to resume until `cache_from_book` restores them too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import orjson

from producers.betfair.cache import UNKNOWN, MarketCache
from producers.betfair.parse import CLOCK_TOPIC, CLOSED_TTL, MARKET_TOPIC, ORDERS_TOPIC
from producers.betfair.session import StreamSession
from ticktape.events import MarketBook, MarketDefinition, PriceSize, RunnerBook, StreamClock
from ticktape.tape.base import Tape

log = logging.getLogger(__name__)

RESTORABLE_FIELDS = frozenset(("EX_ALL_OFFERS", "EX_TRADED", "EX_TRADED_VOL", "EX_LTP", "EX_MARKET_DEF",
                               "SP_TRADED", "SP_PROJECTED"))
"""Market data fields whose state a recorded `MarketBook` gives back whole (SP: see the module doc)."""

RESTORED_RUNNER_FIELDS = ("selection_id", "handicap", "status", "last_price_traded", "total_matched",
                          "available_to_back", "available_to_lay", "traded_volume", "sp_near", "sp_far",
                          "sp_back_stake_taken", "sp_lay_liability_taken")
"""The `RunnerBook` fields `cache_from_book` restores: a book with others cannot resume from the tape."""


def subscription(market_filter: object, fields: Iterable[str], conflate_ms: int | None) -> str:
    """The identity of a market subscription (canonical JSON): a checkpoint's clocks resume only the same one."""
    return orjson.dumps({"conflateMs": conflate_ms or None, "fields": sorted(set(fields)), "filter": market_filter},
                        option=orjson.OPT_SORT_KEYS).decode()


def checkpoint(mark: StreamClock, subscription_id: str, ends: Mapping[int, int]) -> StreamClock:
    """The checkpoint to append once the events before `mark` are on the tape: `mark` (a session's
    clocks) with the subscription and `ends`, the market topic's end offset per partition now."""
    offsets = tuple(ends.get(p, 0) for p in range(max(ends, default=-1) + 1))
    return mark._replace(subscription=subscription_id, topic=MARKET_TOPIC, end_offsets=offsets)


def not_restorable(fields: Iterable[str]) -> str | None:
    """Why books recorded with these subscription fields cannot rebuild the caches (None: they can)."""
    if RunnerBook._fields != RESTORED_RUNNER_FIELDS:
        return f"RunnerBook fields {RunnerBook._fields} are not the ones the restore knows"
    extra = sorted(set(fields) - RESTORABLE_FIELDS)
    if extra:
        return f"the books do not keep the state of {', '.join(extra)}"
    return None


def cache_from_book(book: MarketBook) -> MarketCache:
    """A market's cache holding the state `book` shows (the book it gives is `book`, capture time aside).

    Fed through the cache's own entry points (a definition, then one runner change per runner with
    its whole ladders), so either twin (C or Python) is rebuilt the same way.
    """
    market = MarketCache(book.market_id)
    market.apply_definition({
        "status": book.status, "inPlay": book.in_play, "betDelay": book.bet_delay, "version": book.version,
        "complete": book.complete, "crossMatching": book.cross_matching,
        "numberOfActiveRunners": book.number_of_active_runners,
        "runners": [{"id": r.selection_id, "hc": r.handicap, "status": None if r.status == UNKNOWN else r.status}
                    for r in book.runners]})
    market.definition = None  # no stream definition was folded: only its fields above
    changes = []
    for r in book.runners:
        rc: dict[str, object] = {"id": r.selection_id, "hc": r.handicap, "tv": r.total_matched,
                                 "atb": _rows(r.available_to_back), "atl": _rows(r.available_to_lay),
                                 "trd": _rows(r.traded_volume)}
        if r.last_price_traded is not None:
            rc["ltp"] = r.last_price_traded
        # starting prices (v2 books): spl is the back stake taken, spb the lay liability (`cache.py`)
        if r.sp_near is not None:
            rc["spn"] = r.sp_near
        if r.sp_far is not None:
            rc["spf"] = r.sp_far
        if r.sp_back_stake_taken:
            rc["spl"] = _rows(r.sp_back_stake_taken)
        if r.sp_lay_liability_taken:
            rc["spb"] = _rows(r.sp_lay_liability_taken)
        changes.append(rc)
    market.fold({"tv": book.total_matched, "rc": changes})
    return market


def _rows(levels: Sequence[PriceSize]) -> list[list[float]]:
    return [[level.price, level.size] for level in levels]


TAIL = 64
"""Checkpoints read back from the end of each partition before reading a partition whole."""


def last_checkpoint(tape: Tape, stream: str = "market") -> StreamClock | None:
    """The last Betfair `StreamClock` of `stream` on the tape (None: no recorder checkpointed it).

    A recorder checkpoints a few times a second, so a day's recording holds ~10^5 of them: each
    partition is read from `TAIL` records before its end first, and whole only if those hold none.
    """
    last = None
    for partition, end in sorted(tape.end_offsets(CLOCK_TOPIC).items()):
        for start in (max(0, end - TAIL), 0):
            found = None
            for record in tape.read(CLOCK_TOPIC, partition, from_offset=start, limit=end - start):
                event = record.event
                if isinstance(event, StreamClock) and event.venue == "betfair" and event.stream == stream:
                    found = event
            if found is not None or start == 0:
                break
        if found is not None and (last is None or found.ts_recv >= last.ts_recv):
            last = found
    return last


HEAD = 64
"""Without a checkpoint, the first stream events per market kept to match a fresh image against."""


def resume_market_stream(tape: Tape, session: StreamSession, subscription_id: str, fields: Iterable[str],
                         ts_recv: int) -> str:
    """Resume `session` (the market stream) from the tape's last checkpoint; what was done, for the log.

    One pass over `md.betfair.market` at start-up (its cost grows with the tape; a recorder restarted
    on a tape of days reads days of books once). Books on the tape but no checkpoint (a kill before
    the first one was appended, or a recorder older than checkpoints): a fresh subscription, whose
    image events equal to the first ones of their market on the tape (`HEAD` kept per market) are
    not appended again.
    """
    cp = last_checkpoint(tape, session.stream)
    if cp is None or not cp.clk or not cp.initial_clk:
        _, _, head = _scan(tape, (), HEAD)
        if not head:
            return "no checkpoint and no book on the tape: a fresh subscription"
        session.restarted(ts_recv, "no checkpoint on the tape: a fresh image", head)
        return "no checkpoint on the tape: a fresh subscription"
    if cp.subscription != subscription_id:
        session.restarted(ts_recv, "another subscription than the checkpoint's: a fresh image")
        return "the checkpoint is another subscription's: a fresh subscription"
    why = not_restorable(fields)
    if why:
        session.restarted(ts_recv, f"{why}: a fresh image")
        return f"cannot rebuild the caches ({why}): a fresh subscription"
    books, definitions, unconfirmed = _scan(tape, cp.end_offsets, None)
    for book in sorted(books.values(), key=lambda b: b.ts_event):
        if book.status == "CLOSED" and cp.ts_event - book.ts_event > CLOSED_TTL and book.market_id not in unconfirmed:
            continue  # the live decoder evicts it when the next market arrives: not worth its memory
        session.decoder.restore_market(cache_from_book(book), definitions.get(book.market_id), book.ts_event)
    session.resume(cp, unconfirmed, ts_recv)
    pending = sum(len(v) for v in unconfirmed.values())
    return (f"resuming from clk {cp.clk}: {len(books)} market(s) rebuilt from the tape, "
            f"{pending} event(s) after the checkpoint to match against Betfair's resent changes")


def resume_order_stream(tape: Tape, session: StreamSession, ts_recv: int) -> str:
    """Rebuild the order stream's cache from `orders.betfair` (what the killed recorder emitted); what was
    done, for the log. The stream then subscribes afresh (no order clocks are kept): Betfair's image
    of the current orders is compared with the rebuilt cache (`OrderCache.restore`), so only what changed
    while the recorder was down becomes events. One pass over the topic at start-up.
    """
    restored = sum(session.decoder.orders.restore(r.event for r in tape.read(ORDERS_TOPIC, p))
                   for p in range(tape.partitions(ORDERS_TOPIC)))
    if not restored:
        return "no order events on the tape: a fresh subscription"
    session.restarted(ts_recv, "order stream rebuilt from orders.betfair: a fresh image")
    return (f"{len(session.decoder.orders.orders)} order(s) rebuilt from {restored} event(s): a fresh "
            "subscription whose image records only what changed")


def _scan(tape: Tape, end_offsets: Sequence[int], limit: int | None) -> tuple[
        dict[str, MarketBook], dict[str, MarketDefinition], dict[str, list[MarketBook | MarketDefinition]]]:
    """The stream's events on the market topic: the last book and definition per market below
    `end_offsets` (per partition), and per market the events at or after them (at most `limit`)."""
    books: dict[str, MarketBook] = {}
    definitions: dict[str, MarketDefinition] = {}
    after: dict[str, list[MarketBook | MarketDefinition]] = {}
    for partition in range(tape.partitions(MARKET_TOPIC)):
        end = end_offsets[partition] if partition < len(end_offsets) else 0
        for record in tape.read(MARKET_TOPIC, partition):
            event = record.event
            if isinstance(event, MarketDefinition) and event.status == "CATALOGUE":
                continue  # the catalogue poller's, not the stream's
            if not isinstance(event, MarketBook | MarketDefinition):
                continue
            if record.offset >= end:
                pending = after.setdefault(event.market_id, [])
                if limit is None or len(pending) < limit:
                    pending.append(event)
            elif isinstance(event, MarketBook):
                books[event.market_id] = event
            else:
                definitions[event.market_id] = event
    return books, definitions, after
