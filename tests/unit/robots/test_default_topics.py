"""A robot's default subscription fits the data on the tape (issue 16: README examples that run as written).

`ema_cross` reads `md.sim.trade` unless told otherwise; on a tape holding only `md.binance.trade`
it reads that one and says so, and with several trade topics it stops naming them and the flag.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from robots.api import RobotError
from robots.backtest import backtest
from robots.sources import TopicChoiceError, fit_topics
from robots.sweep import sweep
from ticktape.cli import _register_plugins, cli
from ticktape.events import Trade
from ticktape.tape import open_tape
from ticktape.topics import topic_kind

TS0 = 1_700_000_000_000_000_000


def wave(n: int, venue: str = "binance") -> list[Trade]:
    """Trades whose EMAs cross a few times."""
    return [Trade(venue, "BTCUSDT", TS0 + i * 1_000_000_000, TS0 + i * 1_000_000_000,
                  round(30_000 + 200 * math.sin(i / 30), 2), 0.01, "BUY", str(i)) for i in range(n)]


def tape_with(tmp_path: Path, *topics: str) -> str:
    uri = f"file:{tmp_path / 'tape'}"
    with open_tape(uri) as tape:
        for topic in topics:
            tape.append(topic, wave(400, topic.split(".")[1]))
    return uri


def test_topic_kind_stars_the_venue() -> None:
    assert topic_kind("md.binance.trade") == "md.*.trade"
    assert topic_kind("md.binance.book.l2") == "md.*.book.l2"
    assert topic_kind("orders.intent") is None


def test_the_only_topic_of_its_kind_is_read_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = tape_with(tmp_path, "md.binance.trade", "md.binance.quote")
    with caplog.at_level(logging.INFO, logger="robots.sources"):
        res = backtest("ema_cross", tape=uri, params={"slow": 20}, keep=False)
    assert res.summary["topics"] == ["md.binance.trade"] and res.summary["events"] == 400
    assert res.summary["intents"] > 0
    notes = [r.getMessage() for r in caplog.records if r.name == "robots.sources"]
    assert len(notes) == 1 and "'md.sim.trade'" in notes[0] and "'md.binance.trade'" in notes[0]


def test_several_topics_of_the_kind_stop_with_one_line_naming_them_and_the_flag(tmp_path: Path) -> None:
    uri = tape_with(tmp_path, "md.binance.trade", "md.okx.trade")
    with pytest.raises(TopicChoiceError) as err:
        backtest("ema_cross", tape=uri, keep=False)
    text = str(err.value)
    assert "\n" not in text and "md.binance.trade, md.okx.trade" in text and "topics=[...]" in text
    _register_plugins()
    out = CliRunner().invoke(cli, ["backtest", "ema_cross", "--tape", uri, "--no-out"])
    assert out.exit_code != 0 and "md.binance.trade, md.okx.trade" in out.output and "--topics TOPIC" in out.output
    # naming one works
    res = backtest("ema_cross", tape=uri, topics=["md.okx.trade"], params={"slow": 20}, keep=False)
    assert res.summary["topics"] == ["md.okx.trade"]


def test_named_topics_chosen_topics_and_present_defaults_are_never_replaced(tmp_path: Path) -> None:
    uri = tape_with(tmp_path, "md.sim.trade", "md.binance.trade")
    with open_tape(uri) as tape:
        assert fit_topics(tape, ["md.sim.trade"]) == ("md.sim.trade",)
        assert fit_topics(tape, ["md.none.bar"]) == ("md.none.bar",)  # no topic of the kind: left to fail as before
    with pytest.raises((ValueError, RobotError), match=r"'x\.y' does not exist"):
        backtest("ema_cross", tape=uri, topics=["x.y"], keep=False)
    # a topic the params chose is the user's choice: missing, it is an error, not a swap
    with pytest.raises((ValueError, RobotError), match=r"'md\.okx\.trade' does not exist"):
        backtest("ema_cross", tape=uri, params={"topic": "md.okx.trade"}, keep=False)


def test_a_sweep_fits_the_default_topic_too(tmp_path: Path) -> None:
    uri = tape_with(tmp_path, "md.binance.trade")
    rows = sweep("ema_cross", {"fast": ["5", "10"]}, fixed={"slow": 20}, tape=uri, out_tape=None)
    assert len(rows) == 2 and all(r["events"] == 400 for r in rows)
    _register_plugins()
    out = CliRunner().invoke(cli, ["sweep", "ema_cross", "--tape", uri, "--grid", "fast=5,10", "--param", "slow=20",
                                   "--no-out", "--json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)) == 2
