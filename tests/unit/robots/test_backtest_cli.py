"""`ticktape backtest` and the Python API: summary, output tape, time bounds, sources, errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robots.backtest import EVENT_TOPIC, INTENT_TOPIC, RUNS_TOPIC, backtest, timed_segments
from ticktape.cli import _register_plugins, cli
from ticktape.demo import synthetic_trades
from ticktape.events import RunFinished, RunStarted, Trade
from ticktape.tape import open_tape

_register_plugins()  # what `main()` does: attaches backtest/sweep (and the other packages' commands)

TOPIC = "md.sim.trade"
N = 3_000  # 100 ms apart: 300 s of trades


@pytest.fixture
def tape_uri(tmp_path: Path) -> str:
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    tape.append(TOPIC, synthetic_trades(N))
    tape.close()
    return uri


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, ["--log-level", "error", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_json_summary_has_every_field(tape_uri: str) -> None:
    out = json.loads(invoke("backtest", "ema_cross", "--tape", tape_uri, "--param", "fast=5", "--param", "slow=20",
                            "--no-out", "--json", "--no-progress"))
    for key in ("events", "intents", "fills", "pnl", "pnl_exact", "fees", "fees_exact", "max_drawdown",
                "wall_time_s", "events_per_s", "intents_sha256", "run_id"):
        assert key in out, key
    assert out["events"] == N and out["intents"] > 0 and len(out["intents_sha256"]) == 64
    assert out["params"]["fast"] == 5 and out["topics"] == [TOPIC]


def test_timed_segments_pass_every_event_and_time_each_run_of_inputs() -> None:
    for n, size in ((0, 4), (1, 4), (8, 4), (9, 4), (10, 1)):
        marks: list[tuple[float, float]] = []
        seen: list[object] = list(timed_segments(iter(range(n)), size, marks))  # type: ignore[arg-type]
        assert seen == list(range(n))
        assert len(marks) == -(-n // size)  # one reading per run of `size`, the last run may be short
        assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(marks))


def test_json_summary_reports_seconds_per_segment_of_inputs(tape_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("robots.backtest.SEGMENT_EVENTS", 1_000)  # N = 3,000 inputs: three segments
    out = json.loads(invoke("backtest", "ema_cross", "--tape", tape_uri, "--param", "slow=20", "--no-out", "--json",
                            "--no-progress"))
    assert len(out["segments_s"]) == len(out["segments_cpu_s"]) == 3
    assert all(s >= 0 for s in out["segments_s"] + out["segments_cpu_s"])
    assert sum(out["segments_s"]) <= out["wall_time_s"] + 0.01


def test_human_summary_and_output_tape(tape_uri: str, tmp_path: Path) -> None:
    out_uri = f"file:{tmp_path / 'out'}"
    text = invoke("backtest", "ema_cross", "--tape", tape_uri, "--param", "slow=20", "--out", out_uri,
                  "--run-id", "r-1", "--no-progress")
    assert "events processed  3,000" in text and "intents_sha256" in text and "r-1" in text
    tape = open_tape(out_uri)
    runs = [r.event for r in tape.read(RUNS_TOPIC)]
    assert [type(e) for e in runs] == [RunStarted, RunFinished]
    started, finished = runs
    assert isinstance(started, RunStarted) and isinstance(finished, RunFinished)
    assert started.run_id == finished.run_id == "r-1" and started.source == tape_uri
    assert json.loads(started.params)["slow"] == 20 and json.loads(started.end_offsets) == {TOPIC: {"0": N}}
    intents = list(tape.read(INTENT_TOPIC))
    answers = list(tape.read(EVENT_TOPIC))
    summary = json.loads(finished.summary)
    assert len(intents) == finished.intents == summary["intents"] > 0
    assert len(answers) == summary["order_events"]
    assert {r.key for r in intents + answers} == {"r-1"}
    assert sum(1 for r in answers if type(r.event).__name__ == "OrderFilled") == summary["fills"]
    tape.close()


def test_default_output_is_the_input_tape(tape_uri: str) -> None:
    invoke("backtest", "ema_cross", "--tape", tape_uri, "--param", "slow=20", "--no-progress")
    tape = open_tape(tape_uri)
    assert {INTENT_TOPIC, EVENT_TOPIC, RUNS_TOPIC} <= {t.name for t in tape.topics()}
    tape.close()


def test_from_to_bound_the_inputs(tape_uri: str) -> None:
    first = synthetic_trades(1)[0].ts_event
    out = json.loads(invoke("backtest", "ema_cross", "--tape", tape_uri, "--from", "2023-11-14T22:13:30Z",
                            "--to", "2023-11-14T22:14:00Z", "--no-out", "--json", "--no-progress"))
    # trades every 100 ms from 22:13:20: [22:13:30, 22:14:00) holds 300 of them
    assert first == 1_700_000_000_000_000_000 and out["events"] == 300
    assert out["first_event"] == "2023-11-14T22:13:30.000000000Z"
    assert out["last_event"] == "2023-11-14T22:13:59.900000000Z"
    after = json.loads(invoke("backtest", "ema_cross", "--tape", tape_uri, "--from", "2030-01-01", "--no-out",
                              "--json", "--no-progress"))
    assert after["events"] == 0 and after["intents"] == 0 and after["first_event"] is None
    assert after["last_event"] is None and after["pnl_exact"] == "0"


def test_controls_reject_and_name_the_control(tape_uri: str) -> None:
    out = json.loads(invoke("backtest", "ema_cross", "--tape", tape_uri, "--param", "slow=20", "--control",
                            "max_order_size=0.5", "--no-out", "--json", "--no-progress"))
    assert out["intents"] > 0 and out["rejected_by_controls"] == out["intents"] and out["fills"] == 0
    res = backtest("ema_cross", tape=tape_uri, params={"slow": 20}, controls={"max_order_size": 0.5})
    assert set(res.events["control"]) == {"max_order_size"}


def test_errors_are_clean_messages(tape_uri: str) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["backtest", "ema_cross", "--tape", tape_uri, "--param", "fats=3", "--no-out"])
    assert bad.exit_code != 0 and "unknown param 'fats'" in bad.output
    missing = runner.invoke(cli, ["backtest", "nope", "--tape", tape_uri, "--no-out"])
    assert missing.exit_code != 0 and "unknown robot 'nope'" in missing.output
    no_topic = runner.invoke(cli, ["backtest", "ema_cross", "--tape", tape_uri, "--topics", "x.y", "--no-out"])
    assert no_topic.exit_code != 0 and "topic 'x.y' does not exist" in no_topic.output


def test_module_class_robot(tape_uri: str) -> None:
    out = json.loads(invoke("backtest", "robots.builtin.ema_cross:EmaCross", "--tape", tape_uri, "--param",
                            "slow=20", "--no-out", "--json", "--no-progress"))
    ref = json.loads(invoke("backtest", "ema_cross", "--tape", tape_uri, "--param", "slow=20", "--no-out", "--json",
                            "--no-progress"))
    assert out["intents_sha256"] == ref["intents_sha256"] and out["robot"] == "robots.builtin.ema_cross:EmaCross"


def test_python_api_on_a_dataframe_gives_the_tape_result(tape_uri: str) -> None:
    trades = synthetic_trades(N)
    df = pd.DataFrame({"timestamp": pd.to_datetime([t.ts_event for t in trades], unit="ns"),
                       "price": [t.price for t in trades], "size": [t.size for t in trades],
                       "aggressor_side": [t.aggressor_side for t in trades],
                       "trade_id": [t.trade_id for t in trades]})
    res = backtest("ema_cross", frame=df, params={"slow": 20})
    assert res.summary["events"] == N
    # the same trades from the tape (venue 'sim', instrument BTCUSDT) differ only in those names
    via_tape = backtest("ema_cross", tape=tape_uri, params={"slow": 20})
    assert res.summary["intents"] == via_tape.summary["intents"]
    assert res.summary["pnl_exact"] == via_tape.summary["pnl_exact"]
    assert list(res.intents["type"].unique()) == ["PlaceOrder"]
    assert len(res.fills) == res.summary["fills"] and {"price", "size", "fee", "time"} <= set(res.fills.columns)
    assert len(res.positions) == 1 and res.positions.loc[0, "fills"] == res.summary["fills"]


def test_bar_frames_and_bar_cursors(tmp_path: Path) -> None:
    closes = [10.0, 10.0, 10.0, 10.0, 13.0, 14.0, 9.0, 8.0]
    idx = pd.date_range("2024-01-01", periods=len(closes), freq="1min")
    df = pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes, "volume": 1.0}, index=idx)
    res = backtest("ema_cross", frame=df, params={"fast": 2, "slow": 4, "size": 2}, venue="naive")
    assert res.summary["intents"] == 2 and res.summary["pnl_exact"] == "-8"  # buy at 13, sell at 9 (x2)
    from producers.frames import add_bars, load_bars

    tape = open_tape(f"file:{tmp_path / 'bars'}")
    add_bars(df, venue="sim", instrument="BTCUSDT", interval="1m", tape=tape)
    cursor = load_bars("BTC", "USDT", "sim", tape=tape)
    res2 = backtest("ema_cross", events=cursor, params={"fast": 2, "slow": 4, "size": 2}, venue="naive")
    assert res2.summary["pnl_exact"] == "-8"
    tape.close()


def test_frame_kind_errors() -> None:
    with pytest.raises(ValueError, match="cannot tell the DataFrame's kind"):
        backtest("ema_cross", frame=pd.DataFrame({"ts_event": [1], "x": [1.0]}))
    assert Trade._fields[4] == "price"


def test_demo_on_the_generated_betfair_sample(tmp_path: Path) -> None:
    empty = tmp_path / "no-betfair-files"
    empty.mkdir()
    out = tmp_path / "demo"
    text = invoke("demo", "--out", str(out), "--events", "5000", "--betfair-data", str(empty))
    assert "imported 5,000 synthetic BTCUSDT trades" in text
    assert "generated sample of 2 Betfair markets" in text
    assert "intents identical" in text and f"tape file:{out / 'tape'}" in text
    tape = open_tape(f"file:{out / 'tape'}")
    runs = [r.event for r in tape.read(RUNS_TOPIC)]
    assert [type(e).__name__ for e in runs] == ["RunStarted", "RunFinished"] * 2
    assert {e.robot for e in runs if isinstance(e, RunStarted)} == {"ema_cross", "betfair_back_favourite"}
    bf = json.loads(next(e.summary for e in runs if isinstance(e, RunFinished) and "betfair" in e.run_id))
    # the favourite is backed once per market for 2.00; one loses (-2), one wins at 1.94 (+1.88, 5%
    # commission on the market's net profit: 0.094 -> 0.09)
    assert bf["intents"] == 2 and bf["fills"] == 2 and bf["markets_settled"] == 2
    assert bf["pnl_exact"] == "-0.21" and bf["fees_exact"] == "0.09"
    tape.close()
    # running it again rebuilds the demo's own tape; a foreign directory is refused
    invoke("demo", "--out", str(out), "--events", "5000", "--betfair-data", str(empty))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    res = CliRunner().invoke(cli, ["demo", "--out", str(foreign), "--events", "100"])
    assert res.exit_code != 0 and "was not made by `ticktape demo`" in res.output


def test_params_file_and_param_override(tape_uri: str, tmp_path: Path) -> None:
    f = tmp_path / "ema.toml"
    f.write_text("[params]\nfast = 5\nslow = 20\nsize = 0.5\n")
    out = json.loads(invoke("backtest", "ema_cross", "--tape", tape_uri, "--params", str(f), "--param", "slow=30",
                            "--no-out", "--json", "--no-progress"))
    assert out["params"]["fast"] == 5 and out["params"]["slow"] == 30 and out["params"]["size"] == 0.5


def test_impure_module_robot_needs_allow_impure(tape_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clocky.py").write_text(
        "import time\nfrom robots.builtin.ema_cross import EmaCross\n\n\nclass Clocky(EmaCross):\n"
        "    name = 'clocky'\n\n    def stamp(self) -> float:\n        return time.time()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    refused = CliRunner().invoke(cli, ["backtest", "clocky:Clocky", "--tape", tape_uri, "--no-out"])
    assert refused.exit_code != 0 and "clocky.py:1: imports time" in refused.output
    ok = json.loads(invoke("backtest", "clocky:Clocky", "--tape", tape_uri, "--param", "slow=20", "--allow-impure",
                           "--no-out", "--json", "--no-progress"))
    assert ok["events"] == N and ok["intents"] > 0


def test_controls_without_price_limits_skip_market_data() -> None:
    from robots.backtest import _build_controls
    from robots.controls import controls_from_config

    quiet = _build_controls(controls_from_config, {"max_position": 2, "kill_switch": True})
    assert getattr(quiet, "needs_market_data", True) is False
    priced = _build_controls(controls_from_config, {"max_position": 2, "price_band_pct": 5.0})
    assert getattr(priced, "needs_market_data", True) is True
