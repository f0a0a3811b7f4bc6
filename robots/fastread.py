"""The backtest's input fast path: a file-tape partition as events, with C-level iteration.

Sealed segments of one flat event type (Trade, Quote, Bar, ...) are read from their Parquet
copies (the files `ticktape.tape.columnar` makes; written here on first use when missing) and
rebuilt in batches with `map(tuple.__new__, ...)` over `zip(*columns)`, so no Python frame runs
per event; low-cardinality string columns are read as dictionaries. Everything else - the
growing last segment, segments mixing types, nested types (MarketBook, books) - is decoded
straight from Avro by the C decoder: an Arrow round trip would only add work there.
Parquet reads are single-threaded: on a shared machine the reader's thread pool costs more CPU
than it saves.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ticktape.events import EVENT_TYPES, Event
from ticktape.tape.columnar import _flat, _segment_entries, _tables, table_to_events
from ticktape.tape.file import FileTape, Segment

_BATCH = 8192
_second = itemgetter(1)
_third = itemgetter(2)


def _parquet_copy(seg: Segment) -> tuple[str, pa.Table] | None:
    """The segment's Parquet copy, if it has a current one."""
    size = str(seg.path.stat().st_size)
    for path in sorted(seg.path.parent.glob(f"{seg.path.stem}.*.parquet")):
        meta = pq.read_metadata(path)
        if (meta.schema.to_arrow_schema().metadata or {}).get(b"ticktape.segment_size", b"").decode() == size:
            return path.name.split(".")[1], pq.read_table(path, use_threads=False, read_dictionary=_few(meta))
    return None


def _write_copy(seg: Segment, entries: list[tuple[int, str | None, Event]]) -> None:
    """Write the Parquet copy of a sealed one-type segment (the same file `ticktape.tape.columnar` makes)."""
    tables = list(_tables(entries))
    if len(tables) != 1:
        return  # mixed types get no copy: they are decoded from Avro each time
    type_name, table = tables[0]
    target = seg.path.with_name(f"{seg.path.stem}.{type_name}.parquet")
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    meta = dict(table.schema.metadata or {})
    meta[b"ticktape.segment_size"] = str(seg.path.stat().st_size).encode()
    pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
    os.replace(tmp, target)


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
            copy = _parquet_copy(seg)
            if copy is not None and _flat(copy[0]):
                type_name, table = copy
                first = int(table.column("_offset")[0].as_py())
                if lo > first:
                    table = table.slice(lo - first)
                if table.num_rows:
                    yield _table_events(type_name, table)
                continue
            if copy is None:
                entries = _segment_entries(seg)
                if entries and _flat(type(entries[0][2]).__name__):
                    _write_copy(seg, entries)  # flat types read faster from Parquet next time
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
