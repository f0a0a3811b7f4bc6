"""`ticktape replay --param k=v` overrides the recorded run's params (issue 16)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
from click.testing import CliRunner

from robots.backtest import backtest
from ticktape.cli import _register_plugins, cli
from ticktape.events import Trade
from ticktape.tape import open_tape

TS0 = 1_700_000_000_000_000_000


def test_replay_param_overrides_the_runs_params(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    with open_tape(uri) as tape:
        tape.append("md.sim.trade", [Trade("sim", "BTCUSDT", TS0 + i * 10**9, TS0 + i * 10**9,
                                           round(30_000 + 200 * math.sin(i / 30), 2), 0.01, "BUY", str(i))
                                     for i in range(600)])
    backtest("ema_cross", tape=uri, out_tape=uri, run_id="r1", params={"fast": 10, "slow": 50}, keep=False)
    _register_plugins()
    runner = CliRunner()
    db = str(tmp_path / "a.duckdb")
    same = runner.invoke(cli, ["replay", "--tape", uri, "--run", "r1", "--db", db])
    assert same.exit_code == 0, same.output
    other = runner.invoke(cli, ["replay", "robots.builtin.ema_cross:EmaCross", "--tape", uri, "--run", "r1",
                                "--db", db, "--param", "slow=20", "--param", "size=2"])
    assert other.exit_code == 0, other.output
    with duckdb.connect(db, read_only=True) as con:
        (state,) = con.execute("SELECT state FROM robot_state WHERE run = 'r1' ORDER BY input_offset DESC "
                               "LIMIT 1").fetchone() or (None,)
        sizes = {r[0] for r in con.execute("SELECT size FROM replay_intents WHERE run = 'r1' AND side = 'BUY'")
                 .fetchall()}
    assert json.loads(state)["seen"] == 600
    assert sizes == {2.0}  # the override reached the robot (the run bought 1.0)
    bad = runner.invoke(cli, ["replay", "--tape", uri, "--run", "r1", "--db", db, "--param", "nope=1"])
    assert bad.exit_code != 0 and "unknown param 'nope'" in str(bad.exception or bad.output)
