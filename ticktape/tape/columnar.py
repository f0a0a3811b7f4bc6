"""Columnar access to a tape: Arrow tables per event type, cached as Parquet for sealed segments.

Per-record Avro decoding tops out near 2M events/s; analytics (DuckDB loads) and the backtest's
data path want more. A sealed file-tape segment never changes, so the first columnar read of it
writes `<segment>.<Type>.parquet` beside it (atomically) and later reads come from Parquet.
The last segment of a partition (still growing) is converted on the fly. Blocks of one flat
event type are converted by the C extension straight from Avro to Arrow buffers
(`decode_block_table`); other blocks go through Python objects (`events_to_table`). Other backends (Kafka)
are read record by record and converted in chunks, so callers use one API everywhere.

Tables have the event's fields as columns (nested records as STRUCT, arrays as LIST, enums as
strings, nullable unions as nullable columns) plus `_offset` (int64) and `_key` (string).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ticktape import avro_program as ap
from ticktape.codec import VM, make_converter
from ticktape.errors import DecodeError
from ticktape.events import EVENT_TYPES, Event
from ticktape.schemas import NAMESPACE, registry
from ticktape.tape.arrow_rows import batch_rows
from ticktape.tape.base import Tape
from ticktape.tape.file import EntryDecoder, FileTape, Segment

CHUNK = 65_536
# Blocks with fewer records go through the record decoder and are batched: assembling an Arrow
# table per block costs ~100 us, more than decoding a handful of records as Python objects.
FAST_MIN_RECORDS = 32
_PRIMITIVES: dict[str, pa.DataType] = {
    "long": pa.int64(), "int": pa.int32(), "double": pa.float64(), "float": pa.float32(),
    "string": pa.string(), "boolean": pa.bool_(), "bytes": pa.binary(), "null": pa.null(),
}


def _arrow_type(node: Any, named: dict[str, pa.DataType], ns: str = NAMESPACE) -> pa.DataType:
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return _PRIMITIVES[node]
        return named[node if "." in node else f"{ns}.{node}"]
    if isinstance(node, list):
        non_null = [b for b in node if b != "null"]
        if len(non_null) != 1:
            raise ValueError(f"only nullable unions map to Arrow columns, not {node!r}")
        return _arrow_type(non_null[0], named, ns)
    kind = node["type"]
    if kind == "enum":
        named[f"{node.get('namespace', ns)}.{node['name']}"] = pa.string()
        return pa.string()
    if kind == "array":
        return pa.list_(_arrow_type(node["items"], named, ns))
    if kind == "map":
        return pa.map_(pa.string(), _arrow_type(node["values"], named, ns))
    if kind == "record":
        rns = node.get("namespace", ns)
        fields = [pa.field(f["name"], _arrow_type(f["type"], named, rns), nullable=_nullable(f["type"]))
                  for f in node["fields"]]
        t = pa.struct(fields)
        named[f"{rns}.{node['name']}"] = t
        return t
    return _arrow_type(kind, named, ns)


def _nullable(node: Any) -> bool:
    return isinstance(node, list) and "null" in node


@cache
def arrow_schema(type_name: str) -> pa.Schema:
    """The Arrow schema of an event type's table: `_offset`, `_key`, then the event's fields."""
    schema = registry().current[type_name].schema
    struct = _arrow_type(schema, {})
    fields = [pa.field("_offset", pa.int64(), nullable=False), pa.field("_key", pa.string())]
    fields += [struct.field(i) for i in range(struct.num_fields)]
    return pa.schema(fields, metadata={"ticktape.type": type_name})


def events_to_table(type_name: str, offsets: Sequence[int] | np.ndarray[Any, Any], keys: Sequence[str | None],
                    events: Sequence[Event]) -> pa.Table:
    """Events of one type (in offset order) as an Arrow table."""
    schema = arrow_schema(type_name)
    columns = list(zip(*events, strict=True)) if events else [()] * (len(schema) - 2)
    arrays = [pa.array(offsets, pa.int64()), pa.array(keys, pa.string())]
    arrays += [pa.array(col, type=schema.field(i + 2).type) for i, col in enumerate(columns)]
    return pa.Table.from_arrays(arrays, schema=schema)


def is_flat(type_name: str) -> bool:
    """True when every column is a scalar (no STRUCT/LIST): such tables rebuild events fastest."""
    return not any(pa.types.is_nested(f.type) for f in arrow_schema(type_name))


@cache
def _converter(type_name: str) -> Any:
    return make_converter(registry().current[type_name].schema)


def table_to_events(type_name: str, table: pa.Table) -> Iterator[Event]:
    """Events back from a table made by `events_to_table` (flat types take a fast path).

    Flat types are rebuilt in slices by `ticktape.tape.arrow_rows.batch_rows` (in C from the column
    buffers, or with `map(tuple.__new__, ...)` over zipped columns), so no Python frame runs per
    event; small slices keep the number of live objects low (converting
    a whole segment at once makes the cyclic GC traverse millions of young tuples).
    """
    cls = EVENT_TYPES[type_name]
    batches = table.select(list(cls._fields)).to_batches(max_chunksize=8192)
    if is_flat(type_name):
        return itertools.chain.from_iterable(batch_rows(cls, batch) for batch in batches)
    convert = _converter(type_name)
    return (convert(row, "") for batch in batches for row in batch.to_pylist())


def _runs(entries: list[tuple[int, str | None, Event]]) -> Iterator[tuple[str, list[tuple[int, str | None, Event]]]]:
    """Split (offset, key, event) entries into maximal runs of one event type."""
    start = 0
    for i in range(1, len(entries) + 1):
        if i == len(entries) or type(entries[i][2]) is not type(entries[start][2]):
            yield type(entries[start][2]).__name__, entries[start:i]
            start = i


def entries_to_tables(entries: list[tuple[int, str | None, Event]]) -> Iterator[tuple[str, pa.Table]]:
    """(offset, key, event) entries as one table per maximal same-type run."""
    for type_name, run in _runs(entries):
        offsets, keys, events = zip(*run, strict=True)
        yield type_name, events_to_table(type_name, offsets, keys, events)


@cache
def _symbols(symbols: tuple[str, ...]) -> pa.Array:
    return pa.array(symbols, pa.string())


def _column(typ: pa.DataType, node: Any, n: int, col: tuple[Any, ...]) -> pa.Array:
    """An Arrow array over the C decoder's buffers for one field (program `node`), without copying."""
    validity = None if col[0] is None else pa.py_buffer(col[0])
    if len(col) == 3:  # string / bytes: offsets + payload
        return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(col[1]), pa.py_buffer(col[2])])
    if node[0] == ap.UNION:
        node = next(b for b in node[1] if b[0] != ap.NULL)
    if node[0] == ap.ENUM:  # int32 symbol indices; a null index takes to a null string
        indices = pa.Array.from_buffers(pa.int32(), n, [validity, pa.py_buffer(col[1])])
        return _symbols(node[1]).take(indices)
    return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(col[1])])


