"""`ticktape sweep` and `robots.sweep` (local engine): grid, search, ordering, results equal to single runs,
every run on the tape under its sweep id, resume. The Ray engine: tests/integration/test_sweep_ray.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from robots.api import RobotError
from robots.backtest import INTENT_TOPIC, RUNS_TOPIC, backtest, find_run, runner_for_run
from robots.sweep import (
    SweepError,
    SweepTask,
    grid_point,
    grid_points,
    parse_grid,
    parse_search,
    plan_points,
    run_point,
    sort_rows,
    sweep,
)
from ticktape.cli import _register_plugins, cli
from ticktape.demo import synthetic_trades
from ticktape.events import RunFinished, RunStarted
from ticktape.tape import open_tape

REPO = Path(__file__).resolve().parents[3]

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
    assert lines[0].split()[:3] == ["fast", "slow", "pnl"] and len(lines) == 6
    assert lines[-1].startswith("sweep ema_cross-") and f"4 runs, written to {tape_uri}" in lines[-1]
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


# --------------------------------------------------------------------------- runs on the tape, resume, search

KEY = ("params", "intents_sha256", "pnl_exact", "fees", "max_drawdown", "fills", "intents", "events")


def _key(rows: list[dict[str, object]]) -> list[list[object]]:
    return sorted([[json.dumps(r[k], sort_keys=True) for k in KEY] for r in rows])


def _runs(uri: str, sweep_id: str) -> tuple[list[RunStarted], list[RunFinished], dict[str, list[object]]]:
    """RunStarted and RunFinished of a sweep, and each of its runs' intents (by run id), read back from the tape."""
    tape = open_tape(uri)
    try:
        runs = [r.event for r in tape.read(RUNS_TOPIC)]
        started = [e for e in runs if type(e) is RunStarted and e.sweep_id == sweep_id]
        ids = {e.run_id for e in started}
        finished = [e for e in runs if type(e) is RunFinished and e.run_id in ids]
        intents: dict[str, list[object]] = {i: [] for i in ids}
        for rec in tape.read(INTENT_TOPIC):
            if rec.key in ids:
                intents[rec.key].append(rec.event)
    finally:
        tape.close()
    return started, finished, intents


def test_every_sweep_run_is_on_the_tape_and_replays_to_its_hash(tape_uri: str) -> None:
    grid = {"fast": ["3", "5"], "slow": ["20", "30"]}
    rows = sweep("ema_cross", grid, tape=tape_uri, out_tape=tape_uri, sweep_id="s1", workers=2)
    started, finished, intents = _runs(tape_uri, "s1")
    assert len(started) == len(finished) == len(rows) == 4
    by_run = {r["run_id"]: r for r in rows}
    assert {e.run_id for e in started} == set(by_run) and all(r["sweep_id"] == "s1" for r in rows)
    tape = open_tape(tape_uri)
    try:
        for e in finished:
            row = by_run[e.run_id]
            assert (e.intents_sha256, e.intents) == (row["intents_sha256"], row["intents"]) == (
                row["intents_sha256"], len(intents[e.run_id]))
            assert json.loads(e.summary)["sweep_id"] == "s1"
            # the manifest alone re-runs it: same intents, in the same order
            manifest, _ = find_run(tape, e.run_id)
            runner, source = runner_for_run(tape, manifest)
            assert runner.run(source).intents_sha256 == e.intents_sha256
    finally:
        tape.close()
    # `ticktape load`: one table of the sweep's runs
    from analyzer.api import Analyzer

    an = Analyzer()
    an.load(tape_uri)
    got = an.sql("SELECT s.run_id, f.intents_sha256 FROM run_started s JOIN run_finished f USING (run_id) "
                 "WHERE s.sweep_id = 's1'")
    assert dict(zip(got.run_id, got.intents_sha256, strict=True)) == {k: v["intents_sha256"] for k, v in by_run.items()}


def test_a_resumed_sweep_runs_only_what_is_missing_on_the_inputs_the_first_part_read(tape_uri: str,
                                                                                     tmp_path: Path) -> None:
    out = f"file:{tmp_path / 'out'}"
    full = {"fast": ["3", "5"], "slow": ["20", "30", "40"]}
    reference = sweep("ema_cross", full, tape=tape_uri, out_tape=None)
    first = sweep("ema_cross", {"fast": ["3"], "slow": ["20", "30", "40"]}, tape=tape_uri, out_tape=out,
                  sweep_id="r1")
    assert len(first) == 3
    # The input tape grows meanwhile: the resumed points must still read what the first ones read.
    tape = open_tape(tape_uri)
    tape.append(TOPIC, synthetic_trades(2_000, ts0=1_800_000_000_000_000_000, seed=11))
    tape.close()
    again = sweep("ema_cross", full, tape=tape_uri, out_tape=out, sweep_id="r1")
    started, finished, _ = _runs(out, "r1")
    assert len(started) == len(finished) == 6  # 3 then only the 3 missing ones
    assert _key(again) == _key(reference)
    assert {r["run_id"] for r in first} <= {r["run_id"] for r in again}  # the first part's rows come from the tape
    # once complete, nothing more runs
    assert _key(sweep("ema_cross", full, tape=tape_uri, out_tape=out, sweep_id="r1")) == _key(reference)
    assert len(_runs(out, "r1")[0]) == 6
    with pytest.raises(RobotError, match="is a sweep of ema_cross, not market_maker"):
        sweep("market_maker", {"size": ["1"]}, tape=tape_uri, out_tape=out, sweep_id="r1")


