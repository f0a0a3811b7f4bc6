"""The Python API takes a tape URI wherever it takes a tape, and a notebook backtest is written like
the CLI's (issue 16: README examples that run as written)."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from analyzer.api import Analyzer
from analyzer.audit import audit
from analyzer.replay import replay
from producers.frames import add_bars, add_data, load_bars
from robots.backtest import backtest, find_run, replay_steps
from ticktape.errors import TapeError
from ticktape.events import Trade
from ticktape.tape import open_tape, using_tape

TS0 = 1_700_000_000_000_000_000


def trades(n: int) -> list[Trade]:
    return [Trade("binance", "BTCUSDT", TS0 + i * 10**9, TS0 + i * 10**9, round(30_000 + 200 * math.sin(i / 30), 2),
                  0.01, "BUY", str(i)) for i in range(n)]


def test_using_tape_opens_a_uri_and_leaves_a_tape_open(tmp_path: Path) -> None:
    with using_tape(f"file:{tmp_path / 't'}") as t:
        t.append("md.x.trade", trades(3))
    with using_tape(tmp_path / "t") as again:  # a path works too
        assert again.partitions("md.x.trade") == 1
    with open_tape(f"file:{tmp_path / 't'}") as mine:
        with using_tape(mine) as same:
            assert same is mine
        assert mine.partitions("md.x.trade") == 1  # still open: its owner closes it
    with pytest.raises(TapeError, match="no tape at"), using_tape(f"file:{tmp_path / 'none'}", existing=True):
        pass


def test_a_notebook_backtest_is_written_to_its_tape_and_everything_takes_the_uri(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    with open_tape(uri) as tape:
        tape.append("md.binance.trade", trades(600))
    res = backtest("ema_cross", tape=uri, params={"fast": 10, "slow": 20}, run_id="nb1")
    assert res.summary["out"] == uri and res.summary["intents"] > 0
    started, finished = find_run(uri, "nb1")  # a URI, not an opened tape
    assert started.run_id == "nb1" and finished is not None
    assert sum(1 for s in replay_steps(uri, "nb1") if s.intents) > 0
    assert audit(uri, "nb1").identical
    con = duckdb.connect(str(tmp_path / "a.duckdb"))
    assert replay(uri, "nb1", con).intents == res.summary["intents"]
    a = Analyzer(str(tmp_path / "b.duckdb"))
    a.load(uri)
    assert a.runs()["run"].tolist() == ["nb1"]
    a.close()
    # opting out writes nothing
    backtest("ema_cross", tape=uri, params={"slow": 20}, run_id="nb2", out_tape=None)
    with pytest.raises(Exception, match="no run 'nb2'"):
        find_run(uri, "nb2")


def test_frames_take_the_uri(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    idx = pd.date_range("2024-01-01", periods=5, freq="1min", tz="UTC")
    df = pd.DataFrame({"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}, index=idx)
    add_bars(df, venue="binance", base="BTC", quote="USDT", interval="1m", tape=uri)
    assert len(load_bars("BTC", "USDT", "binance", tape=uri).bars) == 5
    add_data("tweets", pd.DataFrame({"text": ["a", "b"]}, index=idx[:2]), tape=uri)
    with open_tape(uri) as t:
        assert t.partitions("custom.tweets") == 1
