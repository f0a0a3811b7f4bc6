"""Where the loader's Arrow batches come from, per topic-partition, in offset order.

Three paths, fastest first:

- file tape, columnar reader (`ticktape.tape.columnar.segment_columnar`): Parquet copies of
  sealed segments (handed over unread, as the file, when the loader asks for `copies`: DuckDB
  reads them itself), on-the-fly conversion of the growing one;
- file tape, block by block (`block_table`: flat one-type blocks straight to Arrow in C, others
  through `Segment`'s record decoder), taken when the columnar reader hits a
  block that fails to decode: it finds the exact bad record and (`--skip-bad`) salvages the
  block: the records before the corrupt one are kept, the rest of that block is reported (Avro
  has no record boundaries, so nothing after a corrupt record can be found);
- any other backend (Kafka): `Tape.read`, converted in chunks.

Every path yields `Chunk`s: one event type's rows (`_offset`, `_key`, fields) or the
bad records found, plus the next offset to read, so the loader can commit a batch and its
bookmark together.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from analyzer.arrow_schema import events_to_table
from ticktape.errors import DecodeError
from ticktape.tape.base import Tape
from ticktape.tape.columnar import block_table, current_copy_file, segment_columnar
from ticktape.tape.file import FileTape

log = logging.getLogger("ticktape.analyzer.source")


CHUNK_ROWS = 65_536


class BadRecord(NamedTuple):
    """A record that could not be decoded."""

    offset: int
    error: str


class BadRecordError(DecodeError):
    """A record that cannot be decoded, at a known offset (raised without `skip_bad`)."""

    def __init__(self, bad: BadRecord) -> None:
        self.offset = bad.offset
        super().__init__(f"offset {bad.offset}: {bad.error}")


class Chunk(NamedTuple):
    """Rows of one event type (or none), bad records, and the next offset after them.

    `copy` is a whole sealed segment's Parquet copy left unread (its `copy_rows` rows; `table` is
    None): the loader has DuckDB read the file itself, which is faster than scanning it from Arrow."""

    type_name: str | None
    table: pa.Table | None
    bad: list[BadRecord]
    next_offset: int
    copy: Path | None = None
    copy_rows: int = 0

    @property
    def rows(self) -> int:
        """The number of good rows."""
        return self.copy_rows if self.copy is not None else self.table.num_rows if self.table is not None else 0


def _runs(entries: list[tuple[int, str | None, Any]], next_offset: int) -> Iterator[Chunk]:
    """Maximal runs of one event type as chunks; the last one carries `next_offset`."""
    groups = [(name, list(run)) for name, run in itertools.groupby(entries, key=lambda e: type(e[2]).__name__)]
    for i, (name, run) in enumerate(groups):
        offsets, keys, events = zip(*run, strict=True)
        nxt = next_offset if i == len(groups) - 1 else run[-1][0] + 1
        yield Chunk(name, events_to_table(name, events, offsets, keys), [], nxt)


def chunks(tape: Tape, topic: str, partition: int, from_offset: int, *, skip_bad: bool,
           columnar: bool = True, copies: bool = False) -> Iterator[Chunk]:
    """Chunks of one topic-partition from `from_offset`, in offset order.

    Without `skip_bad`, a record that cannot be decoded raises DecodeError naming the topic,
    partition and offset. With `copies` (and `columnar`), a sealed segment wholly at or after
    `from_offset` whose Parquet copy is current comes as a `copy` chunk, unread.
    """
    if isinstance(tape, FileTape):
        offset = from_offset
        segments = tape._log(topic, partition).segments
        # The columnar reader converts the growing last segment whole on every call; an
        # incremental load that starts inside it only needs its new blocks, which the block
        # reader seeks to directly.
        in_live_segment = bool(segments) and from_offset >= segments[-1].base
        if columnar and not in_live_segment:
            try:
                for i, seg in enumerate(segments):
                    if seg.end_offset <= offset or not seg.blocks:
                        continue
                    sealed = i < len(segments) - 1
                    found = current_copy_file(seg) if copies and sealed and seg.base >= offset else None
                    if found is not None:
                        name, path, meta = found
                        offset = seg.end_offset
                        yield Chunk(name, None, [], offset, path, meta.num_rows)
                        continue
                    for name, table in segment_columnar(seg, sealed, offset):
                        offset = int(table.column("_offset")[-1].as_py()) + 1
                        yield Chunk(name, table, [], offset)
                return
            except DecodeError as exc:
                # The columnar reader fails a whole segment; the block path finds the exact record.
                log.warning("reading %s/%d from offset %d block by block: %s", topic, partition, offset, exc)
        yield from _file_blocks(tape, topic, partition, offset, skip_bad=skip_bad)
        return
    yield from _generic(tape, topic, partition, from_offset, skip_bad=skip_bad)


class _RunBuilder:
    """Accumulates consecutive records of one type: block tables from the C column decoder, and
    column-ready lists (no per-record tuples) for blocks decoded record by record."""

    def __init__(self) -> None:
        self.type_name: str | None = None
        self.start = 0
        self.tables: list[pa.Table] = []  # the run's first `rows` rows, in order; then `events`
        self.rows = 0
        self.keys: list[str | None] = []
        self.events: list[Any] = []

    @property
    def size(self) -> int:
        """Rows in the pending run."""
        return self.rows + len(self.events)

    def add_table(self, name: str, first_offset: int, table: pa.Table) -> Iterator[Chunk]:
        """Append a block's table (the columnar reader's layout) starting at `first_offset`."""
        if name != self.type_name or first_offset != self.start + self.size or self.size >= CHUNK_ROWS:
            yield from self.flush(first_offset)
            self.type_name, self.start = name, first_offset
        self._events_to_table()
        # Same columns as `events_to_table` makes (all nullable, no metadata), so runs concatenate.
        self.tables.append(pa.Table.from_arrays(table.columns, names=table.column_names))
        self.rows += table.num_rows

    def _events_to_table(self) -> None:
        if self.events and self.type_name is not None:
            first = self.start + self.rows
            offsets = np.arange(first, first + len(self.events), dtype=np.int64)
            self.tables.append(events_to_table(self.type_name, self.events, offsets, self.keys))
            self.rows += len(self.events)
            self.keys, self.events = [], []

    def add(self, first_offset: int, keys: tuple[str | None, ...], events: tuple[Any, ...]) -> Iterator[Chunk]:
        """Append contiguous records starting at `first_offset`; yield a chunk when the type changes."""
        kinds = set(map(type, events))  # C-level: a block is almost always one type
        if len(kinds) > 1:
            i = 0
            for name, group in itertools.groupby(events, key=lambda e: type(e).__name__):
                n = len(list(group))
                yield from self._extend(name, first_offset + i, keys[i:i + n], events[i:i + n])
                i += n
            return
        yield from self._extend(type(events[0]).__name__, first_offset, keys, events)

    def _extend(self, name: str, first_offset: int, keys: Any, events: Any) -> Iterator[Chunk]:
        if name != self.type_name or first_offset != self.start + self.size or self.size >= CHUNK_ROWS:
            yield from self.flush(first_offset)
            self.type_name, self.start = name, first_offset
        self.keys.extend(keys)
        self.events.extend(events)

    def flush(self, next_offset: int) -> Iterator[Chunk]:
        """The pending run as one chunk (if any)."""
        if self.size and self.type_name is not None:
            self._events_to_table()
            table = self.tables[0] if len(self.tables) == 1 else pa.concat_tables(self.tables)
            self.tables, self.rows = [], 0
            yield Chunk(self.type_name, table, [], next_offset)


def _file_blocks(tape: FileTape, topic: str, partition: int, from_offset: int, *,
                 skip_bad: bool) -> Iterator[Chunk]:
    """Block by block through the file tape's segments; corrupt blocks salvaged when allowed."""
    plog = tape._log(topic, partition)  # the partition's segments: the block-level view we need
    si, bi = plog.locate(max(from_offset, plog.start_offset))
    run = _RunBuilder()
    while si < len(plog.segments):
        seg = plog.segments[si]
        if bi >= len(seg.blocks):
            si, bi = si + 1, 0
            continue
        info = seg.blocks[bi]
        skip = max(from_offset - info.first_offset, 0)
        end = info.first_offset + info.records
        bad: list[BadRecord] = []
        try:
            got = block_table(seg, bi)  # flat one-type blocks come as a table (C column decoder)
        except DecodeError as exc:
            got, bad = _salvage(seg, bi, exc)
        if isinstance(got, tuple):
            name, table = got
            if table.num_rows > skip:
                yield from run.add_table(name, info.first_offset + skip, table.slice(skip))
            entries: list[tuple[str | None, Any]] = []
        else:
            entries = got
        if len(entries) > skip:
            keys, events = zip(*entries[skip:], strict=True)
            yield from run.add(info.first_offset + skip, keys, events)
        bad = [b for b in bad if b.offset >= info.first_offset + skip]
        if bad:
            yield from run.flush(bad[0].offset)  # the good records before it still load
            if not skip_bad:
                raise BadRecordError(bad[0])
            yield Chunk(None, None, bad, end)
        bi += 1
    yield from run.flush(run.start + run.size)


