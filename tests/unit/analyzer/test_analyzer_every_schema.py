"""Every schema loads into DuckDB and queries back: ticktape's position columns never collide with fields.

The rule: the analyzer's own columns are `_topic`, `_partition`, `_offset`, `_key`; every event
field keeps its name (`CustomData.key` is `key`), and the schema registry refuses fields whose
name starts with `_`, so the two can never meet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from analyzer.arrow_schema import snake_case
from analyzer.load import connect, load
from analyzer.source import chunks
from ticktape.codec import to_python
from ticktape.errors import SchemaError
from ticktape.events import EVENT_TYPES, RECORD_TYPES, Event, Trade
from ticktape.schemas import SchemaRegistry, default_schema_dir, registry
from ticktape.tape.file import FileTape

POSITION = ("_topic", "_partition", "_offset", "_key")
TS0 = 1_700_000_000_000_000_000


def example(schema: Any, seed: str, ns: str = "ticktape", named: dict[str, Any] | None = None) -> Any:
    """A value for an Avro schema with no default or null left out: every column gets data to compare."""
    named = {} if named is None else named
    if isinstance(schema, str):
        simple = {"long": TS0 + len(seed), "int": len(seed), "double": 1.25 + len(seed), "float": 0.5,
                  "string": f"{seed}-text", "boolean": True, "bytes": b"\x00\xff" + seed.encode()}
        if schema in simple:
            return simple[schema]
        return named[schema if "." in schema else f"{ns}.{schema}"](seed)
    if isinstance(schema, list):
        return example(next(b for b in schema if b != "null"), seed, ns, named)
    kind = schema["type"]
    if kind == "enum":
        symbols = schema["symbols"]
        named[f"{ns}.{schema['name']}"] = lambda s, symbols=symbols: symbols[-1]
        return symbols[-1]
    if kind == "array":
        return (example(schema["items"], seed + "0", ns, named), example(schema["items"], seed + "01", ns, named))
    if kind == "map":
        return {"k": example(schema["values"], seed + "m", ns, named)}
    if kind == "record":
        full = f"{schema.get('namespace', ns)}.{schema['name']}"
        cls = RECORD_TYPES[full]

        def build(s: str, fields: list[Any] = schema["fields"]) -> Any:
            return cls(*[example(f["type"], f"{s}.{f['name']}", ns, named) for f in fields])
        named[full] = build
        return build(seed)
    return example(kind, seed, ns, named)


def every_event() -> Iterator[tuple[str, Event]]:
    for name in registry().names():
        event = example(registry().current[name].schema, name)
        assert isinstance(event, EVENT_TYPES[name])
        yield name, event


@pytest.mark.parametrize("path", ["columnar", "generic", "parquet_copies"])
def test_every_schema_loads_with_its_fields_under_their_own_names(tmp_path: Path, path: str) -> None:
    """`parquet_copies`: each topic's first event in a sealed segment, the second in the growing one,
    loaded a second time: then DuckDB reads the sealed segments' Parquet copies itself."""
    tape = FileTape(tmp_path / "tape", segment_bytes=1 if path == "parquet_copies" else 64 << 20)
    events = dict(every_event())
    assert len(events) == len({p.name.split(".")[0] for p in default_schema_dir().glob("*.avsc")})  # every type
    for name, event in events.items():
        # The tape key differs from any field: `_key` must be the tape's, `key` the event's own.
        if path == "parquet_copies":
            tape.append(f"t.{snake_case(name)}", [event], keys=[f"tape-key-{name}"])
            tape.append(f"t.{snake_case(name)}", [event], keys=[None])
        else:
            tape.append(f"t.{snake_case(name)}", [event, event], keys=[f"tape-key-{name}", None])
    if path == "parquet_copies":
        first = load(tape, duckdb.connect(), columnar=True)  # writes the sealed segments' copies
        assert first.rows == 2 * len(events)
        assert len(list(tmp_path.glob("tape/**/*.parquet"))) == len(events)
        for name in events:  # the second load takes each copy as a file
            first_chunk = next(chunks(tape, f"t.{snake_case(name)}", 0, 0, skip_bad=False, copies=True))
            assert (first_chunk.type_name, first_chunk.table, first_chunk.copy_rows) == (name, None, 1), name
    con = duckdb.connect()
    summary = load(tape, con, columnar=path != "generic")
    assert summary.rows == 2 * len(events) and summary.bad == 0
    for name, event in events.items():
        table = snake_case(name)
        columns = [r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()]
        assert tuple(columns[:4]) == POSITION and columns[4:] == list(event._fields), name
        rows = con.execute(f'SELECT * FROM "{table}" ORDER BY _offset').fetchall()
        assert [r[:4] for r in rows] == [(f"t.{table}", 0, 0, f"tape-key-{name}"), (f"t.{table}", 0, 1, None)]
        assert rows[0][4:] == tuple(to_python(event).values()), name
        view = con.execute(f'SELECT count(*) FROM "{table}_v" WHERE _offset = 1').fetchone()
        assert view == (1,), name
    # the collision that broke `load` on every CustomData: both keys are there, each under its name
    both = con.execute("SELECT key, _key FROM custom_data WHERE _offset = 0").fetchone()
    assert both == (events["CustomData"].key, "tape-key-CustomData")
    tape.close()


