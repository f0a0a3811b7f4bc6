"""The backtest's input fast path: a file-tape partition as events, with C-level iteration.

Sealed segments of one flat event type (Trade, Quote, Bar, ...) are read from their Parquet
copies (`ticktape.tape.columnar.parquet_copy`; written here on first use when missing) and
rebuilt by `ticktape.tape.columnar.table_to_events` (batches of `map(tuple.__new__, ...)`), so no Python frame runs
per event; low-cardinality string columns are read as dictionaries. Everything else - the
growing last segment, segments mixing types, nested types (MarketBook, books) - is decoded
straight from Avro by the C decoder: an Arrow round trip would only add work there.
Parquet reads are single-threaded: on a shared machine the reader's thread pool costs more CPU
than it saves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from functools import cache
from operator import itemgetter
from typing import Any

from ticktape.events import Event
from ticktape.schemas import registry
from ticktape.tape.file import FileTape

_second = itemgetter(1)
_third = itemgetter(2)


_NESTED = frozenset(("record", "array", "map"))


def _nested(avro_type: Any) -> bool:
    if isinstance(avro_type, list):  # a union: nested if any branch is
        return any(_nested(t) for t in avro_type)
    if isinstance(avro_type, dict):
        return avro_type.get("type") in _NESTED
    return False  # a primitive, or a named enum/fixed (records are always written inline here)


@cache
def flat_type(type_name: str) -> bool:
    """Whether an event type has scalar fields only (no record, array or map), from its Avro schema:
    the same answer as `ticktape.tape.columnar.is_flat`, without importing pyarrow."""
    return not any(_nested(f["type"]) for f in registry().current[type_name].schema["fields"])


def _starts_flat(seg: Any) -> bool:
    """Whether the segment's first event is of a flat type: only then can an Arrow/Parquet copy pay.
    Nested types (MarketBook, books) go straight to the Avro decoder, never through Arrow (nor is
    pyarrow imported for them: that alone costs ~0.2 s and ~50 MB)."""
    first = seg.read_block(0)
    return bool(first) and flat_type(type(first[0][1]).__name__)


def _flat_segment(seg: Any, lo: int) -> Iterable[Event] | None:
    """A sealed segment of one flat type as events from Arrow (its Parquet copy, written on first use),
    or None when it must be read from Avro (nested or mixed types).

    The first use converts the Avro blocks straight to Arrow in C (`segment_tables`), writes the
    copy and reads it back with dictionaries: never a Python object per event on the way. (Decoding
    to tuples first and building the table from them took ~5 s and ~1 GB for a 990k-trade segment,
    four times the whole rest of a backtest; this takes ~1 s and ~300 MB.)
    """
    from ticktape.tape.columnar import is_flat, parquet_copy, segment_tables, table_to_events, write_parquet_copy

    copy = parquet_copy(seg, dictionary=True)
    if copy is None:
        tables = segment_tables(seg)
        if len(tables) != 1 or not is_flat(tables[0][0]):
            return None  # mixed types: the blocks' own decoder
        try:
            write_parquet_copy(seg, *tables[0])
        except OSError:  # a read-only tape: read this run from the table, cache nothing
            copy = tables[0]
        else:
            copy = parquet_copy(seg, dictionary=True) or tables[0]
    elif not is_flat(copy[0]):
        return None
    type_name, table = copy
    first = int(table.column("_offset")[0].as_py())
    if lo > first:
        table = table.slice(lo - first)
    return table_to_events(type_name, table)


def _pieces(tape: FileTape, topic: str, partition: int, lo: int) -> Iterator[Iterable[Event]]:
    segments = tape._log(topic, partition).segments
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg.end_offset <= lo or not seg.blocks:
            continue
        if i < last and _starts_flat(seg):
            events = _flat_segment(seg, lo)
            if events is not None:
                yield events
                continue
        # the growing last segment, nested types (MarketBook, books) and mixed segments: the C Avro decoder,
        # a chunk of records at a time (a whole block of MarketBooks is ~40 MB of objects: see read_chunks)
        for bi, info in enumerate(seg.blocks):
            if info.first_offset + info.records <= lo:
                continue
            skip = lo - info.first_offset
            for chunk in seg.read_chunks(bi):
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                yield map(_second, chunk[skip:] if skip > 0 else chunk)
                skip = 0


def partition_events(tape: FileTape, topic: str, partition: int, lo: int, hi: int) -> Iterator[Event]:
    """Events at offsets [lo, hi) of one file-tape partition, in offset order."""
    it: Any = itertools.chain.from_iterable(_pieces(tape, topic, partition, lo))
    return itertools.islice(it, hi - lo)
