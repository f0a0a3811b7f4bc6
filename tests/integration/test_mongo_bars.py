"""Bars in MongoDB against a real server (FerretDB from scripts/mongo, or TICKTAPE_MONGO): the bar
API's mongo= backend, `ticktape import bars --from-mongo` and `ticktape mongo export-bars`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pymongo
import pytest
from click.testing import CliRunner, Result

from producers.frames import add_bars, load_bars
from robots.backtest import backtest
from ticktape.cli import _register_plugins, cli
from ticktape.errors import ValidationError
from ticktape.events import Bar, DeadLetter
from ticktape.mongo.bars import BadBarDocument, BarConflictError, BarStoreError, MongoBars, bar_from_document
from ticktape.mongo.client import open_database
from ticktape.tape import open_tape

REPO = Path(__file__).resolve().parents[2]
T0 = pd.Timestamp("2024-01-01", tz="UTC")
MIN = 60 * 10**9
PARAMS = {"fast": 2, "slow": 4, "size": 2}


def _frame(closes: list[float], start: pd.Timestamp = T0) -> pd.DataFrame:
    idx = pd.date_range(start, periods=len(closes), freq="1min")
    c = np.array(closes)
    return pd.DataFrame({"open": c, "high": c + 1, "low": c - 0.5, "close": c, "volume": 2 * c},
                        index=idx)


CLOSES = [10.0, 10.0, 10.0, 10.0, 13.0, 14.0, 9.0, 8.0, 8.5, 12.0, 15.0, 11.0, 7.0]


def _cli(*args: str) -> Result:
    _register_plugins()
    return CliRunner().invoke(cli, list(args))


def _docs(uri: str) -> list[dict[str, Any]]:
    db = open_database(uri)
    try:
        return list(db.bars.find({}, {"_id": 0}).sort([("venue", 1), ("instrument", 1), ("ts_event", 1)]))
    finally:
        db.client.close()


def test_dataframe_through_mongo_backtests_like_through_the_tape(tmp_path: Path, mongo_db_uri: str) -> None:
    df = _frame(CLOSES)
    direct = f"file:{tmp_path / 'direct'}"
    add_bars(df, venue="sim", instrument="BTCUSDT", interval="1m", tape=open_tape(direct))
    s = add_bars(df, venue="sim", instrument="BTCUSDT", interval="1m", mongo=mongo_db_uri)
    assert s.events == {"mongo:bars": len(CLOSES)} and not s.skipped

    via = f"file:{tmp_path / 'via-mongo'}"
    res = _cli("--tape", via, "import", "bars", "--from-mongo", mongo_db_uri, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["events_per_topic"] == {"md.sim.bar": len(CLOSES)} and summary["dead_letters"] == 0
    again = _cli("--tape", via, "import", "bars", "--from-mongo", mongo_db_uri, "--json")
    assert again.exit_code == 0 and json.loads(again.output)["outcome"] == "skipped"

    a = backtest("ema_cross", tape=direct, topics=["md.sim.bar"], params=PARAMS, venue="naive")
    b = backtest("ema_cross", tape=via, topics=["md.sim.bar"], params=PARAMS, venue="naive")
    assert a.summary["intents"] >= 2 and a.summary["fills"] >= 2
    pd.testing.assert_frame_equal(a.intents, b.intents)
    pd.testing.assert_frame_equal(a.fills, b.fills)
    assert a.summary["pnl_exact"] == b.summary["pnl_exact"]
    # ... and from the cursor of each backend, the same bars
    assert (load_bars("", "", "sim", instrument="BTCUSDT", mongo=mongo_db_uri).bars
            == load_bars("", "", "sim", instrument="BTCUSDT", tape=open_tape(via)).bars)


def test_add_bars_to_mongo_is_idempotent_and_refuses_other_values(mongo_db_uri: str) -> None:
    df = _frame(CLOSES[:6])
    db = open_database(mongo_db_uri)  # a Database works as well as a URI, and stays open
    try:
        assert add_bars(df, venue="sim", base="btc", quote="usdt", interval="1m", mongo=db).events == {"mongo:bars": 6}
        assert add_bars(df, venue="sim", base="BTC", quote="USDT", interval="1m", mongo=mongo_db_uri).skipped
        info = db.bars.index_information()["bar_key"]
        assert info["unique"] and [k for k, _ in info["key"]] == ["venue", "instrument", "interval", "ts_event"]
        # the same instrument on another venue, or another interval, is another bar
        assert add_bars(df, venue="other", base="BTC", quote="USDT", interval="1m", mongo=db).events["mongo:bars"] == 6
        add_bars(df.iloc[::5], venue="sim", base="BTC", quote="USDT", interval="5m", mongo=db)
        # an overlapping frame adds only its new bars
        overlap = _frame(CLOSES[4:9], T0 + pd.Timedelta(minutes=4))
        assert add_bars(overlap, venue="sim", base="BTC", quote="USDT", interval="1m", mongo=db).events == {
            "mongo:bars": 3}
        before = _docs(mongo_db_uri)

        changed = _frame(CLOSES[:8])
        changed.iloc[2, changed.columns.get_loc("close")] = 10.25
        with pytest.raises(BarConflictError, match=r"bar sim BTCUSDT 1m closing 2024-01-01T00:03:00.000000000Z "
                                                   r"\(\d+\) is stored with open=10.0, .*close=10.0.*not .*"
                                                   r"close=10.25.*nothing was written"):
            add_bars(changed, venue="sim", base="BTC", quote="USDT", interval="1m", mongo=db)
        assert _docs(mongo_db_uri) == before  # refused as a whole: the frame's new bars were not written either

        bad = _frame(CLOSES[:3]).assign(low=50.0)
        with pytest.raises(ValidationError, match=r"row 0 .*high 11.0 below low 50.0"):
            add_bars(bad, venue="sim", base="ETH", quote="USDT", interval="1m", mongo=db)
        assert db.bars.count_documents({"instrument": "ETHUSDT"}) == 0
        with pytest.raises(ValueError, match=r"exactly one of tape= .* or mongo=.*not neither"):
            add_bars(df, venue="sim", base="BTC", quote="USDT", interval="1m")
        with pytest.raises(ValueError, match="not both"):
            load_bars("BTC", "USDT", "sim", tape=open_tape("file:/nonexistent-never-opened"), mongo=db)

        cursor = load_bars("BTC", "USDT", "sim", interval="1m", start=T0 + pd.Timedelta(minutes=2),
                           end="2024-01-01T00:06:00Z", mongo=db)
        assert [b.close for b in cursor] == CLOSES[1:5]  # closes at :02 .. :05 (rows open at :01 .. :04)
        doc = db.bars.find_one({"venue": "sim", "interval": "1m", "ts_event": (T0 + pd.Timedelta(minutes=1)).value})
        assert doc is not None and {k: v for k, v in doc.items() if k != "_id"} == {
            "venue": "sim", "instrument": "BTCUSDT", "ts_event": T0.value + MIN, "ts_recv": T0.value + MIN,
            "interval": "1m", "open": 10.0, "high": 11.0, "low": 9.5, "close": 10.0, "volume": 20.0}
    finally:
        db.client.close()


def test_export_bars_then_load_from_mongo_equals_the_tape(tmp_path: Path, mongo_db_uri: str) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    add_bars(_frame(CLOSES[6:], T0 + pd.Timedelta(hours=1)), venue="sim", instrument="BTCUSDT", interval="1m",
             tape=tape)  # February-style: later bars appended first
    add_bars(_frame(CLOSES), venue="sim", instrument="BTCUSDT", interval="1m", tape=tape)
    add_bars(_frame(CLOSES[:5]), venue="sim", instrument="ETHUSDT", interval="1m", tape=tape)
    add_bars(_frame(CLOSES[:4]), venue="other", instrument="BTCUSDT", interval="1m", tape=tape)
    # a bar from elsewhere whose ts_recv is its capture time, not its close
    tape.append("md.sim.bar", [Bar(venue="sim", instrument="BTCUSDT", ts_event=T0.value + 2 * 3600 * 10**9,
                                   ts_recv=T0.value + 2 * 3600 * 10**9 + 123, interval="1h", open=1.0, high=2.0,
                                   low=0.5, close=1.5, volume=3.0)])
    tape.close()
    total = len(CLOSES[6:]) + len(CLOSES) + 5 + 4 + 1

    res = _cli("--tape", uri, "mongo", "export-bars", "--mongo", mongo_db_uri, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) | {"to": ""} == {"read": total, "written": total, "existing": 0, "conflicts": 0,
                                                   "to": "", "collection": "bars"}
    again = _cli("--tape", uri, "mongo", "export-bars", "--mongo", mongo_db_uri)
    assert again.exit_code == 0 and f"{total} already there" in again.output and " 0 written" in again.output

    tape = open_tape(uri)
    for venue, inst in (("sim", "BTCUSDT"), ("sim", "ETHUSDT"), ("other", "BTCUSDT")):
        for kw in ({}, {"interval": "1m", "start": T0 + pd.Timedelta(minutes=3), "end": "2024-01-01T01:05:00Z"}):
            from_tape = load_bars("", "", venue, instrument=inst, tape=tape, **kw)  # type: ignore[arg-type]
            from_mongo = load_bars("", "", venue, instrument=inst, mongo=mongo_db_uri, **kw)  # type: ignore[arg-type]
            assert from_mongo.bars == from_tape.bars and len(from_tape) > 0

    # a filtered export into another database selects the same bars load_bars does
    other_db = mongo_db_uri + "_f"
    try:
        res = _cli("--tape", uri, "mongo", "export-bars", "--mongo", other_db, "--venue", "sim", "--instrument",
                   "ETHUSDT", "--start", "2024-01-01T00:03:00Z", "--json")
        assert res.exit_code == 0 and json.loads(res.output)["written"] == 3
        assert load_bars("ETH", "USDT", "sim", mongo=other_db).bars == load_bars(
            "ETH", "USDT", "sim", start="2024-01-01T00:03:00Z", tape=tape).bars
    finally:
        pymongo.MongoClient(mongo_db_uri.rsplit("/", 1)[0]).drop_database(other_db.rsplit("/", 1)[1])

    # a tape bar that differs from the stored one: kept as stored, named, exit non-zero
    tape.append("md.sim.bar", [Bar(venue="sim", instrument="ETHUSDT", ts_event=T0.value + MIN, ts_recv=T0.value + MIN,
                                   interval="1m", open=10.0, high=11.0, low=9.5, close=9.75, volume=20.0)])
    tape.close()
    clash = _cli("--tape", uri, "mongo", "export-bars", "--mongo", mongo_db_uri, "--venue", "sim")
    assert clash.exit_code != 0
    assert "1 conflicting" in clash.output
    assert isinstance(clash.exception, BarConflictError)
    assert "bar sim ETHUSDT 1m closing 2024-01-01T00:01:00" in str(clash.exception)
    assert "close=10.0" in str(clash.exception) and "close=9.75" in str(clash.exception)


def test_import_from_mongo_dead_letters_bad_documents_by_id_and_field(tmp_path: Path, mongo_db_uri: str) -> None:
    add_bars(_frame(CLOSES[:5]), venue="sim", instrument="BTCUSDT", interval="1m", mongo=mongo_db_uri)
    db = open_database(mongo_db_uri)
    good = {"venue": "sim", "instrument": "XRP", "interval": "1m", "open": 1.0, "high": 2.0, "low": 0.5,
            "close": 1.5, "volume": 1}  # an integer volume is a number too; ts_recv may be left out
    bad = {
        "missing_close": {**good, "ts_event": 1 * MIN, "close": None},
        "text_high": {**good, "ts_event": 2 * MIN, "high": "2.0"},
        "high_below_low": {**good, "ts_event": 3 * MIN, "high": 0.25},
        "float_ts": {**good, "ts_event": 4.0 * MIN},
        "no_instrument": {k: v for k, v in {**good, "ts_event": 5 * MIN}.items() if k != "instrument"},
    }
    try:
        db.bars.insert_many([{"_id": name, **doc} for name, doc in bad.items()])
        db.bars.insert_one({"_id": "fine", **good, "ts_event": 7 * MIN})
    finally:
        db.client.close()
    uri = f"file:{tmp_path / 'tape'}"
    res = _cli("--tape", uri, "import", "bars", "--from-mongo", mongo_db_uri, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["events_per_topic"] == {"md.sim.bar": 6} and summary["dead_letters"] == len(bad)
    tape = open_tape(uri)
    dls = [r.event for r in tape.read("dlq.bars")]
    assert all(isinstance(d, DeadLetter) for d in dls)
    why = {d.position: d.error for d in dls if isinstance(d, DeadLetter)}
    assert why.keys() == {f"_id {name}" for name in bad}
    expected_field = {"missing_close": "close", "text_high": "high", "high_below_low": "high", "float_ts": "ts_event",
                      "no_instrument": "instrument"}
    for name, fld in expected_field.items():
        assert f"_id {name}, field '{fld}'" in why[f"_id {name}"]
    assert "high 0.25 below low 0.5" in why["_id high_below_low"]
    raw = next(d.raw for d in dls if isinstance(d, DeadLetter) and d.position == "_id text_high")
    assert json.loads(raw)["high"] == "2.0" and json.loads(raw)["_id"] == "text_high"
    bars = load_bars("", "", "sim", instrument="XRP", tape=tape).bars
    assert [(b.ts_event, b.ts_recv, b.volume) for b in bars] == [(7 * MIN, 7 * MIN, 1.0)]
    tape.close()
    # text output counts them too; strict exits 1; the same selection again is skipped
    again = _cli("--tape", uri, "import", "bars", "--from-mongo", mongo_db_uri, "--force", "--strict",
                 "--instrument", "XRP")
    assert again.exit_code == 1 and "1 events (md.sim.bar=1), 4 dead letters"  # all but no_instrument in again.output
    assert "skipped, already imported" in _cli("--tape", uri, "import", "bars", "--from-mongo", mongo_db_uri).output
    # the API reads strictly: a bad document raises, naming it
    with pytest.raises(BadBarDocument, match="_id missing_close, field 'close': close is missing"):
        load_bars("", "", "sim", instrument="XRP", mongo=mongo_db_uri)
    with pytest.raises(BadBarDocument, match="field 'ts_event'"):
        bar_from_document({"_id": 1, **good, "ts_event": True})  # a bool is no time
    with pytest.raises(BadBarDocument, match="_id 2, field 'open': open is nan"):  # FerretDB stores no NaN
        bar_from_document({"_id": 2, **good, "ts_event": 1, "open": float("nan")})
    usage = _cli("--tape", uri, "import", "bars", "--from-mongo", mongo_db_uri, "--label", "close",
                 str(Path(__file__)))
    assert usage.exit_code == 2 and "give FILES or --from-mongo" in usage.output


def test_import_resumes_in_batches_and_sees_new_documents(tmp_path: Path, mongo_db_uri: str) -> None:
    add_bars(_frame(CLOSES), venue="sim", instrument="BTCUSDT", interval="1m", mongo=mongo_db_uri)
    from producers.frames_cli import import_from_mongo

    tape = open_tape(f"file:{tmp_path / 'tape'}")
    s = import_from_mongo(tape, mongo_db_uri, batch=4)  # a cursor fetching 4 documents at a time
    assert s.events == {"md.sim.bar": len(CLOSES)}
    assert import_from_mongo(tape, mongo_db_uri, batch=4).skipped
    add_bars(_frame([20.0], T0 + pd.Timedelta(hours=3)), venue="sim", instrument="BTCUSDT", interval="1m",
             mongo=mongo_db_uri)
    # the collection changed: a new input (the selection's content is its identity); a start bound
    # that selects only the new bar imports it alone
    s2 = import_from_mongo(tape, mongo_db_uri, start=(T0 + pd.Timedelta(hours=2)).value)
    assert s2.events == {"md.sim.bar": 1}
    assert len(load_bars("BTC", "USDT", "sim", tape=tape)) == len(CLOSES) + 1
    tape.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_is_down_is_named_without_its_password(tmp_path: Path) -> None:
    uri = f"mongodb://ann:s3cret@127.0.0.1:{_closed_port()}/bars?serverSelectionTimeoutMS=400"
    t = time.monotonic()
    with pytest.raises(BarStoreError) as err:
        add_bars(_frame(CLOSES[:3]), venue="sim", instrument="BTCUSDT", interval="1m", mongo=uri)
    assert time.monotonic() - t < 10
    text = str(err.value)
    assert "s3cret" not in text and f"mongodb://ann:***@127.0.0.1:{uri.split(':')[3].split('/')[0]}/bars" in text
    assert "unreachable" in text
    with pytest.raises(BarStoreError, match=r"ann:\*\*\*@"):
        load_bars("BTC", "USDT", "sim", mongo=uri)
    with MongoBars(uri) as store, pytest.raises(BarStoreError):
        store.write([])  # even an empty write creates the index: the server is asked
    # the real CLI: one error line naming the server, non-zero, no traceback, no hang
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in (["import", "bars", "--from-mongo", uri], ["mongo", "export-bars", "--mongo", uri]):
        done = subprocess.run([sys.executable, "-m", "ticktape", "--tape", f"file:{tmp_path / 'tape'}", *args],
                              capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: MongoDB mongodb://ann:***@127.0.0.1:") and "s3cret" not in done.stderr
        assert "Traceback" not in done.stderr
