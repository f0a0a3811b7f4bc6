"""Inputs of a run: one deterministic, time-merged event sequence from a tape or a DataFrame.

A tape source fixes, when it is created, the exact offset range it reads per partition
(`[offset_for_time(from), offset_for_time(to))`, or up to the partition's end offset), so the run
manifest can name the inputs precisely and a replay reads the same events even after the tape
has grown. Partitions are merged by (ts_event, topic order, partition, offset): the order
depends only on the data. One partition of one topic needs no merge and reads through the
columnar path (Parquet copies of sealed segments) when the tape is a file tape.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any

from robots.api import Robot, RobotError
from ticktape.events import Bar, Event, Quote, Trade
from ticktape.tape import Tape, open_tape
from ticktape.tape.file import FileTape
from ticktape.topics import topic_kind

__all__ = ["FrameSource", "ListSource", "TapeSource", "TopicChoiceError", "fit_topics", "frame_to_events",
           "robot_topics"]

log = logging.getLogger("robots.sources")


class TopicChoiceError(RobotError):
    """A robot's default topic is not on the tape and the tape does not say which one to read instead."""


def robot_topics(tape: Tape, bot: Robot[Any, Any], *, flag: str = "--topics") -> tuple[str, ...]:
    """The topics `bot` reads from `tape` when the caller names none: its subscription, fitted to the tape
    (`fit_topics`) only when that is the robot's default one. A subscription its params chose (say
    `--param topic=md.okx.trade`) is the user's choice and is read as chosen, never swapped."""
    topics = tuple(bot.subscriptions().topics)
    try:
        default = tuple(type(bot)(type(bot).params_type()).subscriptions().topics)
    except (TypeError, ValueError, RobotError):  # params without defaults: no default subscription to tell apart
        default = topics
    return fit_topics(tape, topics, flag=flag) if topics == default else topics


def fit_topics(tape: Tape, topics: Sequence[str], *, flag: str = "--topics") -> tuple[str, ...]:
    """A robot's default `topics`, each one missing from `tape` replaced by the tape's only topic of its kind.

    Built-in robots default to `md.sim.*` topics while a user's data sits on, say, `md.binance.trade`:
    with exactly one topic of the kind (`md.*.trade`) that one is read, and one log line says so.
    With none, the topic is kept (the source then names it as missing); with several, a
    `TopicChoiceError` lists them and names `flag`, the way to pick one. Explicitly chosen topics
    must not come through here: they are read as given.
    """
    present: list[str] | None = None
    out: list[str] = []
    for topic in topics:
        kind = topic_kind(topic)
        if tape.partitions(topic) > 0 or kind is None:
            out.append(topic)
            continue
        if present is None:
            present = [t.name for t in tape.topics()]
        same = sorted(t for t in present if topic_kind(t) == kind and t not in out)
        if len(same) > 1:
            raise TopicChoiceError(f"topic {topic!r} (the robot's default) does not exist on {tape.uri}, and it has "
                                   f"{len(same)} {kind} topics: {', '.join(same)}; pick one with {flag} TOPIC")
        if same:
            log.info("topic %r (the robot's default) is not on %s: reading its only %s topic, %r",
                     topic, tape.uri, kind, same[0])
            out.append(same[0])
        else:
            out.append(topic)
    return tuple(out)

Ranges = dict[str, dict[int, tuple[int, int]]]


