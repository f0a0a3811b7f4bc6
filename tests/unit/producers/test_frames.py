"""DataFrames, CSV and Parquet of bars and custom data: onto the tape and back, in time order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from producers.frames import add_bars, add_data, bars_to_frame, get_latest_bar, is_still_bars, load_bars
from tests.conftest import TapeFactory
from ticktape.cli import _register_plugins, cli
from ticktape.errors import ValidationError
from ticktape.events import Bar, CustomData
from ticktape.tape import open_tape

FIX = Path(__file__).parents[2] / "fixtures" / "frames"
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _bars(n: int, start: pd.Timestamp = T0) -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq="1min")
    o = 100.0 + np.arange(n)
    return pd.DataFrame({"Open": o, "High": o + 2, "Low": o - 1, "Close": o + 1, "Volume": 1.5 * np.arange(n)},
                        index=idx)


def test_bars_round_trip_in_time_order_and_twice_adds_nothing(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    venue = topic.replace(".", "")  # brokers are shared across tests: a venue (topic, bookmark) of its own
    feb, jan = _bars(5, T0 + pd.Timedelta(days=31)), _bars(5)
    assert add_bars(feb, venue=venue, base="btc", quote="usdt", interval="1m", tape=tape).total_events == 5
    assert add_bars(jan, venue=venue, base="BTC", quote="USDT", interval="1m", tape=tape).total_events == 5
    assert add_bars(jan, venue=venue, base="BTC", quote="USDT", interval="1m", tape=tape).skipped
    cursor = load_bars("BTC", "USDT", venue, tape=tape)
    seen = []
    while is_still_bars(cursor):
        seen.append(get_latest_bar(cursor))
    assert len(seen) == 10 and cursor.latest == seen[-1]
    assert [b.ts_event for b in seen] == sorted(b.ts_event for b in seen)  # Jan before Feb although appended after
    # The open-labelled row at 00:00 is the bar closing at 00:01.
    assert seen[0] == Bar(venue, "BTCUSDT", (T0 + pd.Timedelta(minutes=1)).value,
                          (T0 + pd.Timedelta(minutes=1)).value, "1m", 100.0, 102.0, 99.0, 101.0, 0.0)
    back = bars_to_frame(seen[:5])
    pd.testing.assert_frame_equal(back.set_axis(jan.index), jan.rename(columns=str.lower), check_freq=False)
    window = load_bars("BTC", "USDT", venue, start=T0 + pd.Timedelta(minutes=2), end="2024-01-01T00:04:00Z", tape=tape)
    assert [b.open for b in window] == [101.0, 102.0]
    with pytest.raises(IndexError):
        get_latest_bar(window)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda df: df.drop(columns=["Volume"]), "field 'volume': column 'volume' is missing"),
    (lambda df: df.assign(High=["x", *df["High"].tolist()[1:]]), "field 'high': column 'high': row 0"),
    (lambda df: df.assign(Close=[np.nan, *df["Close"].tolist()[1:]]), "column 'close': row 0"),
    (lambda df: df.set_axis([df.index[0], df.index[0], *df.index[2:]]), "row 1 .*duplicate timestamp 2024-01-01T00:01"),
    (lambda df: df.assign(Low=df["High"] + 1), "row 0 .*high 102.0 below low 103.0 \\(and 4 more rows\\)"),
    (lambda df: df.reset_index(drop=True), "no time: use a DatetimeIndex"),
])
def test_add_bars_rejects_bad_frames_naming_the_column_and_writes_nothing(tmp_path: Path, mutate, message) -> None:  # type: ignore[no-untyped-def]
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    with pytest.raises(ValidationError, match=message):
        add_bars(mutate(_bars(5)), venue="sim", base="BTC", quote="USDT", interval="1m", tape=tape)
    assert tape.partitions("md.sim.bar") == 0


def test_time_columns_integers_and_close_labels(tmp_path: Path) -> None:
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    ms = (T0.value // 10**6) + 60_000 * np.arange(3)
    df = pd.DataFrame({"close_time": ms, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 7.0})
    add_bars(df, venue="sim", instrument="X:1", interval="1mo", label="close", tape=tape)
    assert [b.ts_event for b in load_bars("", "", "sim", instrument="X:1", tape=tape)] == [int(v) * 10**6 for v in ms]
    with pytest.raises(ValidationError, match="interval '1mo' has no fixed length"):
        add_bars(df, venue="sim", instrument="X:1", interval="1mo", tape=tape)


def test_custom_data_round_trip(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    name = topic.replace(".", "_")
    df = pd.DataFrame({"time": pd.to_datetime(["2024-01-01T00:00:02Z", "2024-01-01T00:00:01Z"]),
                       "author": ["ann", "bob"], "text": ["moon", "doom"], "score": [0.75, -0.5]})
    s = add_data(name, df, tape=tape, key_column="author")
    assert s.events == {f"custom.{name}": 2}
    assert add_data(name, df, tape=tape, key_column="author").skipped
    events = sorted((r.event for p in range(tape.partitions(f"custom.{name}")) for r in tape.read(f"custom.{name}", p)),
                    key=lambda e: e.ts_event)
    assert [(e.key, json.loads(e.payload)) for e in events] == [
        ("bob", {"author": "bob", "text": "doom", "score": -0.5}),
        ("ann", {"author": "ann", "text": "moon", "score": 0.75})]
    assert all(isinstance(e, CustomData) and e.name == name for e in events)
    assert events[0].ts_event == pd.Timestamp("2024-01-01T00:00:01Z").value
    with pytest.raises(ValidationError, match="key column 'who' is missing"):
        add_data(name, df, tape=tape, key_column="who")


def test_cli_import_bars_csv_and_parquet(tmp_path: Path) -> None:
    _register_plugins()
    runner = CliRunner()
    tape_uri = f"file:{tmp_path / 'tape'}"
    args = ["--tape", tape_uri, "import", "bars", "--venue", "sim", "--instrument", "ETHUSDT", "--interval", "1m",
            "--json"]
    res = runner.invoke(cli, [*args, "--strict", str(FIX / "ETHUSDT-1m.csv")])
    assert res.exit_code == 1, res.output  # bad rows under --strict
    summary = json.loads(res.output.splitlines()[0])
    assert summary["events"] == 4 and summary["dead_letters"] == 3
    tape = open_tape(tape_uri)
    dls = [r.event for r in tape.read("dlq.bars")]
    assert [(d.position, d.error.split(" ")[0]) for d in dls] == [("line 5", "column"), ("line 6", "high"),
                                                                    ("line 7", "duplicate")]
    assert json.loads(dls[0].raw)["high"] == "oops"
    tape.close()
    again = runner.invoke(cli, [*args, str(FIX / "ETHUSDT-1m.csv")])
    assert again.exit_code == 0 and json.loads(again.output)["outcome"] == "skipped"
    pq = tmp_path / "more.parquet"
    _bars(3, T0 + pd.Timedelta(hours=1)).rename_axis("time").reset_index().to_parquet(pq)
    res = runner.invoke(cli, [*args, str(pq)])
    assert res.exit_code == 0 and json.loads(res.output)["events"] == 3
    tape = open_tape(tape_uri)
    bars = list(load_bars("ETH", "USDT", "sim", tape=tape))
    assert [b.close for b in bars] == [2282.0, 2282.1, 2282.8, 2283.75, 101.0, 102.0, 103.0]
    missing = runner.invoke(cli, [*args, "--force", "--time-column", "nope", str(pq)])
    assert missing.exit_code != 0 and "time column 'nope' is missing" in missing.output
