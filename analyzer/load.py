"""Load a tape into DuckDB: one table per event type, incremental, atomic per batch.

Every event type gets a table named after it in snake_case (`trade`, `market_book`,
`order_filled`, ...) with `_topic`, `_partition`, `_offset`, `_key` (where the event sits on the
tape; no field may start with `_`, so these never collide with one) and the event's typed fields
under their own names (times as BIGINT ns), and a view `<table>_v` with the time fields as
TIMESTAMP_NS.

`load_bookmarks` holds, per topic-partition, the next offset to load. Each batch is one
DuckDB transaction covering the rows of every table, the `load_errors` rows and the bookmark
update, so a load killed at any point (even SIGKILL) leaves the database at a batch boundary:
re-running it loads exactly what is missing, with no duplicates. Rows move as Arrow tables
(DuckDB scans them in place), never row by row.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.arrow_schema import (
    OLD_POSITION_NAMES,
    create_table_sql,
    duckdb_type,
    event_schema,
    low_cardinality_columns,
    snake_case,
    table_schema,
    timestamp_view_sql,
)
from analyzer.source import BadRecord, Chunk, chunks
from ticktape.errors import DecodeError, TicktapeError
from ticktape.schemas import registry
from ticktape.tape import TapeLike, using_tape
from ticktape.tape.base import Tape

log = logging.getLogger("ticktape.analyzer.load")

DEFAULT_BATCH_ROWS = 500_000
_META_DDL = [
    """CREATE TABLE IF NOT EXISTS load_bookmarks (
        topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL, next_offset BIGINT NOT NULL,
        events BIGINT NOT NULL, errors BIGINT NOT NULL, tape VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS load_errors (
        topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL, "offset" BIGINT NOT NULL, error VARCHAR NOT NULL)""",
]


class LoadError(TicktapeError):
    """A load stopped on bad input (names topic, partition and offset)."""


@dataclass
class PartitionLoad:
    """What one load did to one topic-partition."""

    topic: str
    partition: int
    start_offset: int
    next_offset: int
    rows: int = 0
    bad: int = 0
    base_events: int = 0  # counted by earlier loads
    base_errors: int = 0


@dataclass
class LoadSummary:
    """What one `load` call did."""

    partitions: list[PartitionLoad] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    @property
    def bad(self) -> int:
        return sum(p.bad for p in self.partitions)

    def line(self) -> str:
        """One human line: rows, bad records, rate."""
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        return (f"loaded {self.rows} events from {len(self.partitions)} topic-partitions in {self.seconds:.2f} s "
                f"({rate:,.0f} events/s), {self.bad} bad records skipped")


def connect(db: str) -> duckdb.DuckDBPyConnection:
    """Open (or create) an analyzer database with its bookmark and error tables."""
    con = duckdb.connect(db)
    for ddl in _META_DDL:
        con.execute(ddl)
    upgrade_tables(con)
    return con


def ensure_table(con: duckdb.DuckDBPyConnection, type_name: str) -> str:
    """Create the type's table and `_v` view, adding columns a newer schema version introduced."""
    table = snake_case(type_name)
    con.execute(create_table_sql(type_name))
    have = _rename_old_position_columns(con, type_name)
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
                             [table]).fetchall())
    for f in table_schema(type_name):
        spelled = duckdb_type(f.type)
        if f.name not in have:
            con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{f.name}" {spelled}')
        elif pa.types.is_nested(f.type) and types.get(f.name, "").replace('"', "") != spelled.replace('"', ""):
            # A nested record gained fields (MarketBook v2's RunnerBook): widen the column, old rows get
            # NULLs there. Without it DuckDB would insert the new rows' structs cut to the old fields.
            con.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{f.name}" TYPE {spelled}')
    con.execute(timestamp_view_sql(type_name))
    return table