class TapeSource:
    """The subscribed topics of a tape between two times (ns; `end` exclusive)."""

    def __init__(self, tape: Tape | str, topics: Sequence[str], *, start: int | None = None, end: int | None = None,
                 end_offsets: Mapping[str, Mapping[int, int]] | None = None, columnar: bool = True) -> None:
        self.tape = open_tape(tape) if isinstance(tape, str) else tape
        self._owns = isinstance(tape, str)
        self.uri = self.tape.uri
        self.topics = tuple(topics)
        if not self.topics:
            raise ValueError("a tape source needs at least one topic")
        self.start = start
        self.end = end
        self.columnar = columnar
        self.ranges: Ranges = {}
        for topic in self.topics:
            parts = self.tape.partitions(topic)
            if parts == 0:
                raise ValueError(f"topic {topic!r} does not exist on {self.uri}")
            ends = self.tape.end_offsets(topic)
            fixed = (end_offsets or {}).get(topic)
            self.ranges[topic] = {}
            for p in range(parts):
                hi = int(fixed[p]) if fixed is not None and p in fixed else ends.get(p, 0)
                lo = self.tape.offset_for_time(topic, p, start) if start is not None else 0
                if end is not None:
                    hi = min(hi, self.tape.offset_for_time(topic, p, end))
                self.ranges[topic][p] = (lo, max(lo, hi))

    @property
    def count(self) -> int:
        """How many input events the source will yield."""
        return sum(hi - lo for parts in self.ranges.values() for lo, hi in parts.values())

    def end_offsets_json(self) -> str:
        """{topic: {partition: end offset}} as canonical JSON (the run manifest's `end_offsets`)."""
        return json.dumps({t: {str(p): hi for p, (_, hi) in parts.items()} for t, parts in self.ranges.items()},
                          sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        """The source URI for the run manifest."""
        return self.uri

    def _partition(self, topic: str, p: int) -> Iterator[Event]:
        lo, hi = self.ranges[topic][p]
        if hi <= lo:
            return iter(())
        if isinstance(self.tape, FileTape):
            if self.columnar:
                try:  # the fast path leans on the columnar module's internals; its public API is the fallback
                    from robots.fastread import partition_events
                except ImportError:
                    from ticktape.tape.columnar import iter_events_columnar

                    return itertools.islice(iter_events_columnar(self.tape, topic, p, lo), hi - lo)
                return partition_events(self.tape, topic, p, lo, hi)
            if lo == 0:
                return itertools.islice(self.tape.read_events(topic, p), hi)
        return (r.event for r in self.tape.read(topic, p, from_offset=lo, limit=hi - lo))

    def __iter__(self) -> Iterator[Event]:
        # Not a generator: the returned iterator is consumed directly (no Python frame per event).
        parts = [(rank, topic, p) for rank, topic in enumerate(self.topics) for p in sorted(self.ranges[topic])
                 if self.ranges[topic][p][1] > self.ranges[topic][p][0]]
        if not parts:
            return iter(())
        if len(parts) == 1:  # nothing to merge: no key tuples on the hot path
            return self._partition(parts[0][1], parts[0][2])
        streams = [_keyed(self._partition(topic, p), rank, p, self.ranges[topic][p][0]) for rank, topic, p in parts]
        return map(_event_of, heapq.merge(*streams))

    def close(self) -> None:
        """Close the tape if this source opened it."""
        if self._owns:
            self.tape.close()


_event_of = itemgetter(4)


def _keyed(events: Iterable[Event], rank: int, partition: int, first: int
           ) -> Iterator[tuple[int, int, int, int, Event]]:
    for offset, e in enumerate(events, start=first):
        yield (e.ts_event, rank, partition, offset, e)


class ListSource:
    """Events already in memory (tests, notebooks): sorted stably by ts_event unless told not to."""

    def __init__(self, events: Iterable[Event], *, name: str = "memory", sort: bool = True,
                 start: int | None = None, end: int | None = None) -> None:
        evs = list(events)
        if sort:
            evs.sort(key=lambda e: e.ts_event)
        self.events = [e for e in evs if (start is None or e.ts_event >= start) and (end is None or e.ts_event < end)]
        self.name = name
        self.topics: tuple[str, ...] = (name,)
        self.start = start
        self.end = end

    @property
    def count(self) -> int:
        return len(self.events)

    def end_offsets_json(self) -> str:
        return "{}"

    def describe(self) -> str:
        return self.name

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def close(self) -> None:
        pass


def frame_to_events(frame: Any, *, kind: str | None = None, instrument: str = "", venue: str = "sim",
                    interval: str = "") -> list[Event]:
    """A pandas DataFrame of trades, quotes or bars -> events, in row order.

    Kinds (guessed from the columns when not given): bars (`open, high, low, close[, volume]`),
    quotes (`bid_price, ask_price[, bid_size, ask_size]`), trades (`price[, size]`). Time from
    a DatetimeIndex or a column `ts_event` / `time` / `timestamp` / ... (`ticktape.frame_time`: the
    same rule as `add_bars`; datetimes of any resolution, naive = UTC).
    `instrument` / `venue` columns override the arguments per row.
    """
    cols = set(frame.columns)
    if kind is None:
        if {"open", "high", "low", "close"} <= cols:
            kind = "bars"
        elif {"bid_price", "ask_price"} <= cols:
            kind = "quotes"
        elif "price" in cols:
            kind = "trades"
        else:
            raise ValueError("cannot tell the DataFrame's kind: need price, bid_price/ask_price or open/high/low/close")
    from ticktape.frame_time import time_ns  # pandas only when a DataFrame is given

    ts = time_ns(frame)[0].tolist()
    n = len(frame)

    def col(name: str, default: Any) -> list[Any]:
        return frame[name].tolist() if name in cols else [default] * n

    insts = [str(x) for x in col("instrument", instrument)]
    venues = [str(x) for x in col("venue", venue)]
    out: list[Event] = []
    if kind == "bars":
        o, h, lo, c, v = col("open", 0.0), col("high", 0.0), col("low", 0.0), col("close", 0.0), col("volume", 0.0)
        iv = [str(x) for x in col("interval", interval)]
        for i in range(n):
            out.append(Bar(venues[i], insts[i], ts[i], ts[i], iv[i], float(o[i]), float(h[i]), float(lo[i]),
                           float(c[i]), float(v[i])))
    elif kind == "quotes":
        bp, bs, ap, az = col("bid_price", 0.0), col("bid_size", 0.0), col("ask_price", 0.0), col("ask_size", 0.0)
        for i in range(n):
            out.append(Quote(venues[i], insts[i], ts[i], ts[i], float(bp[i]), float(bs[i]), float(ap[i]),
                             float(az[i])))
    elif kind == "trades":
        price, size = col("price", 0.0), col("size", 0.0)
        side = [str(x).upper() for x in col("aggressor_side", "NONE")]
        tid = col("trade_id", None)
        for i in range(n):
            out.append(Trade(venues[i], insts[i], ts[i], ts[i], float(price[i]), float(size[i]),
                             side[i] if side[i] in ("BUY", "SELL") else "NONE",  # type: ignore[arg-type]
                             str(tid[i]) if tid[i] is not None else str(i)))
    else:
        raise ValueError(f"unknown DataFrame kind {kind!r}: use trades, quotes or bars")
    return out


class FrameSource(ListSource):
    """A DataFrame of trades, quotes or bars (see `frame_to_events`)."""

    def __init__(self, frame: Any, *, kind: str | None = None, instrument: str = "", venue: str = "sim",
                 interval: str = "", name: str = "dataframe", start: int | None = None,
                 end: int | None = None) -> None:
        super().__init__(frame_to_events(frame, kind=kind, instrument=instrument, venue=venue, interval=interval),
                         name=name, start=start, end=end)
