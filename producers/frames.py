"""DataFrames onto the tape and back: the funhandler-style bar API, and any time-indexed data.

    add_bars(df, venue="binance", base="BTC", quote="USDT", interval="1m", tape=tape)
    add_data("tweets", df, tape=tape, key_column="author")
    bars = load_bars("BTC", "USDT", "binance", start="2024-01-01", tape=tape)
    while is_still_bars(bars):
        bar = get_latest_bar(bars)

The same with the bars kept in MongoDB (collection `bars`, see `ticktape.mongo.bars`): give
`mongo=` (a URI or a pymongo Database) instead of `tape=`. Backtests still read the tape:
`ticktape import bars --from-mongo URI` puts the bars there (`ticktape mongo export-bars` goes back).

    db = "mongodb://127.0.0.1:27017/research"
    add_bars(df, venue="binance", base="BTC", quote="USDT", interval="1m", mongo=db)
    bars = load_bars("BTC", "USDT", "binance", start="2024-01-01", mongo=db)

Instrument naming: `f"{base}{quote}"` upper-cased (`BTC` + `USDT` -> `BTCUSDT`), the same as
Binance's symbols, so bars from a DataFrame and from Binance's files or streams line up.
Pass `instrument=` to use any other name (e.g. a Betfair `market:selection`).

Bars go to topic `md.<venue>.bar` (Binance's own bars use `md.binance.bar` too); custom data
to `custom.<name>`. Time: the DataFrame's DatetimeIndex, or a column (`ts_event`, `time`,
`timestamp`, `date`, `datetime`, `open_time`, `close_time`, `ts`, or `time_column=`); naive
times are UTC; integers are s/ms/µs/ns told apart by magnitude, except `ts_event`, which is ns
(`ticktape.frame_time`, the rule backtests from DataFrames use too). A `Bar`'s ts_event is its close: with
`label="open"` (the default, as most OHLCV data is labelled) the close is open + interval.

Where funhandler keeps a hidden global cursor, `load_bars` returns a `BarCursor` that
`is_still_bars` / `get_latest_bar` advance: two loops over two instruments cannot collide.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from producers.common import ImportRun, ImportSummary, gc_paused
from ticktape.bars import BarSelection, bar_topic, interval_ns
from ticktape.errors import ValidationError
from ticktape.events import Bar, CustomData
from ticktape.frame_time import time_ns
from ticktape.tape import TapeLike, using_tape
from ticktape.timeutil import parse_time

if TYPE_CHECKING:
    from pymongo.database import Database

BAR_FIELDS = ("open", "high", "low", "close", "volume")
_new_bar = partial(tuple.__new__, Bar)


def instrument_name(base: str, quote: str) -> str:
    """`BTC`, `usdt` -> `BTCUSDT` (Binance's spelling; see the module doc)."""
    return f"{base}{quote}".upper()


@dataclass
class RowProblem:
    """A row that cannot become an event (CLI imports dead-letter these; the API raises)."""

    row: int
    error: str


def _column(df: pd.DataFrame, name: str, problems: list[RowProblem] | None = None) -> np.ndarray[Any, Any]:
    """A numeric column (case-insensitive name). Non-numbers raise, or with `problems` are
    collected per row (and set to NaN)."""
    lower = {str(c).lower(): c for c in df.columns}
    if name not in lower:
        raise ValidationError(f"column {name!r} is missing (columns: {', '.join(map(str, df.columns))})", field=name)
    col = df[lower[name]]
    values: np.ndarray[Any, Any] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64,
                                                                                 na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any() and problems is not None:
        problems += [RowProblem(int(r), f"column {name!r} is {col.iloc[r]!r}, not a finite number")
                     for r in np.flatnonzero(bad)]
    elif bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValidationError(f"column {name!r}: row {row} ({df.index[row]!r}) is {col.iloc[row]!r}, "
                              "not a finite number", field=name)
    return values


def _bar_problems(ts: np.ndarray[Any, Any], cols: dict[str, np.ndarray[Any, Any]],
                  problems: list[RowProblem]) -> list[RowProblem]:
    """One problem per bad row, in row order; duplicates are looked for among the good rows only
    (the first of equal timestamps is kept)."""
    bad = np.zeros(len(ts), dtype=bool)
    bad[[p.row for p in problems]] = True
    out = list(problems)
    hl = cols["high"] < cols["low"]
    nonpositive = (cols["open"] <= 0) | (cols["close"] <= 0) | (cols["volume"] < 0)
    for r in np.flatnonzero((hl | nonpositive) & ~bad):
        why = f"high {cols['high'][r]} below low {cols['low'][r]}" if hl[r] else "open/close must be > 0, volume >= 0"
        out.append(RowProblem(int(r), why))
        bad[r] = True
    good = np.flatnonzero(~bad)
    order = good[np.argsort(ts[good], kind="stable")]
    dup = order[1:][ts[order[1:]] == ts[order[:-1]]]
    for r in sorted(dup.tolist()):
        out.append(RowProblem(int(r), f"duplicate timestamp {pd.Timestamp(int(ts[r]), tz='UTC').isoformat()}"))
    return sorted(out, key=lambda p: p.row)


def bars_from_frame(df: pd.DataFrame, *, venue: str, instrument: str, interval: str, label: str = "open",
                    time_column: str | None = None, per_row: bool = False) -> tuple[list[Bar], list[RowProblem]]:
    """Validated bars in time order, and the rows that could not be bars.

    A missing or non-numeric column raises `ValidationError` naming it (the whole frame is
    wrong); row-level problems (high below low, duplicate timestamps, and with `per_row` also
    non-numbers) are returned.
    """
    bars, problems, _, _ = _bars_and_arrays(df, venue=venue, instrument=instrument, interval=interval, label=label,
                                            time_column=time_column, per_row=per_row)
    return bars, problems


def _bars_and_arrays(df: pd.DataFrame, *, venue: str, instrument: str, interval: str, label: str,
                     time_column: str | None, per_row: bool
                     ) -> tuple[list[Bar], list[RowProblem], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if label not in ("open", "close"):
        raise ValueError("label must be 'open' or 'close'")
    ts, _ = time_ns(df, time_column)
    found: list[RowProblem] = []
    cols = {name: _column(df, name, found if per_row else None) for name in BAR_FIELDS}
    if label == "open":
        step = interval_ns(interval)
        if step is None:
            raise ValidationError(f"interval {interval!r} has no fixed length: label the bars by their close "
                                  "(label='close')", field="interval")
        ts = ts + step
    with np.errstate(invalid="ignore"):  # NaN rows are already problems
        problems = _bar_problems(ts, cols, found)
    keep = np.ones(len(ts), dtype=bool)
    keep[[p.row for p in problems]] = False
    order = np.argsort(ts[keep], kind="stable")
    t = ts[keep][order]
    vals = np.stack([cols[n][keep][order] for n in BAR_FIELDS]) if len(t) else np.zeros((5, 0))
    return _make_bars(venue, instrument, interval, t, vals), problems, t, vals


def _make_bars(venue: str, instrument: str, interval: str, t: np.ndarray[Any, Any],
               vals: np.ndarray[Any, Any]) -> list[Bar]:
    """Bars column-wise (tuple.__new__ over zipped columns: no per-field Python work)."""
    n = len(t)
    ts = t.tolist()
    with gc_paused():
        # tuple.__new__ fills no defaults: the fields after volume (Bar v2's, unknown here) are given as None.
        unknown = [repeat(None, n) for _ in range(len(Bar._fields) - 5 - len(BAR_FIELDS))]
        return list(map(_new_bar, zip(repeat(venue, n), repeat(instrument, n), ts, ts, repeat(interval, n),
                                      *vals.tolist(), *unknown, strict=True)))


def frame_identity(kind: str, params: dict[str, Any], arrays: list[np.ndarray[Any, Any]]) -> str:
    """sha256 of the content of a DataFrame import (parameters + the typed column bytes)."""
    h = hashlib.sha256(json.dumps({"kind": kind, **params}, sort_keys=True, default=str).encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return "sha256:" + h.hexdigest()


def add_bars(df: pd.DataFrame, *, venue: str, base: str | None = None, quote: str | None = None,
             instrument: str | None = None, interval: str, tape: TapeLike | None = None,
             mongo: str | Database[Any] | None = None, label: str = "open", time_column: str | None = None,
             name: str = "DataFrame") -> ImportSummary:
    """Append a DataFrame of OHLCV bars (columns open, high, low, close, volume; any case) to the
    tape, or with `mongo=` (a `mongodb://.../db` URI or a pymongo Database) store them in MongoDB.

    Raises `ValidationError` naming the missing/bad column, a row with high below low, or a
    duplicate timestamp; nothing is written then. Adding the same bars again adds nothing
    (`skipped`). In MongoDB a bar already stored with other OHLCV values is refused, never
    overwritten: `BarConflictError` names it and nothing is written (`ticktape.mongo.bars`); a
    server that is down raises `BarStoreError` naming it.
    """
    _one_store(tape, mongo)
    inst = instrument or (instrument_name(base, quote) if base and quote else None)
    if not inst:
        raise ValueError("give base= and quote=, or instrument=")
    bars, problems, t, vals = _bars_and_arrays(df, venue=venue, instrument=inst, interval=interval, label=label,
                                               time_column=time_column, per_row=False)
    if problems:
        p = problems[0]
        more = f" (and {len(problems) - 1} more rows)" if len(problems) > 1 else ""
        raise ValidationError(f"row {p.row} ({df.index[p.row]!r}): {p.error}{more}", field="row")
    sid = frame_identity("bars", {"venue": venue, "instrument": inst, "interval": interval}, [t, vals])
    if mongo is not None:
        return _add_bars_to_mongo(mongo, bars, name=name, source_id=sid)
    assert tape is not None  # _one_store
    with using_tape(tape) as opened:
        run = ImportRun(opened, source="bars", kind="bars", name=name, source_id=sid)
        if not run.skipped:
            run.emit_many(bar_topic(venue), bars, inst)
        return run.finish()


def _one_store(tape: TapeLike | None, mongo: object) -> None:
    if (tape is None) == (mongo is None):
        raise ValueError("give exactly one of tape= (a Tape or a tape URI) or mongo= (a mongodb://host:port/db URI "
                         f"or a pymongo Database), not {'both' if tape is not None else 'neither'}")


def _add_bars_to_mongo(mongo: str | Database[Any], bars: list[Bar], *, name: str, source_id: str) -> ImportSummary:
    """add_bars into MongoDB: the summary counts the bars newly stored (`mongo:bars`)."""
    from ticktape.mongo.bars import COLLECTION, MongoBars

    with MongoBars(mongo) as store:
        counts = store.write(bars, refuse_conflicts=True)
    events = {f"mongo:{COLLECTION}": counts.inserted} if counts.inserted else {}
    return ImportSummary(name, "bars", source_id, events, skipped=bool(bars) and counts.inserted == 0)


def add_data(name: str, df: pd.DataFrame, *, tape: TapeLike, key: str = "", key_column: str | None = None,
             time_column: str | None = None) -> ImportSummary:
    """Append any time-indexed DataFrame as `CustomData` on `custom.<name>`, one event per row.

    The payload is the row (all columns but the time) as JSON; the key is `key_column`'s
    value or `key`. Rows are appended in time order (equal times keep their order).
    Adding the same frame again adds nothing. A missing value (None, NaN) is JSON null; an
    infinite number raises `ValidationError` (JSON has none, and pandas would write null).
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValidationError(f"name {name!r}: use letters, digits, '_', '.', '-' (it names the topic)", field="name")
    ts, tcol = time_ns(df, time_column)
    body = df.drop(columns=[tcol]) if tcol is not None else df
    _refuse_infinities(body)
    if key_column is not None and key_column not in body.columns:
        raise ValidationError(f"key column {key_column!r} is missing", field=key_column)
    payloads = body.to_json(orient="records", lines=True, date_format="iso", date_unit="ns", double_precision=15,
                            default_handler=str).splitlines() if len(body) else []
    keys = body[key_column].astype(str).tolist() if key_column is not None else [key] * len(body)
    order = np.argsort(ts, kind="stable").tolist()
    t = ts.tolist()
    events = [CustomData(name, keys[i], t[i], t[i], payloads[i]) for i in order]
    sid = frame_identity("custom", {"name": name}, [ts, np.frombuffer("\n".join(payloads).encode(), np.uint8),
                                                      np.frombuffer("\n".join(keys).encode(), np.uint8)])
    with using_tape(tape) as t:
        run = ImportRun(t, source="custom", kind=f"custom.{name}", name=name, source_id=sid)
        if not run.skipped:
            run.emit_many(f"custom.{name}", events)
        return run.finish()


def _refuse_infinities(df: pd.DataFrame) -> None:
    """`ticktape.codec.finite` over a frame's float columns, except that NaN is pandas' missing value."""
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_float_dtype(col.dtype):
            bad = np.flatnonzero(np.isinf(col.to_numpy(dtype=np.float64, na_value=np.nan)))
            if len(bad):
                row = int(bad[0])
                value = float(col.iloc[row])
                raise ValidationError(f"column {name!r}: row {row} ({df.index[row]!r}) is {value}, not a finite number "
                                      "(JSON has no Infinity; NaN is a missing value, written as null)",
                                      field=str(name))


def _bound(value: str | int | pd.Timestamp | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return int((value.tz_localize("UTC") if value.tz is None else value).value)
    return parse_time(value) if isinstance(value, str) else int(value)


@dataclass
class BarCursor:
    """Bars of one instrument in time order, consumed one at a time (funhandler's iteration)."""

    bars: list[Bar]
    position: int = 0
    latest: Bar | None = field(default=None)

    def is_still_bars(self) -> bool:
        return self.position < len(self.bars)

    def get_latest_bar(self) -> Bar:
        """The next bar in time order (it becomes the latest); IndexError when there are none left."""
        if self.position >= len(self.bars):
            raise IndexError("no more bars")
        self.latest = self.bars[self.position]
        self.position += 1
        return self.latest

    def __iter__(self) -> Iterator[Bar]:
        while self.is_still_bars():
            yield self.get_latest_bar()

    def __len__(self) -> int:
        return len(self.bars)


def load_bars(base: str, quote: str, venue: str, start: str | int | pd.Timestamp | None = None,
              end: str | int | pd.Timestamp | None = None, *, tape: TapeLike | None = None,
              mongo: str | Database[Any] | None = None, interval: str | None = None,
              instrument: str | None = None) -> BarCursor:
    """Bars of `base`+`quote` (or `instrument`) on `venue` with start <= ts_event < end, in time order,
    from the tape or (`mongo=`) from MongoDB's `bars`: the same bars compare equal either way.

    Bars appended out of order (e.g. February imported before January) come back sorted.
    """
    _one_store(tape, mongo)
    inst = instrument or instrument_name(base, quote)
    lo, hi = _bound(start), _bound(end)
    selection = BarSelection(venue=venue, instrument=inst, interval=interval, start=lo, end=hi)
    if mongo is not None:
        from ticktape.mongo.bars import MongoBars

        with MongoBars(mongo) as store:
            out = store.load(selection)
    else:
        assert tape is not None  # _one_store
        topic = bar_topic(venue)
        on_topic = replace(selection, venue=None)  # the topic is the venue (as before MongoDB)
        with using_tape(tape, existing=True) as t:
            out = [r.event for p in range(t.partitions(topic)) for r in t.read(topic, p)
                   if isinstance(r.event, Bar) and on_topic.matches(r.event)]
    out.sort(key=lambda b: b.ts_event)  # stable: equal times keep tape (MongoDB: key) order
    return BarCursor(out)


def is_still_bars(cursor: BarCursor) -> bool:
    """True while `get_latest_bar(cursor)` has a bar to give."""
    return cursor.is_still_bars()


def get_latest_bar(cursor: BarCursor) -> Bar:
    """Advance `cursor` and return its next bar in time order."""
    return cursor.get_latest_bar()


def bars_to_frame(bars: list[Bar] | BarCursor) -> pd.DataFrame:
    """Bars as a DataFrame indexed by close time (UTC), columns open..volume."""
    rows = list(bars.bars if isinstance(bars, BarCursor) else bars)
    idx = pd.to_datetime([b.ts_event for b in rows], unit="ns", utc=True)
    return pd.DataFrame({n: [getattr(b, n) for b in rows] for n in BAR_FIELDS}, index=idx)