def _rename_old_position_columns(con: duckdb.DuckDBPyConnection, type_name: str) -> set[str]:
    """Rename a table's `topic`, `partition`, `offset`, `key` (databases loaded before the `_` names) to
    `_topic`, ...; return the table's columns. A column that is one of the event's fields stays."""
    table = snake_case(type_name)
    have = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
    fields = set(event_schema(type_name).names)
    for old, new in OLD_POSITION_NAMES.items():
        if old in have and new not in have and old not in fields:
            con.execute(f'ALTER TABLE "{table}" RENAME COLUMN "{old}" TO "{new}"')
            have = (have - {old}) | {new}
    return have


def upgrade_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Give every event table of an older database the `_` position column names (see `ensure_table`)."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_type = 'BASE TABLE'").fetchall()}
    for type_name in registry().names():
        if snake_case(type_name) in tables:
            _rename_old_position_columns(con, type_name)


def bookmarks(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(topic, partition) -> (next offset to load, events loaded, bad records)."""
    rows = con.execute('SELECT topic, "partition", next_offset, events, errors FROM load_bookmarks').fetchall()
    return {(t, int(p)): (int(o), int(e), int(b)) for t, p, o, e, b in rows}


def tape_of_bookmarks(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], str | None]:
    """(topic, partition) -> URI of the tape its bookmark counts offsets of."""
    rows = con.execute('SELECT topic, "partition", tape FROM load_bookmarks').fetchall()
    return {(t, int(p)): u for t, p, u in rows}


def same_tape_key(uri: str) -> str:
    """A URI normalised for comparison: file tapes by their real path (relative or not)."""
    scheme, sep, rest = uri.partition(":")
    if not sep:
        scheme, rest = "file", uri
    if scheme == "file":
        return "file:" + os.path.realpath(rest.partition("?")[0])
    return uri


class _Batch:
    """Chunks gathered for one transaction."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.rows = 0
        self.bad = 0

    def add(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        self.rows += chunk.rows
        self.bad += len(chunk.bad)


def _cut_at_time(chunk: Chunk, to_ns: int) -> tuple[Chunk, bool]:
    """The chunk up to (excluding) the first row with ts_event > to_ns; True if cut."""
    table = chunk.table
    if table is None or "ts_event" not in table.column_names:
        return chunk, False
    mask = pc.greater(table.column("ts_event"), to_ns)
    if not pc.any(mask).as_py():
        return chunk, False
    first = pc.index(mask, True).as_py()
    stop = int(table.column("_offset")[first].as_py())
    return Chunk(chunk.type_name, table.slice(0, first), [], stop), True


def load(tape: TapeLike, con: duckdb.DuckDBPyConnection, *, topics: Sequence[str] | None = None,
         from_ns: int | None = None, to_ns: int | None = None, skip_bad: bool = False,
         batch_rows: int = DEFAULT_BATCH_ROWS, on_progress: Callable[[int], None] | None = None,
         columnar: bool = True) -> LoadSummary:
    """Load what is new on the tape (a `Tape` or its URI; all topics, or `topics`) into the database `con`.

    `from_ns` positions the first load of a partition (later loads continue from the
    bookmark); `to_ns` stops each partition before its first event with ts_event > to_ns, so
    a later load without it continues exactly there. A record that cannot be decoded stops the
    load with LoadError naming topic, partition and offset; with `skip_bad` it is listed in
    `load_errors` and the rest loads.
    """
    with using_tape(tape, existing=True) as t:
        return _load_open(t, con, topics=topics, from_ns=from_ns, to_ns=to_ns, skip_bad=skip_bad,
                          batch_rows=batch_rows, on_progress=on_progress, columnar=columnar)


def _load_open(tape: Tape, con: duckdb.DuckDBPyConnection, *, topics: Sequence[str] | None, from_ns: int | None,
               to_ns: int | None, skip_bad: bool, batch_rows: int, on_progress: Callable[[int], None] | None,
               columnar: bool) -> LoadSummary:
    t0 = time.perf_counter()
    for ddl in _META_DDL:
        con.execute(ddl)
    # One DuckDB thread while loading: the load is one core's work by design (decoding is Python),
    # and on 2 cores a second DuckDB thread only contends with it. Restored afterwards for queries.
    # fetchall, not fetchone: a half-read result blocks the connection's next `con.sql` in duckdb 2
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0]
    con.execute("SET threads = 1")
    # Decoding creates millions of short-lived, acyclic tuples: the cyclic GC's repeated scans of
    # them cost as much as the decoding itself (measured 2x on Trade). Refcounting frees them.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(tape, con, t0, topics=topics, from_ns=from_ns, to_ns=to_ns, skip_bad=skip_bad,
                     batch_rows=batch_rows, on_progress=on_progress, columnar=columnar)
    finally:
        if gc_was_enabled:
            gc.enable()
        if threads is not None:
            con.execute(f"SET threads = {int(threads[0])}")