def test_random_search_is_a_seeded_draw_of_distinct_grid_points() -> None:
    grid = {"a": list(range(7)), "b": list(range(5)), "c": ["x", "y"]}
    every = grid_points(grid)
    assert [grid_point(grid, i) for i in range(len(every))] == every
    one = plan_points(grid, "random:10", seed=3)
    assert one == plan_points(grid, "random:10", seed=3) != plan_points(grid, "random:10", seed=4)
    assert len({i for i, _ in one}) == 10 and all(every[i] == p for i, p in one)
    assert len(plan_points(grid, "random:500")) == len(every)  # never more than the grid
    assert plan_points(grid, None) == plan_points(grid, "grid") == list(enumerate(every))
    for bad in ("random", "random:0", "tpe:5", "random:x"):
        with pytest.raises(RobotError, match="--search expects grid, random:N or optuna:N"):
            parse_search(bad)


def test_random_search_on_the_cli_runs_the_drawn_points(tape_uri: str) -> None:
    res = CliRunner().invoke(cli, ["sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=2,3,4,5",
                                   "--grid", "slow=20,30,40", "--search", "random:5", "--seed", "9", "--json",
                                   "--no-out", "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    got = sorted((r["params"]["fast"], r["params"]["slow"]) for r in json.loads(res.output))
    grid = {"fast": [2, 3, 4, 5], "slow": [20, 30, 40]}
    want = sorted((p["fast"], p["slow"]) for _, p in plan_points(grid, "random:5", seed=9))
    assert got == want


def test_a_worker_that_cannot_see_the_file_tape_says_so_in_one_line(tmp_path: Path) -> None:
    task = SweepTask("ema_cross", {"fast": 3}, "r-1", "s", None, {"tape": f"file:{tmp_path / 'nowhere'}"})
    with pytest.raises(SweepError) as err:
        run_point(task)
    msg = str(err.value)
    assert "\n" not in msg and f"file tape {tmp_path / 'nowhere'} is not visible on {socket.gethostname()}" in msg
    assert not (tmp_path / "nowhere").exists()  # and it did not create an empty tape there


def test_without_ray_the_ray_engine_names_the_extra(tape_uri: str) -> None:
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from ticktape.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=3",
                           "--engine", "ray", "--no-progress"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: --engine ray needs Ray: pip install 'ticktape[ray]' (import of ray halted; None in sys.modules)"]


def test_report_sweep_ranks_the_runs_on_the_tape_and_maps_the_objective(tape_uri: str, tmp_path: Path) -> None:
    rows = sweep("ema_cross", {"fast": ["3", "5"], "slow": ["20", "30", "40"]}, tape=tape_uri, out_tape=tape_uri,
                 sweep_id="rep", sort_by="pnl")
    sweep("ema_cross", {"fast": ["8"]}, tape=tape_uri, out_tape=tape_uri, sweep_id="other")  # not in the report
    db, html = tmp_path / "a.duckdb", tmp_path / "s.html"
    runner = CliRunner()
    assert runner.invoke(cli, ["load", "--tape", tape_uri, "--db", str(db), "--no-progress"]).exit_code == 0
    res = runner.invoke(cli, ["report", "--sweep", "rep", "--db", str(db), "--out", str(html)])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].split()[:3] == ["fast", "slow", "pnl"] and len(lines) == 1 + 6 + 1
    ranked = [(int(line.split()[0]), int(line.split()[1])) for line in lines[1:7]]
    assert ranked == [(r["params"]["fast"], r["params"]["slow"]) for r in rows]  # best pnl first, as the sweep sorts
    page = html.read_text()
    assert page.count("<rect") == 6 and rows[0]["run_id"] in page and "other-" not in page
    bad = runner.invoke(cli, ["report", "--sweep", "nope", "--db", str(db)])
    assert bad.exit_code != 0 and "no finished run of sweep 'nope'" in bad.output


def test_progress_goes_to_stderr_with_the_best_objective_and_json_stays_clean(tape_uri: str) -> None:
    res = CliRunner().invoke(cli, ["sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=3,5", "--grid",
                                   "slow=20,30", "--json", "--progress", "--no-out"], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    rows = json.loads(res.stdout)  # nothing but the document on stdout
    assert "4/4" in res.stderr and "run/s" in res.stderr
    assert f"best pnl {max(r['pnl'] for r in rows):g}" in res.stderr


def test_workers_are_refused_with_the_ray_engine_before_anything_runs(tape_uri: str) -> None:
    res = CliRunner().invoke(cli, ["sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=3", "--engine", "ray",
                                   "--workers", "2", "--no-progress"])
    assert res.exit_code != 0 and "--workers is for --engine local" in res.output
    assert not open_tape(tape_uri).partitions(RUNS_TOPIC)  # nothing ran, nothing was written


def test_a_sweep_of_a_tape_that_is_not_there_fails_naming_it_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for out in (["--no-out"], []):  # the runs' default output is the input tape: not made either
        res = CliRunner().invoke(cli, ["sweep", "ema_cross", "--tape", f"file:{missing}", "--grid", "fast=3",
                                       "--no-progress", *out])
        assert res.exit_code != 0 and str(missing) in res.output and not missing.exists()
