"""The CLI through real subprocesses, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_trades
from ticktape.codec import to_python


def run(tmp_path: Path, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TICKTAPE_TAPE": f"file:{tmp_path / 'tape'}", "TICKTAPE_LOG_FORMAT": "text"}
    proc = subprocess.run([sys.executable, "-m", "ticktape", *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"ticktape {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def jsonl(events: list) -> str:  # type: ignore[type-arg]
    return "".join(json.dumps(to_python(e)) + "\n" for e in events)


@pytest.mark.slow
def test_put_then_cat_round_trips_100k_events_exactly(tmp_path: Path) -> None:
    events = make_trades(100_000)
    run(tmp_path, "put", "md.binance.trade", "--type", "Trade", stdin=jsonl(events))
    out = run(tmp_path, "cat", "md.binance.trade").stdout.splitlines()
    assert len(out) == 100_000
    for i in (0, 1, 54_321, 99_999):
        line = json.loads(out[i])
        assert line.pop("offset") == i and line.pop("partition") == 0 and line.pop("type") == "Trade"
        assert line.pop("topic") == "md.binance.trade" and line.pop("key") == "BTCUSDT"
        assert line == to_python(events[i])
    assert [json.loads(line)["trade_id"] for line in out] == [str(i) for i in range(100_000)]


def test_bad_line_names_line_and_field_and_writes_nothing(tmp_path: Path) -> None:
    lines = jsonl(make_trades(5)).splitlines()
    bad = json.loads(lines[3])
    bad["price"] = "a lot"
    lines[3] = json.dumps(bad)
    proc = run(tmp_path, "put", "md.trade", "--type", "Trade", stdin="\n".join(lines) + "\n", check=False)
    assert proc.returncode == 2
    assert "line 4, field 'price': expected a number" in proc.stderr
    assert run(tmp_path, "topics", "--json").stdout == ""  # nothing of the batch was written


def test_invalid_json_and_unknown_type(tmp_path: Path) -> None:
    proc = run(tmp_path, "put", "x", "--type", "Trade", stdin="{nope\n", check=False)
    assert proc.returncode == 2 and "line 1: invalid JSON" in proc.stderr
    proc = run(tmp_path, "put", "x", "--type", "Tarde", stdin="{}\n", check=False)
    assert proc.returncode == 2 and "unknown event type 'Tarde'" in proc.stderr


def test_cat_from_time_offset_limit_and_topics(tmp_path: Path) -> None:
    events = make_trades(10, step=1_000_000_000)
    run(tmp_path, "put", "md.trade", "--type", "Trade", stdin=jsonl(events))
    out = run(tmp_path, "cat", "md.trade", "--from-time", "2023-11-14T22:13:25Z").stdout.splitlines()
    assert [json.loads(x)["offset"] for x in out] == [5, 6, 7, 8, 9]
    out = run(tmp_path, "cat", "md.trade", "--from-offset", "3", "--limit", "2").stdout.splitlines()
    assert [json.loads(x)["offset"] for x in out] == [3, 4]
    info = json.loads(run(tmp_path, "topics", "--json").stdout)
    assert info == {"topic": "md.trade", "partitions": 1, "events": 10, "first_ts_event": events[0].ts_event,
                    "last_ts_event": events[-1].ts_event}
    table = run(tmp_path, "topics").stdout
    assert "md.trade" in table and "2023-11-14T22:13:20.000000000Z" in table


def test_put_with_key_field_partitions_by_it(tmp_path: Path) -> None:
    events = [e._replace(trade_id=f"k{i % 3}") for i, e in enumerate(make_trades(30))]
    env_tape = f"file:{tmp_path / 'tape'}?partitions=4"
    run(tmp_path, "--tape", env_tape, "put", "md.trade", "--type", "Trade", "--key", "trade_id", stdin=jsonl(events))
    out = [json.loads(x) for x in run(tmp_path, "--tape", env_tape, "cat", "md.trade").stdout.splitlines()]
    assert len(out) == 30
    by_key: dict[str, set[int]] = {}
    for x in out:
        by_key.setdefault(x["key"], set()).add(x["partition"])
    assert set(by_key) == {"k0", "k1", "k2"} and all(len(p) == 1 for p in by_key.values())
    assert [x["ts_event"] for x in out] == sorted(x["ts_event"] for x in out)  # merged by time


def test_schemas_check_and_list(tmp_path: Path) -> None:
    proc = run(tmp_path, "schemas", "check")
    assert proc.stdout.startswith("ok: ")
    listing = run(tmp_path, "schemas", "list").stdout
    assert "Trade" in listing and "(current)" in listing


def test_schemas_check_fails_on_incompatible_version(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    repo = Path(__file__).resolve().parents[2] / "schemas"
    for p in repo.glob("*.avsc"):
        (schemas / p.name).write_text(p.read_text())
    trade = json.loads((schemas / "Trade.v1.avsc").read_text())
    trade["fields"].append({"name": "venue_seq", "type": "long"})
    (schemas / "Trade.v2.avsc").write_text(json.dumps(trade))
    env = {**os.environ, "TICKTAPE_SCHEMAS": str(schemas)}
    proc = subprocess.run([sys.executable, "-m", "ticktape", "schemas", "check"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "Trade.v2.avsc reading Trade.v1.avsc: new field 'venue_seq' has no default" in proc.stderr
