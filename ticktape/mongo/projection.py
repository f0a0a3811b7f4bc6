"""The pure part of the MongoDB view: tape records -> `orders`, `positions` and `runs` documents.

No I/O here. `Projection.apply(record)` folds one record into the documents it touches, held
in `Projection.docs` (the sync loads the ones it needs from MongoDB and writes back the touched
ones). Each document carries in `_applied` the last offset of every tape partition it has
absorbed, and is always written whole with it, so folding a record a second time (a sync killed
after writing a document but before its checkpoint, then run again) changes nothing.

A document is a function of the *set* of records it absorbed, not of the order they were
folded in: an order's `history` and `fills` are kept sorted by (ts_event, intent before answer,
tape position), and every derived field (status, filled size, sums) is computed from
order-independent aggregates. So the view does not depend on how the sync cut its batches (only
`_seq` does), and an answer that reaches the tape before its intent (they come from different
processes live) gives the same document as the other way round.

Order status, from what the order has seen (first match wins):
SETTLED (a Betfair `BetSettled`) > FILLED (the last fill left nothing) > CANCELLED / EXPIRED >
REJECTED (refused and never accepted nor filled; a refused cancel or replace of a live order only
shows in `history`) > PARTIALLY_FILLED > ACCEPTED > PENDING (only intents seen).

Numbers: positions and order sums are exact decimals computed as the analyzer's DuckDB views
compute them (each value cast to DECIMAL(38, 9), products rounded back to 9 places), kept as
strings in `_exact` and shown as floats (FerretDB has no Decimal128), so a position in MongoDB
equals the last row of the same run's `positions` view in DuckDB.
"""

from __future__ import annotations

import bisect
import json
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from ticktape.events import (
    BetSettled,
    CancelOrder,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    ReplaceOrder,
    RunFinished,
    RunStarted,
)
from ticktape.tape.base import Record

__all__ = ["COLLECTIONS", "INTERNAL_FIELDS", "Doc", "Projection", "applied_key", "dec", "order_id", "position_id",
           "public"]

Doc = dict[str, Any]
"""A MongoDB document as the projection builds it."""

COLLECTIONS = ("orders", "positions", "runs")
"""The collections the projection writes (the sync adds its checkpoint, `sync_state`)."""

INTERNAL_FIELDS = ("_applied", "_exact", "_n")
"""Bookkeeping fields a reader of the view does not need (`public` drops them)."""

INTENTS = (PlaceOrder, CancelOrder, ReplaceOrder)
ANSWERS = (OrderAccepted, OrderRejected, OrderFilled, OrderCancelled, OrderExpired, BetSettled)

_NINE = Decimal("0.000000001")
_CTX = Context(prec=80)  # wide enough that any DECIMAL(38, 9) product is exact before rounding


def dec(x: float | int | None) -> Decimal:
    """A float as DuckDB's `::DECIMAL(38, 9)` makes it: its shortest decimal form rounded to 9 places."""
    if x is None:
        return Decimal(0)
    return nine(Decimal(repr(x)) if isinstance(x, float) else Decimal(x))


def nine(x: Decimal) -> Decimal:
    """An exact sum or product rounded back to DECIMAL(38, 9) (half away from zero, as DuckDB rounds)."""
    return x.quantize(_NINE, rounding=ROUND_HALF_UP, context=_CTX)


def applied_key(topic: str, partition: int) -> str:
    """The `_applied` / checkpoint key of a tape partition: `orders:event/0` for `orders.event` partition 0.

    Dots become colons: a dot in a field name is a path separator to MongoDB's query language
    (and refused by older servers); topic names never hold a colon, so the mapping is one to one.
    """
    return f"{topic.replace('.', ':')}/{partition}"


def order_id(run: str, client_order_id: str) -> str:
    """`_id` of an order: run id and client order id (a backtest's ids repeat across runs of one robot)."""
    return f"{run}/{client_order_id}"


def position_id(run: str, robot: str, instrument: str) -> str:
    """`_id` of a position: run, robot, instrument (the grain of the analyzer's `positions` view)."""
    return f"{run}/{robot}/{instrument}"