def decode_block_table(decoder: EntryDecoder, data: bytes, count: int,
                       first_offset: int) -> tuple[str, pa.Table] | None:
    """A block's records as one (type, table) straight from the Avro bytes, or None.

    The C decoder (`VM.decode_columns`) fills Arrow buffers directly when every record of the
    block is the same flat event type (primitive, enum and nullable-primitive fields) and the
    segment needs no schema resolution; None means "use the record decoder". The table equals
    what `events_to_table` makes of the same records. Corrupt data raises DecodeError.
    """
    if VM is None or decoder.slow or count == 0:
        return None
    try:
        res = VM.decode_columns(decoder.prog, data, 0, count)
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"corrupt block at offset {first_offset}: {exc}", where=decoder.where) from exc
    if res is None:
        return None
    branch, key, columns, end = res
    if end != len(data):
        raise DecodeError(f"block at offset {first_offset} has {len(data) - end} stray bytes", where=decoder.where)
    record = decoder.prog[2][1][1][branch]  # entry record -> event union -> branch
    cls = record[1]
    # An older version of a type that only appended top-level fields with plain defaults (ticktape.tape.
    # legacy's marker class): its columns are today's first ones, the appended ones are constant.
    appended: tuple[Any, ...] = getattr(cls, "ticktape_defaults", ())
    cls = getattr(cls, "ticktape_current", cls)
    type_name = getattr(cls, "__name__", "")
    if type_name not in registry().current or EVENT_TYPES.get(type_name) is not cls:
        return None
    schema = arrow_schema(type_name)
    if len(schema) != len(columns) + len(appended) + 2:
        return None
    arrays = [pa.array(np.arange(first_offset, first_offset + count, dtype=np.int64)),
              _column(pa.string(), None, count, key)]
    arrays += [_column(schema.field(i + 2).type, node, count, col)
               for i, (node, col) in enumerate(zip(record[2], columns, strict=True))]
    for i, value in enumerate(appended, start=len(arrays)):
        typ = schema.field(i).type
        arrays.append(pa.nulls(count, typ) if value is None else pa.array([value] * count, typ))
    return type_name, pa.Table.from_arrays(arrays, schema=schema)


