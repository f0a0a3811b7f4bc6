"""`ticktape sweep` and `robots.sweep`: grid parsing, ordering, sorted results equal to single runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from robots.api import RobotError
from robots.backtest import backtest
from robots.sweep import grid_points, parse_grid, sort_rows
from ticktape.cli import _register_plugins, cli
from ticktape.demo import synthetic_trades
from ticktape.tape import open_tape

_register_plugins()
TOPIC = "md.sim.trade"


@pytest.fixture
def tape_uri(tmp_path: Path) -> str:
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    tape.append(TOPIC, synthetic_trades(4_000))
    tape.close()
    return uri


def test_parse_grid_and_points_in_a_fixed_order() -> None:
    grid = parse_grid(["fast=3,5", "slow=20, 30 ,40"])
    assert grid == {"fast": ["3", "5"], "slow": ["20", "30", "40"]}
    points = grid_points(grid)
    assert len(points) == 6 and points[0] == {"fast": "3", "slow": "20"} and points[-1] == {"fast": "5", "slow": "40"}
    with pytest.raises(RobotError, match="k=v1,v2"):
        parse_grid(["fast"])


def test_sort_rows_by_field_then_params() -> None:
    rows = [{"params": {"a": 2}, "pnl": 1.0}, {"params": {"a": 1}, "pnl": 1.0}, {"params": {"a": 3}, "pnl": 5.0},
            {"params": {"a": 4}, "pnl": None}]
    assert [r["params"]["a"] for r in sort_rows(rows, "pnl")] == [3, 1, 2, 4]
    assert [r["params"]["a"] for r in sort_rows(rows, "pnl", descending=False)] == [1, 2, 3, 4]
    assert [r["params"]["a"] for r in sort_rows(rows, "a", descending=False)] == [1, 2, 3, 4]
    with pytest.raises(RobotError, match="cannot sort by 'x'"):
        sort_rows(rows, "x")


def test_cli_sweep_table_json_and_save(tape_uri: str, tmp_path: Path) -> None:
    save = tmp_path / "sweep.json"
    runner = CliRunner()
    res = runner.invoke(cli, ["sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=3,5", "--grid", "slow=20,30",
                              "--workers", "1", "--save", str(save), "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].split()[:3] == ["fast", "slow", "pnl"] and len(lines) == 5
    rows = json.loads(save.read_text())
    pnls = [r["pnl"] for r in rows]
    assert pnls == sorted(pnls, reverse=True) and len(rows) == 4
    # each row is what a single backtest of that grid point gives
    for row in rows:
        alone = backtest("ema_cross", tape=tape_uri, params=row["params"], keep=False).summary
        assert (row["intents_sha256"], row["pnl_exact"], row["fills"]) == (
            alone["intents_sha256"], alone["pnl_exact"], alone["fills"])
    as_json = runner.invoke(cli, ["sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=3,5", "--grid",
                                  "slow=20,30", "--json", "--sort", "fills", "--ascending", "--no-progress"])
    fills = [r["fills"] for r in json.loads(as_json.output)]
    assert fills == sorted(fills)


def test_cli_sweep_reports_bad_grid_values(tape_uri: str) -> None:
    res = CliRunner().invoke(cli, ["sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=x", "--no-progress"])
    assert res.exit_code != 0 and "param 'fast': expected int, got 'x'" in res.output