def _load(tape: Tape, con: duckdb.DuckDBPyConnection, t0: float, *, topics: Sequence[str] | None,
          from_ns: int | None, to_ns: int | None, skip_bad: bool, batch_rows: int,
          on_progress: Callable[[int], None] | None, columnar: bool) -> LoadSummary:
    summary = LoadSummary()
    marks = bookmarks(con)
    names = list(topics) if topics else [t.name for t in tape.topics()]
    here = same_tape_key(tape.uri)
    for (topic, partition), uri in tape_of_bookmarks(con).items():
        if topic in names and uri is not None and same_tape_key(uri) != here:
            raise LoadError(f"{topic} partition {partition} of this database was loaded from {uri}, not "
                            f"{tape.uri}: offsets of two tapes cannot share bookmarks; use another --db")
    ensured: set[str] = set()
    for topic in names:
        n = tape.partitions(topic)
        if n == 0:
            raise LoadError(f"no topic {topic!r} on {tape.uri}")
        for partition in range(n):
            mark = marks.get((topic, partition))
            if mark is not None:
                part = PartitionLoad(topic, partition, mark[0], mark[0], base_events=mark[1], base_errors=mark[2])
            else:
                start = tape.offset_for_time(topic, partition, from_ns) if from_ns is not None else 0
                part = PartitionLoad(topic, partition, start, start)
            summary.partitions.append(part)
            _load_partition(tape, con, part, to_ns=to_ns, skip_bad=skip_bad, batch_rows=batch_rows,
                            ensured=ensured, on_progress=on_progress, columnar=columnar)
    summary.seconds = time.perf_counter() - t0
    return summary


def _load_partition(tape: Tape, con: duckdb.DuckDBPyConnection, part: PartitionLoad, *, to_ns: int | None,
                    skip_bad: bool, batch_rows: int, ensured: set[str],
                    on_progress: Callable[[int], None] | None, columnar: bool) -> None:
    batch = _Batch()
    try:
        # Copies come unread unless a time bound must cut inside one (then as a table, cut below).
        for chunk in _sliced(chunks(tape, part.topic, part.partition, part.start_offset, skip_bad=skip_bad,
                                    columnar=columnar, copies=to_ns is None), batch_rows):
            stop = False
            if to_ns is not None:
                chunk, stop = _cut_at_time(chunk, to_ns)
            if chunk.type_name is not None and chunk.type_name not in ensured:
                ensure_table(con, chunk.type_name)
                ensured.add(chunk.type_name)
            batch.add(chunk)
            if stop:
                break
            if batch.rows >= batch_rows:
                _commit(con, tape, part, batch, on_progress)
                batch = _Batch()
    except DecodeError as exc:
        _commit(con, tape, part, batch, on_progress)  # what came before the bad record is good
        at = getattr(exc, "offset", part.next_offset)
        raise LoadError(f"bad record at topic {part.topic} partition {part.partition} offset {at} "
                        f"(loaded up to it): {exc}; "
                        "use --skip-bad to list bad records in load_errors and load the rest") from exc
    _commit(con, tape, part, batch, on_progress)