def block_table(seg: Segment, index: int) -> tuple[str, pa.Table] | list[tuple[str | None, Event]]:
    """The `index`-th block of a segment: a (type, table) on the C fast path, else its (key, event) records.

    Reads the block's bytes once either way; corrupt blocks raise DecodeError.
    """
    info = seg.blocks[index]
    decoder = seg._decoder()
    data = seg.read_block_data(index)
    if info.records >= FAST_MIN_RECORDS:
        fast = decode_block_table(decoder, data, info.records, info.first_offset)
        if fast is not None:
            return fast
    return decoder.decode(data, info.records, info.first_offset)


def segment_tables(seg: Segment) -> list[tuple[str, pa.Table]]:
    """A segment as maximal same-type runs of tables; flat blocks skip the Python objects."""
    runs: list[tuple[str, list[pa.Table]]] = []
    pending: list[tuple[int, str | None, Event]] = []

    def add(name: str, table: pa.Table) -> None:
        if runs and runs[-1][0] == name:
            runs[-1][1].append(table)
        else:
            runs.append((name, [table]))

    def flush() -> None:
        for name, table in entries_to_tables(pending):
            add(name, table)
        pending.clear()

    for bi, info in enumerate(seg.blocks):
        got = block_table(seg, bi)
        if isinstance(got, tuple):
            flush()
            add(*got)
        else:
            pending.extend((info.first_offset + i, key, event) for i, (key, event) in enumerate(got))
    flush()
    return [(name, tables[0] if len(tables) == 1 else pa.concat_tables(tables)) for name, tables in runs]


def _few_distinct(meta: pq.FileMetaData) -> list[str]:
    """String columns with dictionary-sized pages (venue, instrument, enums)."""
    if meta.num_row_groups == 0 or meta.num_rows == 0:
        return []
    group = meta.row_group(0)
    schema = meta.schema.to_arrow_schema()
    out = []
    for i in range(group.num_columns):
        col = group.column(i)
        name = col.path_in_schema
        if (name in schema.names and pa.types.is_string(schema.field(name).type)
                and col.total_uncompressed_size < group.num_rows):  # < 1 byte per row: dictionary pages
            out.append(name)
    return out


def parquet_copy(seg: Segment, *, dictionary: bool = False) -> tuple[str, pa.Table] | None:
    """The sealed segment's Parquet copy as (type, table), if a current one exists.

    `dictionary=True` reads low-cardinality string columns as dictionaries (for rebuilding
    events: one shared str per value); the default gives exactly `arrow_schema(type)`.
    Reads are single-threaded: on a small shared machine the thread pool costs more than it saves.
    """
    found = current_copy_file(seg)
    if found is None:
        return None
    type_name, path, meta = found
    columns = _few_distinct(meta) if dictionary else None
    return type_name, pq.read_table(path, use_threads=False, read_dictionary=columns)


def current_copy_file(seg: Segment) -> tuple[str, Path, pq.FileMetaData] | None:
    """The sealed segment's current Parquet copy, unread: (type, path, its metadata), or None.

    Current means made from the whole segment as it is now, with today's columns for the type."""
    size = str(seg.path.stat().st_size)
    for path in sorted(seg.path.parent.glob(f"{seg.path.stem}.*.parquet")):
        meta = pq.read_metadata(path)
        stored = meta.schema.to_arrow_schema()
        # The size tag and the row count both: a copy made from a stale view of the segment (a reader
        # before followers refreshed rolled segments) was tagged with the final size but lacks blocks.
        tagged = (stored.metadata or {}).get(b"ticktape.segment_size", b"").decode()
        if tagged == size and meta.num_rows == seg.end_offset - seg.base:
            type_name = path.name.split(".")[1]
            if not _is_current(type_name, stored):
                continue  # made before the type's schema changed (e.g. MarketBook v2): decoded again
            return type_name, path, meta
    return None


