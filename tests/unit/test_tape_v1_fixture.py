"""A tape written on 2026-12-05 stays readable forever, by every later version of ticktape.

`tests/fixtures/tape_v1/tape` was written once by the code of that day (how: the docstring of
`tests/fixtures/tape_v1/build.py`): real Betfair market, race, cricket and order streams, Binance
trades and bars, dead letters, two backtest runs, and one event of every other type, each with the
schema versions current then (MarketBook v1, Trade v1, ...). `expected.jsonl.gz` holds every record
as it was read back then.

Whatever the schemas become, each record must read back with the same topic, partition, offset,
key, type and values; a field a later version added must hold its schema default (a v1 event
knows nothing of it). The analyzer must load every record, and both recorded runs must audit
identical byte for byte. Never regenerate the fixture: a fixture written by newer code proves
nothing about older tapes.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from analyzer.arrow_schema import snake_case
from analyzer.audit import audit
from analyzer.load import connect, load
from ticktape.schemas import registry
from ticktape.tape import open_tape

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tape_v1"
RUNS = ("fav-v1", "lay-v1")


def plain(value: Any) -> Any:
    """An event (or any value in one) as JSON-able data: records as dicts, bytes as hex."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {name: plain(v) for name, v in zip(value._fields, value, strict=True)}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    return value


def read_all(uri: str) -> list[dict[str, Any]]:
    """Every record of the tape, topic by topic (sorted), partition and offset order."""
    tape = open_tape(uri)
    try:
        return [{"topic": r.topic, "partition": r.partition, "offset": r.offset, "key": r.key, "type": r.type,
                 "fields": plain(r.event)}
                for info in sorted(tape.topics(), key=lambda i: i.name)
                for p in info.partitions
                for r in tape.read(info.name, p.partition)]
    finally:
        tape.close()


def expected_records() -> list[dict[str, Any]]:
    with gzip.open(FIXTURE / "expected.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture()
def tape_uri(tmp_path: Path) -> str:
    """A copy of the fixture: reading may write caches and the audit writes nothing, but never risk it."""
    shutil.copytree(FIXTURE / "tape", tmp_path / "tape")
    return f"file:{tmp_path / 'tape'}"


def _named_types(node: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node, list):
        for n in node:
            _named_types(n, out)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum"):
            out[node["name"].rsplit(".", 1)[-1]] = node
            for field in node.get("fields", ()):
                _named_types(field["type"], out)
        elif node.get("type") == "array":
            _named_types(node["items"], out)
        elif node.get("type") == "map":
            _named_types(node["values"], out)
    return out


def compare(expected: Any, actual: Any, schema: Any, named: dict[str, Any], where: str) -> list[str]:
    """Where `actual` (today's reading) differs from `expected` (the day's), or adds a field whose
    value is not its default, following `schema` (today's) for the defaults."""
    if isinstance(schema, str) and schema.rsplit(".", 1)[-1] in named:
        schema = named[schema.rsplit(".", 1)[-1]]
    if isinstance(schema, list):  # a nullable union: the value's branch
        if expected is None:
            return [] if actual is None else [f"{where}: {actual!r} != None"]
        schema = next(b for b in schema if b != "null")
        if isinstance(schema, str) and schema.rsplit(".", 1)[-1] in named:
            schema = named[schema.rsplit(".", 1)[-1]]
    if isinstance(schema, dict) and schema.get("type") == "record":
        if not isinstance(actual, dict):
            return [f"{where}: not a record: {actual!r}"]
        problems = []
        for field in schema["fields"]:
            name, at = field["name"], f"{where}.{field['name']}"
            if name in expected:
                problems += compare(expected[name], actual.get(name), field["type"], named, at)
            elif "default" not in field:
                problems.append(f"{at}: added without a default")
            elif actual.get(name) != field["default"]:
                problems.append(f"{at}: added field is {actual.get(name)!r}, not its default {field['default']!r}")
        problems += [f"{where}.{name}: the field is gone" for name in expected if name not in actual]
        return problems
    if isinstance(schema, dict) and schema.get("type") == "array":
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: {actual!r} != {expected!r}"]
        return [p for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for p in compare(e, a, schema["items"], named, f"{where}[{i}]")]
    return [] if actual == expected else [f"{where}: {actual!r} != {expected!r}"]


def test_the_fixture_holds_every_event_type_it_was_written_with() -> None:
    types = {r["type"] for r in expected_records()}
    assert len(types) >= 29, sorted(types)  # every type of that day
    assert {"MarketBook", "MarketDefinition", "Trade", "Bar", "PlaceOrder", "RunStarted"} <= types


def test_every_record_reads_back_with_its_values(tape_uri: str) -> None:
    expected = expected_records()
    actual = read_all(tape_uri)
    assert [(r["topic"], r["partition"], r["offset"], r["key"], r["type"]) for r in actual] == \
        [(r["topic"], r["partition"], r["offset"], r["key"], r["type"]) for r in expected]
    problems = []
    for e, a in zip(expected, actual, strict=True):
        schema = registry().current[e["type"]].schema
        where = f"{e['topic']}/{e['partition']}@{e['offset']} {e['type']}"
        problems += compare(e["fields"], a["fields"], schema, _named_types(schema, {}), where)
    assert not problems, "\n".join(problems[:20])


def test_the_analyzer_loads_every_record(tape_uri: str, tmp_path: Path) -> None:
    con = connect(str(tmp_path / "a.duckdb"))
    load(tape_uri, con)
    per_type = Counter(r["type"] for r in expected_records())
    loaded = {name: con.execute(f"select count(*) from {snake_case(name)}").fetchall()[0][0] for name in per_type}
    assert loaded == dict(per_type)
    books, runners = con.execute("select count(*), sum(len(runners)) from market_book "
                                 "where market_id = '1.197931751'").fetchall()[0]
    assert books > 100 and runners > 0


@pytest.mark.parametrize("run_id", RUNS)
def test_the_recorded_runs_audit_identical(tape_uri: str, run_id: str) -> None:
    result = audit(tape_uri, run_id)
    assert result.recomputed > 0
    assert result.identical, result.line()


def dump(path: str) -> None:
    """Print expected.jsonl (gzipped into the fixture) for the tape at `path`; run once, when it was written."""
    for record in read_all(f"file:{path}"):
        print(json.dumps(record, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1:2] == ["dump"]:
        dump(sys.argv[2])
