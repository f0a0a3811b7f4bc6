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
from operator import itemgetter
from typing import Any

from ticktape.events import Event
from ticktape.tape.columnar import (
    entries_to_tables,
    is_flat,
    parquet_copy,
    segment_entries,
    table_to_events,
    write_parquet_copy,
)
from ticktape.tape.file import FileTape

_second = itemgetter(1)
_third = itemgetter(2)


def _pieces(tape: FileTape, topic: str, partition: int, lo: int) -> Iterator[Iterable[Event]]:
    segments = tape._log(topic, partition).segments
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg.end_offset <= lo or not seg.blocks:
            continue
        if i < last:
            copy = parquet_copy(seg, dictionary=True)
            if copy is not None and is_flat(copy[0]):
                type_name, table = copy
                first = int(table.column("_offset")[0].as_py())
                if lo > first:
                    table = table.slice(lo - first)
                if table.num_rows:
                    yield table_to_events(type_name, table)
                continue
            if copy is None:
                entries = segment_entries(seg)
                tables = list(entries_to_tables(entries)) if entries else []
                if len(tables) == 1 and is_flat(tables[0][0]):
                    write_parquet_copy(seg, *tables[0])  # flat types read faster from Parquet next time
                skip = lo - seg.base
                yield map(_third, entries[skip:] if skip > 0 else entries)
                continue
        # the growing last segment, and nested types (MarketBook, books): the C Avro decoder
        for bi, info in enumerate(seg.blocks):
            if info.first_offset + info.records <= lo:
                continue
            block = seg.read_block(bi)
            skip = lo - info.first_offset
            yield map(_second, block[skip:] if skip > 0 else block)


def partition_events(tape: FileTape, topic: str, partition: int, lo: int, hi: int) -> Iterator[Event]:
    """Events at offsets [lo, hi) of one file-tape partition, in offset order."""
    it: Any = itertools.chain.from_iterable(_pieces(tape, topic, partition, lo))
    return itertools.islice(it, hi - lo)