def public(doc: Doc) -> Doc:
    """`doc` without the sync's bookkeeping fields (what `watch` prints)."""
    return {k: v for k, v in doc.items() if k not in INTERNAL_FIELDS}


class Projection:
    """Folds records into documents and remembers which ones changed.

    `docs` must hold every existing document a record touches before `apply` (`needed` names
    them); a document absent from `docs` is taken to be new.
    """

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], Doc] = {}
        self.touched: set[tuple[str, str]] = set()
        self.created: set[tuple[str, str]] = set()  # made here, not loaded: not in MongoDB until written

    @staticmethod
    def needed(record: Record) -> list[tuple[str, str]]:
        """(collection, _id) of the documents `record` changes; none for other event types."""
        e = record.event
        if isinstance(e, (RunStarted, RunFinished)):
            return [("runs", e.run_id)]
        if not isinstance(e, INTENTS + ANSWERS):
            return []
        run = record.key or ""  # the runner keys orders.* by run id (the analyzer's `run` is the same `_key`)
        out = [("orders", order_id(run, e.client_order_id)), ("runs", run)]
        if isinstance(e, OrderFilled):
            out.append(("positions", position_id(run, e.robot, e.instrument)))
        return out

    def apply(self, record: Record) -> bool:
        """Fold one record; whether any document changed (a record already absorbed changes none)."""
        changed = False
        where = applied_key(record.topic, record.partition)
        for key in self.needed(record):
            doc = self.docs.get(key)
            if doc is None:
                doc = self.docs[key] = {"_id": key[1], "_applied": {}}
                self.created.add(key)
            elif doc["_applied"].get(where, -1) >= record.offset:
                continue  # absorbed before: a re-run after a kill
            collection = key[0]
            if collection == "orders":
                _order(doc, record)
            elif collection == "positions":
                _position(doc, record)
            else:
                _run(doc, record)
            doc["_applied"][where] = record.offset
            self.touched.add(key)
            changed = True
        return changed

    def take_touched(self, seq: int) -> dict[str, list[Doc]]:
        """The documents changed since the last call, per collection, stamped with change sequence `seq`."""
        out: dict[str, list[Doc]] = {}
        for key in sorted(self.touched):
            doc = self.docs[key]
            doc["_seq"] = seq
            out.setdefault(key[0], []).append(doc)
        self.touched.clear()
        return out

    def forget(self, keep: int) -> bool:
        """Drop the oldest cached documents (never touched ones) once more than `keep` are held.

        They are in MongoDB and are read back when a record needs them. Whether any was dropped.
        """
        if len(self.docs) <= keep:
            return False
        drop = [k for k in self.docs if k not in self.touched][: len(self.docs) - keep // 2]
        for k in drop:
            del self.docs[k]
            self.created.discard(k)
        return bool(drop)


# ---------------------------------------------------------------------------------- orders

_RANK = {"PlaceOrder": 0, "ReplaceOrder": 0, "CancelOrder": 0}  # at one ts_event, a request before its answer


def _step_key(step: Doc) -> tuple[int, int, str, int]:
    """Where a step sorts in an order's history: time, then intents before answers, then tape position."""
    return step["ts_event"], _RANK.get(step["type"], 1), step["at"], step["offset"]


def _exact(doc: Doc, name: str) -> Decimal:
    return Decimal(doc["_exact"].get(name, "0"))


def _add_exact(doc: Doc, name: str, value: Decimal) -> Decimal:
    total = _exact(doc, name) + value
    doc["_exact"][name] = str(total)
    return total


def _new_order(doc: Doc, run: str, e: Any) -> None:
    doc.update(run=run, client_order_id=e.client_order_id, robot=e.robot, venue=e.venue, instrument=e.instrument,
               status="PENDING", intent=None, side=None, order_type=None, price=None, size=None, time_in_force=None,
               filled=0.0, avg_price=None, leaves=None, fees=0.0, venue_order_ids=[], fills=[], history=[],
               settlement=None, first_ts=e.ts_event, last_ts=e.ts_event, _n={}, _exact={})


def _order(doc: Doc, record: Record) -> None:
    e: Any = record.event  # an intent or an answer (`Projection.needed` chose the record)
    if "history" not in doc:
        _new_order(doc, record.key or "", e)
    kind = type(e).__name__
    step: Doc = {"type": kind, "ts_event": e.ts_event, "ts_recv": e.ts_recv, "at": applied_key(record.topic,
                                                                                             record.partition),
                 "offset": record.offset}
    counts = doc["_n"]
    counts[kind] = counts.get(kind, 0) + 1
    if isinstance(e, PlaceOrder):
        doc["intent"] = {"side": e.side, "order_type": e.order_type, "price": e.price, "size": e.size,
                         "time_in_force": e.time_in_force, "reason": e.reason, "ts_event": e.ts_event}
        doc["side"] = e.side
        step.update(price=e.price, size=e.size, reason=e.reason)
    elif isinstance(e, ReplaceOrder):
        step.update(price=e.price, size=e.size, reason=e.reason)
    elif isinstance(e, CancelOrder):
        step["reason"] = e.reason
    else:
        vid = e.venue_order_id
        if vid:
            step["venue_order_id"] = vid
            if vid not in doc["venue_order_ids"]:
                bisect.insort(doc["venue_order_ids"], vid)
        if isinstance(e, OrderFilled):
            _fill(doc, e, step)
        elif isinstance(e, (OrderCancelled, OrderExpired)):
            step["reason"] = e.reason
        elif isinstance(e, OrderRejected):
            step.update(reason=e.reason, control=e.control)
        elif isinstance(e, BetSettled):
            doc["settlement"] = {"ts_event": e.ts_event, "runner_status": e.runner_status, "profit": e.profit,
                                 "size_matched": e.size_matched, "average_price_matched": e.average_price_matched}
            step.update(runner_status=e.runner_status, profit=e.profit)
    bisect.insort(doc["history"], step, key=_step_key)
    doc["first_ts"] = min(doc["first_ts"], e.ts_event)
    doc["last_ts"] = max(doc["last_ts"], e.ts_event)
    _derive(doc)


def _fill(doc: Doc, e: OrderFilled, step: Doc) -> None:
    size = dec(e.size)
    filled = _add_exact(doc, "filled", size)
    notional = _add_exact(doc, "notional", nine(dec(e.price) * size))
    doc["filled"] = float(filled)
    doc["fees"] = float(_add_exact(doc, "fees", dec(e.fee)))
    doc["avg_price"] = float(nine(_CTX.divide(notional, filled))) if filled else None
    doc["side"] = doc["side"] or e.side
    fill = {"fill_id": e.fill_id, "ts_event": e.ts_event, "ts_recv": e.ts_recv, "side": e.side, "price": e.price,
            "size": e.size, "fee": e.fee, "liquidity": e.liquidity, "leaves": e.leaves_size, "at": step["at"],
            "offset": step["offset"]}
    bisect.insort(doc["fills"], fill, key=lambda f: (f["ts_event"], f["at"], f["offset"]))
    step.update(fill_id=e.fill_id, price=e.price, size=e.size, leaves=e.leaves_size)


def _last(history: list[Doc], types: tuple[str, ...]) -> Doc | None:
    """The latest step of one of `types` (searched from the end: it is almost always near it)."""
    for step in reversed(history):
        if step["type"] in types:
            return step
    return None


def _derive(doc: Doc) -> None:
    """Status, current price and size, leaves: from order-independent counts and the sorted history."""
    n = doc["_n"]
    history = doc["history"]
    request = _last(history, ("PlaceOrder", "ReplaceOrder"))
    if request is not None:  # what the order asks for now: the last place or replace
        doc["price"], doc["size"] = request["price"], request["size"]
    intent = doc["intent"]
    if intent is not None:
        doc["order_type"], doc["time_in_force"] = intent["order_type"], intent["time_in_force"]
    last_fill = doc["fills"][-1] if doc["fills"] else None
    if n.get("BetSettled"):
        status = "SETTLED"
    elif last_fill is not None and last_fill["leaves"] <= 0:
        status = "FILLED"
    elif n.get("OrderCancelled"):
        status = "CANCELLED"
    elif n.get("OrderExpired"):
        status = "EXPIRED"
    elif n.get("OrderRejected") and not n.get("OrderAccepted") and last_fill is None:
        status = "REJECTED"
    elif last_fill is not None:
        status = "PARTIALLY_FILLED"
    elif n.get("OrderAccepted"):
        status = "ACCEPTED"
    else:
        status = "PENDING"
    doc["status"] = status
    if status in ("PARTIALLY_FILLED",) and last_fill is not None:
        doc["leaves"] = last_fill["leaves"]
    elif status in ("PENDING", "ACCEPTED"):
        doc["leaves"] = doc["size"]
    else:
        doc["leaves"] = 0.0


# ---------------------------------------------------------------------------------- positions

def _position(doc: Doc, record: Record) -> None:
    """One fill into its (run, robot, instrument) position, as the analyzer's `positions` view sums it."""
    e: Any = record.event  # an OrderFilled (`Projection.needed` sends fills only)
    if "run" not in doc:
        doc.update(run=record.key or "", robot=e.robot, venue=e.venue, instrument=e.instrument, fills=0,
                   first_fill_ts=e.ts_event, last_fill_ts=e.ts_event, _exact={})
    price, size, fee = dec(e.price), dec(e.size), dec(e.fee)
    buy = e.side == "BUY"
    # The view's cash_flow: (sign * price::D * size::D - fee::D)::D, rounded once, as DuckDB does.
    doc["position"] = float(_add_exact(doc, "position", size if buy else -size))
    doc["cash"] = float(_add_exact(doc, "cash", nine((-1 if buy else 1) * price * size - fee)))
    doc["fees"] = float(_add_exact(doc, "fees", fee))
    doc["buy_volume"] = float(_add_exact(doc, "buy_volume", size if buy else Decimal(0)))
    doc["sell_volume"] = float(_add_exact(doc, "sell_volume", Decimal(0) if buy else size))
    doc["fills"] += 1
    doc["first_fill_ts"] = min(doc["first_fill_ts"], e.ts_event)
    doc["last_fill_ts"] = max(doc["last_fill_ts"], e.ts_event)


# ---------------------------------------------------------------------------------- runs

def _json_field(text: str) -> Any:
    """A JSON text field of an event as a sub-document, so it can be queried (`params.fast`).

    Kept as text when it is not a JSON object or a key could not be a MongoDB field name
    (a dot is a path separator, `$` an operator): a Betfair market id as a key has dots.
    """
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return text
    if not isinstance(value, dict) or not _plain_keys(value):
        return text
    return value


def _plain_keys(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and "." not in k and not k.startswith("$") and _plain_keys(v)
                   for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_keys(v) for v in value)
    return True


def _run(doc: Doc, record: Record) -> None:
    e: Any = record.event
    if "status" not in doc:
        doc.update(run_id=doc["_id"], status="unknown", robot=None, mode=None, params=None, started_ts=None,
                   finished_ts=None, intents=0, orders=0, answers=0, fills=0, rejections=0)
    if isinstance(e, RunStarted):
        doc.update(robot=e.robot, robot_id=e.robot_id, mode=e.mode, params=_json_field(e.params),
                   venue=_json_field(e.venue), controls=_json_field(e.controls), source=e.source,
                   topics=list(e.topics), from_ts=e.from_ts, to_ts=e.to_ts, code_version=e.code_version,
                   started_ts=e.ts_event, started_recv=e.ts_recv)
    elif isinstance(e, RunFinished):
        doc.update(finished_ts=e.ts_event, finished_recv=e.ts_recv, events=e.events, intents_emitted=e.intents,
                   intents_sha256=e.intents_sha256, summary=_json_field(e.summary))
    elif isinstance(e, INTENTS):
        doc["intents"] += 1
        doc["orders"] += isinstance(e, PlaceOrder)
    else:
        doc["answers"] += 1
        doc["fills"] += isinstance(e, OrderFilled)
        doc["rejections"] += isinstance(e, OrderRejected)
    # order-independent: finished wins over running, whichever record came first
    doc["status"] = ("finished" if doc["finished_ts"] is not None else
                     "running" if doc["started_ts"] is not None else "unknown")
