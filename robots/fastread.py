"""The backtest's input fast path: a file-tape partition as events, with C-level iteration.

Sealed segments come from their Parquet copies (`ticktape.tape.columnar` writes them on first
use, beside the segment); flat event types (Trade, Quote, Bar, ...) are rebuilt from the
columns in batches with `map(tuple.__new__, ...)` over `zip(*columns)`, so no Python-level
generator frame runs per event. The growing last segment is decoded block by block by the C
Avro decoder. Nested types (MarketBook, BookSnapshot) go through the columnar module's
converter. Single-threaded Parquet reads: on a shared machine the reader's thread pool costs
more CPU than it saves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ticktape.events import EVENT_TYPES, Event
from ticktape.tape.columnar import _cached_segment, _flat, table_to_events
from ticktape.tape.file import FileTape, Segment

_BATCH = 8192
_second = itemgetter(1)


def _parquet_tables(seg: Segment) -> list[tuple[str, pa.Table]]:
    """The segment's (type, table) pieces from its Parquet copy (made now if missing)."""
    size = str(seg.path.stat().st_size)
    for path in sorted(seg.path.parent.glob(f"{seg.path.stem}.*.parquet")):
        meta = pq.read_metadata(path)
        if (meta.schema.to_arrow_schema().metadata or {}).get(b"ticktape.segment_size", b"").decode() == size:
            return [(path.name.split(".")[1], pq.read_table(path, use_threads=False, read_dictionary=_few(meta)))]
    return _cached_segment(seg, True)


def _few(meta: pq.FileMetaData) -> list[str]:
    """String columns with few distinct values (venue, instrument, enums): read as dictionaries, so
    each row's value is one shared str object instead of a new one."""
    if meta.num_row_groups == 0 or meta.num_rows == 0:
        return []
    rg = meta.row_group(0)
    schema = meta.schema.to_arrow_schema()
    out = []
    for i in range(rg.num_columns):
        col = rg.column(i)
        name = col.path_in_schema
        if (name in schema.names and pa.types.is_string(schema.field(name).type)
                and col.total_uncompressed_size < rg.num_rows):  # < 1 byte per row: dictionary pages
            out.append(name)
    return out


def _pylist(column: pa.Array) -> Sequence[Any]:
    out: Sequence[Any]
    if pa.types.is_dictionary(column.type) and len(column) > 1 and column.null_count == 0:
        values = column.dictionary.to_pylist()
        out = itemgetter(*column.indices.to_numpy(zero_copy_only=False).tolist())(values)
    else:
        out = column.to_pylist()
    return out


def _table_events(type_name: str, table: pa.Table) -> Iterator[Event]:
    cls = EVENT_TYPES[type_name]
    if not _flat(type_name):
        return table_to_events(type_name, table)
    names = list(cls._fields)
    new = tuple.__new__
    cls_rep = itertools.repeat(cls)

    def batches() -> Iterator[Iterator[Event]]:
        for batch in table.select(names).to_batches(max_chunksize=_BATCH):
            yield map(new, cls_rep, zip(*[_pylist(c) for c in batch.columns], strict=True))

    return itertools.chain.from_iterable(batches())


def _pieces(tape: FileTape, topic: str, partition: int, lo: int) -> Iterator[Iterable[Event]]:
    segments = tape._log(topic, partition).segments
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg.end_offset <= lo or not seg.blocks:
            continue
        if i < last:
            for type_name, table in _parquet_tables(seg):
                first = int(table.column("_offset")[0].as_py())
                if lo > first:
                    table = table.slice(lo - first)
                if table.num_rows:
                    yield _table_events(type_name, table)
            continue
        for bi, info in enumerate(seg.blocks):
            if info.first_offset + info.records <= lo:
                continue
            entries = seg.read_block(bi)
            skip = lo - info.first_offset
            yield map(_second, entries[skip:] if skip > 0 else entries)


def partition_events(tape: FileTape, topic: str, partition: int, lo: int, hi: int) -> Iterator[Event]:
    """Events at offsets [lo, hi) of one file-tape partition, in offset order."""
    it: Any = itertools.chain.from_iterable(_pieces(tape, topic, partition, lo))
    return itertools.islice(it, hi - lo)