def _is_current(type_name: str, stored: pa.Schema) -> bool:
    """True when a Parquet copy's columns are today's table for the type (nested fields included)."""
    if type_name not in registry().current:
        return False
    return bool(stored.remove_metadata().equals(arrow_schema(type_name).remove_metadata()))


def write_parquet_copy(seg: Segment, type_name: str, table: pa.Table) -> None:
    """Write a sealed one-type segment's Parquet copy (atomically; tagged with the segment's size)."""
    target = seg.path.with_name(f"{seg.path.stem}.{type_name}.parquet")
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    meta = dict(table.schema.metadata or {})
    meta[b"ticktape.segment_size"] = str(seg.path.stat().st_size).encode()
    pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
    os.replace(tmp, target)


def _cached_segment(seg: Segment, write_cache: bool) -> list[tuple[str, pa.Table]]:
    """A sealed segment's tables: from its Parquet copy, or decoded (and cached if one type)."""
    copy = parquet_copy(seg)
    if copy is not None:
        return [copy]
    tables = segment_tables(seg)
    if write_cache and len(tables) == 1:
        write_parquet_copy(seg, *tables[0])
    return tables


def segment_columnar(seg: Segment, sealed: bool, from_offset: int = 0,
                     cache_sealed: bool = True) -> Iterator[tuple[str, pa.Table]]:
    """One segment's (event type, Arrow table) runs from `from_offset`: a sealed segment from its
    Parquet copy (written on first use with `cache_sealed`), the growing one decoded."""
    tables = _cached_segment(seg, cache_sealed) if sealed else segment_tables(seg)
    for type_name, table in tables:
        if from_offset > seg.base:
            table = table.filter(pc.greater_equal(table.column("_offset"), from_offset))
        if table.num_rows:
            yield type_name, table


def read_columnar(tape: Tape, topic: str, partition: int = 0, from_offset: int = 0,
                  cache_sealed: bool = True) -> Iterator[tuple[str, pa.Table]]:
    """(event type, Arrow table) chunks of one partition, in offset order, from `from_offset`."""
    if isinstance(tape, FileTape):
        segments = tape._log(topic, partition).segments
        for i, seg in enumerate(segments):
            if seg.end_offset > from_offset and seg.blocks:
                yield from segment_columnar(seg, i < len(segments) - 1, from_offset, cache_sealed)
        return
    chunk: list[tuple[int, str | None, Event]] = []
    for r in tape.read(topic, partition, from_offset=from_offset):
        chunk.append((r.offset, r.key, r.event))
        if len(chunk) >= CHUNK:
            yield from entries_to_tables(chunk)
            chunk = []
    if chunk:
        yield from entries_to_tables(chunk)


def iter_events_columnar(tape: Tape, topic: str, partition: int = 0, from_offset: int = 0) -> Iterator[Event]:
    """Events of a partition in offset order: sealed segments from their Parquet copies.

    The growing last segment is decoded directly (an Arrow round trip would only add work).
    For Python tuples the C decoder (`FileTape.read_events`) is as fast as Parquet; this path
    pays off when the Parquet copies already exist and the Avro files are cold on disk.
    """
    if not isinstance(tape, FileTape):
        for r in tape.read(topic, partition, from_offset=from_offset):
            yield r.event
        return
    segments = tape._log(topic, partition).segments
    for i, seg in enumerate(segments):
        if seg.end_offset <= from_offset or not seg.blocks:
            continue
        if i < len(segments) - 1:
            for type_name, table in _cached_segment(seg, True):
                if from_offset > seg.base:
                    table = table.filter(pc.greater_equal(table.column("_offset"), from_offset))
                yield from table_to_events(type_name, table)
            continue
        for bi, info in enumerate(seg.blocks):
            if info.first_offset + info.records <= from_offset:
                continue
            skip = max(from_offset - info.first_offset, 0)
            for _, event in seg.read_block(bi)[skip:]:
                yield event
