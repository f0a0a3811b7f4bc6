"""MarketBook v1 and v2 in one DuckDB table: a tape whose older segments were written before MarketBook v2
(v1 schema: RunnerBook without the starting-price fields) and whose newer ones hold v2 books."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.arrow_schema import create_table_sql, duckdb_type
from analyzer.load import load
from ticktape.codec import Codec
from ticktape.events import Event, MarketBook, PriceSize, RunnerBook
from ticktape.schemas import SchemaRegistry, default_schema_dir
from ticktape.tape import open_tape
from ticktape.tape.columnar import _arrow_type, iter_events_columnar, parquet_copy, read_columnar
from ticktape.tape.file import FileTape

TS0 = 1_700_000_000_000_000_000
TOPIC = "md.betfair.market"


def v1_registry(directory: Path) -> SchemaRegistry:
    directory.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        if p.name != "MarketBook.v2.avsc":
            shutil.copy(p, directory / p.name)
    return SchemaRegistry.load(directory)


def book(i: int, *, v2: bool) -> MarketBook:
    """Book i: as v1 wrote it (RunnerBook's first eight fields) or a v2 book with starting prices."""
    runners = []
    for r in range(2):
        fields = (100 + r, 0.0, "ACTIVE", 2.5 + r, 10.0 * i, (PriceSize(2.48 + r, 10.0),), (PriceSize(2.5 + r, 7.0),),
                  (PriceSize(2.5 + r, 1.0 + i),))
        if v2:
            sp = (3.1 + r, None if r else 3.4, (PriceSize(4.0, 2.0 + i),) if r == 0 else (), (PriceSize(1.01, 50.0),))
            runners.append(RunnerBook(*fields, *sp))
        else:
            runners.append(tuple.__new__(RunnerBook, fields))
    return MarketBook("1.2345", TS0 + i, TS0 + i, "OPEN", False, 0, 100.0 + i, i, True, True, 2, tuple(runners))


def write_tape(tmp_path: Path) -> tuple[Path, list[Event]]:
    """Two sealed segments written before v2 (v1 books), then v2 books in the segment after them."""
    root = tmp_path / "tape"
    v1 = Codec(v1_registry(tmp_path / "v1"))
    old = [book(i, v2=False) for i in range(6)]
    tape = FileTape(root, codec=v1, segment_bytes=1)  # each append a segment of its own
    tape.append(TOPIC, old[:3])
    tape.append(TOPIC, old[3:])
    tape.close()
    new = [book(i, v2=True) for i in range(6, 10)]
    with open_tape(f"file:{root}") as tape:
        tape.append(TOPIC, new)  # today's union: a new segment
    upgraded = [b._replace(runners=tuple(RunnerBook(*r) for r in b.runners)) for b in old]
    return root, [*upgraded, *new]


def test_v1_and_v2_market_books_load_into_one_table(tmp_path: Path) -> None:
    root, expected = write_tape(tmp_path)
    tape = FileTape(root)
    assert len(tape.segment_paths(TOPIC)) == 3
    assert list(iter_events_columnar(tape, TOPIC)) == expected  # sealed v1 segments through Parquet copies
    con = duckdb.connect()
    summary = load(tape, con)
    assert summary.rows == 10 and summary.bad == 0
    rows = con.execute("SELECT version, runners[1].sp_near, runners[2].sp_far, "
                       "len(runners[1].sp_back_stake_taken), runners[1].sp_lay_liability_taken[1].price, "
                       "runners[2].traded_volume[1].size FROM market_book ORDER BY _offset").fetchall()
    assert rows == [(i, None, None, 0, None, 1.0 + i) for i in range(6)] + [
        (i, 3.1, None, 1, 1.01, 1.0 + i) for i in range(6, 10)]
    tape.close()


def test_a_parquet_copy_made_before_v2_is_not_served_as_todays_table(tmp_path: Path) -> None:
    """A sealed segment's Parquet copy cached by code before v2 has v1's runner structs: it is not
    current (its schema is not today's), so the segment is decoded again and the copy rewritten."""
    root, expected = write_tape(tmp_path)
    tape = FileTape(root)
    seg = tape._log(TOPIC, 0).segments[0]
    v1_schema = v1_registry(tmp_path / "v1-again").current["MarketBook"].schema
    v1_struct = _arrow_type(v1_schema, {})
    fields = [pa.field("_offset", pa.int64(), nullable=False), pa.field("_key", pa.string())]
    fields += [v1_struct.field(i) for i in range(v1_struct.num_fields)]
    old_books = [book(i, v2=False) for i in range(3)]
    columns = list(zip(*old_books, strict=True))
    arrays = [pa.array(range(3), pa.int64()), pa.array(["1.2345"] * 3)]
    arrays += [pa.array(col, type=fields[i + 2].type) for i, col in enumerate(columns)]
    meta = {b"ticktape.type": b"MarketBook", b"ticktape.segment_size": str(seg.path.stat().st_size).encode()}
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))
    pq.write_table(table, seg.path.with_name(f"{seg.path.stem}.MarketBook.parquet"))

    assert parquet_copy(seg) is None
    assert list(iter_events_columnar(tape, TOPIC)) == expected
    assert parquet_copy(seg) is not None  # rewritten with today's schema
    [(_, first)] = [t for t in read_columnar(tape, TOPIC)][:1]
    assert "sp_near" in str(first.schema.field("runners").type)
    con = duckdb.connect()
    assert load(tape, con).rows == 10
    tape.close()


def test_a_database_loaded_before_v2_gets_its_runner_column_widened(tmp_path: Path) -> None:
    """A `market_book` table made by code before v2 has v1's runner structs; DuckDB would insert v2 structs
    into it cut to those fields (the starting prices silently dropped): the column is widened first."""
    root, _ = write_tape(tmp_path)
    v1_schema = v1_registry(tmp_path / "v1-again").current["MarketBook"].schema
    v1_runners = next(f for f in _arrow_type(v1_schema, {}) if f.name == "runners")
    con = duckdb.connect()
    con.execute(create_table_sql("MarketBook"))
    con.execute(f'ALTER TABLE market_book ALTER COLUMN runners TYPE {duckdb_type(v1_runners.type)}')
    assert "sp_near" not in con.execute("SELECT data_type FROM information_schema.columns "
                                        "WHERE table_name = 'market_book' AND column_name = 'runners'").fetchone()[0]
    tape = FileTape(root)
    assert load(tape, con).rows == 10
    tape.close()
    got = con.execute("SELECT runners[1].sp_near, runners[1].sp_lay_liability_taken[1].size FROM market_book "
                      "WHERE version >= 6 ORDER BY _offset").fetchall()
    assert got == [(3.1, 50.0)] * 4