def _salvage(seg: Any, index: int, exc: DecodeError) -> tuple[list[tuple[str | None, Any]], list[BadRecord]]:
    """Decode a failing block record by record: the good records before the first bad one, and the rest as bad."""
    info = seg.blocks[index]
    good: list[tuple[str | None, Any]] = []
    try:
        data = seg.read_block_data(index)
    except DecodeError as inner:
        return [], [BadRecord(info.first_offset + i, str(inner)) for i in range(info.records)]
    decoder = seg._decoder()
    pos = 0
    for i in range(info.records):
        offset = info.first_offset + i
        try:
            entry, pos = decoder.decode_one(data, pos, offset)
        except DecodeError as err:
            rest = [BadRecord(o, f"unreadable: follows the corrupt record at offset {offset} in its block")
                    for o in range(offset + 1, info.first_offset + info.records)]
            return good, [BadRecord(offset, str(err)), *rest]
        good.append(entry)
    # Every record decodes on its own: the block failed as a whole (e.g. stray bytes after its
    # records). The records are intact, so they load; the anomaly is logged.
    log.warning("block at offset %d decodes record by record despite: %s", info.first_offset, exc)
    return good, []


def _generic(tape: Tape, topic: str, partition: int, from_offset: int, *, skip_bad: bool) -> Iterator[Chunk]:
    """Through `Tape.read`; a DecodeError ends the reader, so it restarts after the bad record."""
    offset = from_offset
    while True:
        pending: list[tuple[int, str | None, Any]] = []
        try:
            for rec in tape.read(topic, partition, from_offset=offset):
                pending.append((rec.offset, rec.key, rec.event))
                if len(pending) >= CHUNK_ROWS:
                    offset = pending[-1][0] + 1
                    yield from _runs(pending, offset)
                    pending = []
        except DecodeError as exc:
            if not skip_bad:
                raise
            if pending:
                offset = pending[-1][0] + 1
                yield from _runs(pending, offset)
            # The backend stopped at the record after the last good one: that is the bad one.
            yield Chunk(None, None, [BadRecord(offset, str(exc))], offset + 1)
            offset += 1
            continue
        if pending:
            yield from _runs(pending, pending[-1][0] + 1)
        return