def test_readme_add_data_example_loads_and_queries_through_the_cli(tmp_path: Path) -> None:
    from producers.frames import add_data

    tape = FileTape(tmp_path / "tape")
    tweets_df = pd.DataFrame({"time": pd.to_datetime(["2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"]),
                              "author": ["ann", "bob"], "text": ["up", "down"]})
    add_data("tweets", tweets_df, tape=tape, key_column="author")
    tape.close()
    db = tmp_path / "runs.duckdb"
    for skip_bad in ([], ["--skip-bad"]):
        done = subprocess.run([sys.executable, "-m", "ticktape", "--tape", f"file:{tmp_path / 'tape'}", "load",
                               "--db", str(db), *skip_bad], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    out = subprocess.run([sys.executable, "-m", "ticktape", "sql", str(db),
                          "SELECT key, _key, _topic, payload FROM custom_data ORDER BY ts_event", "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["key"], r["_key"], r["_topic"], json.loads(r["payload"])["text"]) for r in rows] == [
        ("ann", "ann", "custom.tweets", "up"), ("bob", "bob", "custom.tweets", "down")]


def test_a_field_named_with_the_reserved_prefix_is_refused(tmp_path: Path) -> None:
    schema = json.loads((default_schema_dir() / "Trade.v1.avsc").read_text())
    schema["fields"].append({"name": "_offset", "type": "long", "default": 0})
    (tmp_path / "Trade.v1.avsc").write_text(json.dumps(schema))
    with pytest.raises(SchemaError, match=r"Trade\.v1\.avsc: field '_offset': names starting with '_' are reserved"):
        SchemaRegistry.load(tmp_path)


def test_a_database_loaded_before_the_rule_gets_the_new_column_names(tmp_path: Path) -> None:
    """Tables with `topic`, `partition`, `offset`, `key` are renamed in place, rows kept, and loads go on."""
    db = str(tmp_path / "old.duckdb")
    tape = FileTape(tmp_path / "tape")
    trades = [Trade("binance", "BTCUSDT", TS0 + i, TS0 + i, 100.0 + i, 1.0, "BUY", str(i)) for i in range(3)]
    tape.append("md.trade", trades[:2])
    con = connect(db)
    load(tape, con)
    for old, new in (("topic", "_topic"), ("partition", "_partition"), ("offset", "_offset"), ("key", "_key")):
        con.execute(f'ALTER TABLE trade RENAME COLUMN "{new}" TO "{old}"')  # what an older ticktape made
    con.close()
    tape.append("md.trade", trades[2:])
    con = connect(db)
    assert load(tape, con).rows == 1
    assert con.execute("SELECT _topic, _partition, _offset, _key, price FROM trade ORDER BY _offset").fetchall() == [
        ("md.trade", 0, i, "BTCUSDT", 100.0 + i) for i in range(3)]
    con.close()
    tape.close()