def _sliced(source: Iterator[Chunk], rows: int) -> Iterator[Chunk]:
    """Chunks of at most `rows` rows (a columnar segment can be millions), so transactions stay bounded.

    An unread Parquet copy stays whole: one INSERT of one sealed segment (at most the tape's segment
    size, 64 MiB by default) is as bounded, and DuckDB reads the file in row groups."""
    for chunk in source:
        table = chunk.table
        if table is None or table.num_rows <= rows:
            yield chunk
            continue
        offsets = table.column("_offset")
        for start in range(0, table.num_rows, rows):
            end = start + rows
            nxt = int(offsets[end].as_py()) if end < table.num_rows else chunk.next_offset
            yield Chunk(chunk.type_name, table.slice(start, rows), [], nxt)


def _commit(con: duckdb.DuckDBPyConnection, tape: Tape, part: PartitionLoad, batch: _Batch,
            on_progress: Callable[[int], None] | None) -> None:
    """One transaction: every chunk's rows, the bad records, the bookmark."""
    if not batch.chunks:
        return
    next_offset = batch.chunks[-1].next_offset
    bad: list[BadRecord] = [b for c in batch.chunks for b in c.bad]
    con.begin()
    try:
        # One INSERT per type: topics that interleave types (orders.event) come in many small runs.
        by_type: dict[str, list[pa.Table]] = {}
        for chunk in batch.chunks:
            if chunk.copy is not None and chunk.copy_rows:
                _insert_copy(con, chunk.type_name or "", chunk.copy, part.topic, part.partition)
            elif chunk.table is not None and chunk.table.num_rows:
                by_type.setdefault(chunk.type_name or "", []).append(chunk.table)
        for type_name, tables in by_type.items():
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
            _insert(con, type_name, table, part.topic, part.partition)
        if bad:
            errors = pa.table({"topic": [part.topic] * len(bad), "partition": [part.partition] * len(bad),
                               "offset": [b.offset for b in bad], "error": [b.error for b in bad]})
            con.register("_tt_errors", errors)
            con.execute('INSERT INTO load_errors BY NAME SELECT * FROM _tt_errors')
            con.unregister("_tt_errors")
        con.execute('DELETE FROM load_bookmarks WHERE topic = ? AND "partition" = ?', [part.topic, part.partition])
        con.execute("INSERT INTO load_bookmarks VALUES (?, ?, ?, ?, ?, ?)",
                    [part.topic, part.partition, next_offset, part.base_events + part.rows + batch.rows,
                     part.base_errors + part.bad + batch.bad, tape.uri])
        con.commit()
    except BaseException:
        con.rollback()
        raise
    part.next_offset = next_offset
    part.rows += batch.rows
    part.bad += batch.bad
    if on_progress is not None:
        on_progress(batch.rows + batch.bad)


def _insert_copy(con: duckdb.DuckDBPyConnection, type_name: str, path: Path, topic: str, partition: int) -> None:
    """Append a sealed segment's Parquet copy (`_offset`, `_key`, fields) to the type's table, read by
    DuckDB itself: ~25% less CPU than reading it into Arrow and scanning that (see BENCHMARKS.md)."""
    con.execute(f'INSERT INTO "{snake_case(type_name)}" BY NAME SELECT ?::VARCHAR AS _topic, '
                '?::INTEGER AS _partition, * FROM read_parquet(?)', [topic, partition, str(path)])


def _insert(con: duckdb.DuckDBPyConnection, type_name: str, table: pa.Table, topic: str, partition: int) -> None:
    """Append an Arrow chunk (`_offset`, `_key`, fields) to the type's table; DuckDB scans it in place.

    Matched BY NAME: the chunk's `_offset`, `_key` are the table's, `_topic`, `_partition` are added."""
    for name in low_cardinality_columns(type_name):
        i = table.schema.get_field_index(name)
        if i >= 0 and pa.types.is_string(table.schema.field(i).type):
            table = table.set_column(i, name, pc.dictionary_encode(table.column(i)))
    con.register("_tt_batch", table)
    try:
        con.execute(f'INSERT INTO "{snake_case(type_name)}" BY NAME SELECT ?::VARCHAR AS _topic, '
                    '?::INTEGER AS _partition, * FROM _tt_batch', [topic, partition])
    finally:
        con.unregister("_tt_batch")
