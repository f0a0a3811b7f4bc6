"""Which Binance trade ids (or kline close times) are on the tape already, across files.

Binance publishes the same rows more than once (`X.csv` and `X.zip`, daily and monthly files), so
"this file's bytes were imported before" is not enough: a trade must never be on the tape twice
however the files were fetched. Every file import records the id ranges it covered, per
(symbol, kind, interval), as `CustomData` named `binance.ids` on `meta.binance.ids`; a later import
skips rows whose id lies in a recorded range. Ranges are the contiguous runs of the file's ids
(trade ids step by 1; klines are identified by their close time in ns, stepping by the interval,
so ms and µs files of the same bars agree), so a file with a gap covers only what it holds.
`--force` imports everything regardless, as it does for whole files. REST imports
(`import binance --rest`) do not take part yet.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ticktape.events import CustomData
from ticktape.tape.base import Tape

IDS_TOPIC = "meta.binance.ids"
IDS_NAME = "binance.ids"

Ranges = list[tuple[int, int]]


def ids_key(symbol: str, kind: str, interval: str) -> str:
    """The key ranges are kept under: trades of a symbol, or its klines of one interval."""
    return f"{symbol}:{kind}:{interval}" if kind == "klines" else f"{symbol}:{kind}"


def contiguous_runs(ids: np.ndarray[Any, Any], step: int) -> Ranges:
    """The runs of `ids` (any order) whose neighbours are `step` apart, as (first, last)."""
    if len(ids) == 0:
        return []
    diffs = np.diff(ids)
    if not (diffs > 0).all():  # files come in id order; sort only when one does not
        ids = np.unique(ids)
        diffs = np.diff(ids)
    s = ids
    cuts = np.flatnonzero(diffs != step)
    starts = np.concatenate(([0], cuts + 1))
    ends = np.concatenate((cuts, [len(s) - 1]))
    return [(int(s[a]), int(s[b])) for a, b in zip(starts, ends, strict=True)]


def merged(ranges: Ranges, step: int = 1) -> Ranges:
    """Ranges sorted, overlapping or `step`-adjacent ones joined."""
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + step:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class SeenIds:
    """The recorded id ranges of every (symbol, kind, interval), read once per import command."""

    def __init__(self, tape: Tape) -> None:
        raw: dict[str, Ranges] = {}
        for partition in range(tape.partitions(IDS_TOPIC)):
            for record in tape.read(IDS_TOPIC, partition):
                ev = record.event
                if isinstance(ev, CustomData) and ev.name == IDS_NAME:
                    raw.setdefault(ev.key, []).extend((int(a), int(b)) for a, b in json.loads(ev.payload)["ranges"])
        self._ranges = {k: merged(v) for k, v in raw.items()}

    def fresh(self, key: str, ids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """A boolean mask: True for ids in no recorded range of `key` (rows to import)."""
        ranges = self._ranges.get(key)
        if not ranges:
            return np.ones(len(ids), dtype=bool)
        lows = np.fromiter((r[0] for r in ranges), dtype=np.int64, count=len(ranges))
        highs = np.fromiter((r[1] for r in ranges), dtype=np.int64, count=len(ranges))
        at = np.searchsorted(lows, ids, side="right") - 1  # the last range starting at or before each id
        inside = (at >= 0) & (ids <= highs[np.maximum(at, 0)])
        mask: np.ndarray[Any, Any] = ~inside
        return mask

    def record(self, key: str, ranges: Ranges) -> None:
        """Count ranges as seen for the rest of this command (the tape record is `ids_event`)."""
        self._ranges[key] = merged(self._ranges.get(key, []) + ranges)


def ids_event(key: str, ranges: Ranges, source_id: str, ts: int) -> CustomData:
    """The record of the ranges one import covered."""
    payload = json.dumps({"ranges": ranges, "source_id": source_id}, separators=(",", ":"))
    return CustomData(IDS_NAME, key, ts, ts, payload)
