"""`--search optuna:N` (Optuna's TPE over the grid's values) and walk-forward sweeps (`--train/--test`),
on the local engine with real Optuna and real file tapes. The Ray engine: tests/integration/test_sweep_ray.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from robots.api import RobotError
from robots.backtest import EVENT_TOPIC
from robots.sweep import SweepError, parse_search, sweep, sweep_runs
from robots.sweep_walk import TEST_SUFFIX, check_windows, parse_window, walk_forward
from ticktape.cli import _register_plugins, cli
from ticktape.demo import synthetic_trades
from ticktape.events import OrderFilled, RunStarted
from ticktape.tape import open_tape

REPO = Path(__file__).resolve().parents[3]
pytest.importorskip("optuna", reason="the optuna extra (in ticktape[dev]) is not installed")

_register_plugins()
TOPIC = "md.sim.trade"
T0 = 1_700_000_000_000_000_000  # synthetic_trades: 4,000 trades over 400 s from here
GRID = {"fast": ["2", "3", "4", "5", "6", "7"], "slow": ["15", "20", "25", "30", "40"]}


@pytest.fixture
def tape_uri(tmp_path: Path) -> str:
    uri = f"file:{tmp_path / 'tape'}"
    with open_tape(uri) as tape:
        tape.append(TOPIC, synthetic_trades(4_000))
    return uri


def runs_of(uri: str, sweep_id: str) -> list[RunStarted]:
    with open_tape(uri) as tape:
        started, _ = sweep_runs(tape, sweep_id)
    return list(started.values())


def fill_times(uri: str, run_ids: set[str]) -> dict[str, list[int]]:
    """ts_event of every fill the runs in `run_ids` got, per run (runs write their answers keyed by run id)."""
    out: dict[str, list[int]] = {r: [] for r in run_ids}
    with open_tape(uri) as tape:
        for p in range(tape.partitions(EVENT_TOPIC)):
            for rec in tape.read(EVENT_TOPIC, p):
                if rec.key in out and type(rec.event) is OrderFilled:
                    out[rec.key].append(rec.event.ts_event)
    return out


def shape(rows: list[dict[str, object]]) -> list[tuple[str, object, object]]:
    return [(json.dumps(r["params"], sort_keys=True), r["pnl"], r["intents_sha256"]) for r in rows]


def test_parse_search_takes_optuna() -> None:
    assert parse_search("optuna:12") == ("optuna", 12)
    for bad in ("optuna", "optuna:0", "optuna:x", "tpe:3"):
        with pytest.raises(SweepError, match="grid, random:N or optuna:N"):
            parse_search(bad)


def test_an_optuna_search_is_seeded_and_every_trial_is_a_run_on_the_tape(tape_uri: str) -> None:
    first = sweep("ema_cross", GRID, tape=tape_uri, search="optuna:12", seed=7, sweep_id="opt-a", out_tape=tape_uri)
    again = sweep("ema_cross", GRID, tape=tape_uri, search="optuna:12", seed=7, sweep_id="opt-b", out_tape=tape_uri)
    assert shape(first) == shape(again)  # the same trials, the same runs, byte for byte
    assert 1 < len(first) <= 12 and len({r["run_id"] for r in first}) == len(first)
    for sid, rows in (("opt-a", first), ("opt-b", again)):
        started = runs_of(tape_uri, sid)
        assert sorted(s.run_id for s in started) == sorted(str(r["run_id"]) for r in rows)  # one run per distinct set
    other = sweep("ema_cross", GRID, tape=tape_uri, search="optuna:12", seed=8, sweep_id="opt-c", out_tape=tape_uri)
    assert [r[0] for r in shape(other)] != [r[0] for r in shape(first)]  # another seed searches elsewhere
    # the search chose from the grid only, and ranked by the objective
    assert all(r["params"]["fast"] in {2, 3, 4, 5, 6, 7} for r in first)
    assert [r["pnl"] for r in first] == sorted((r["pnl"] for r in first), reverse=True)


def cli_sweep(*args: str, sys_modules: str = "") -> subprocess.CompletedProcess[str]:
    """`ticktape sweep ARGS` in a fresh interpreter (after `sys_modules`, code run before the CLI)."""
    code = f"import sys\n{sys_modules}\nfrom ticktape.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, "sweep", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_same_optuna_command_in_two_processes_gives_the_same_trials_and_records_them(tape_uri: str) -> None:
    args = ["ema_cross", "--tape", tape_uri, "--grid", "fast=2,3,4,5,6,7", "--grid", "slow=15,20,25,30,40",
            "--search", "optuna:6", "--seed", "4", "--objective", "max_drawdown", "--ascending", "--workers", "2",
            "--json", "--no-progress"]
    docs = []
    for sid in ("two-a", "two-b"):
        proc = cli_sweep(*args, "--sweep-id", sid)
        assert proc.returncode == 0, proc.stderr
        docs.append(json.loads(proc.stdout))
    assert shape(docs[0]) == shape(docs[1]) and len(docs[0]) > 1
    assert [r["max_drawdown"] for r in docs[0]] == sorted(r["max_drawdown"] for r in docs[0])
    with open_tape(tape_uri) as tape:
        started, done = sweep_runs(tape, "two-a")
    # every trial is a finished run on the tape, and its objective there is the one the search was told
    assert sorted(done[s.params]["max_drawdown"] for s in started.values()) == \
        sorted(r["max_drawdown"] for r in docs[0])


def test_without_optuna_the_search_names_the_extra_in_one_line(tape_uri: str) -> None:
    proc = cli_sweep("ema_cross", "--tape", tape_uri, "--grid", "fast=3,4", "--search", "optuna:2", "--no-progress",
                     sys_modules="sys.modules['optuna'] = None  # as if Optuna were not installed")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: --search optuna:N needs Optuna: pip install 'ticktape[optuna]' "
        "(import of optuna halted; None in sys.modules)"]


def test_a_resumed_optuna_search_runs_only_the_trials_without_a_finished_run(tape_uri: str) -> None:
    part = sweep("ema_cross", GRID, tape=tape_uri, search="optuna:5", seed=3, sweep_id="opt-r", out_tape=tape_uri)
    before = {s.run_id for s in runs_of(tape_uri, "opt-r")}
    whole = sweep("ema_cross", GRID, tape=tape_uri, search="optuna:10", seed=3, sweep_id="opt-r", out_tape=tape_uri)
    after = runs_of(tape_uri, "opt-r")
    # the first five trials are asked again and answered from the tape: no parameter set runs twice
    assert before <= {s.run_id for s in after} and len(after) == len(whole) >= len(part)
    assert len({s.params for s in after}) == len(after)
    fresh = sweep("ema_cross", GRID, tape=tape_uri, search="optuna:10", seed=3, sweep_id="opt-f", out_tape=tape_uri)
    assert shape(whole) == shape(fresh)  # resuming changed nothing in the search


def test_an_objective_that_is_not_a_summary_field_is_refused(tape_uri: str) -> None:
    with pytest.raises(SweepError, match="--objective 'pnll' is not a run summary field"):
        sweep("ema_cross", GRID, tape=tape_uri, search="optuna:3", sort_by="pnll", out_tape=None)


def test_minimising_the_drawdown_finds_a_set_no_worse_than_the_grid_median(tape_uri: str) -> None:
    grid = sweep("ema_cross", GRID, tape=tape_uri, sort_by="max_drawdown", descending=False, out_tape=None)
    found = sweep("ema_cross", GRID, tape=tape_uri, search="optuna:15", seed=1, sort_by="max_drawdown",
                  descending=False, out_tape=None)
    values = sorted(r["max_drawdown"] for r in grid)
    assert found[0]["max_drawdown"] <= values[len(values) // 2]
    assert found[0]["max_drawdown"] == min(r["max_drawdown"] for r in found)  # ascending: lowest first


def test_windows_parse_and_overlap_is_refused() -> None:
    assert parse_window("2023-11-14T22:13:20..2023-11-14T22:16:40", "--train") == (T0, T0 + 200 * 10**9)
    assert parse_window(f"{T0}..{T0 + 5}", "--test") == (T0, T0 + 5)
    for bad in ("2023-11-14", "..2024-01-01", "2024-02-01..2024-01-01", "x..y"):
        with pytest.raises(SweepError, match="--train"):
            parse_window(bad, "--train")
    check_windows((0, 10), (10, 20))  # touching is fine: half-open
    with pytest.raises(SweepError, match="overlap"):
        check_windows((0, 10), (9, 20))


def test_walk_forward_scores_the_best_training_sets_on_the_test_window(tape_uri: str) -> None:
    train, test = (T0, T0 + 200 * 10**9), (T0 + 200 * 10**9, T0 + 400 * 10**9)
    res = walk_forward("ema_cross", GRID, train=train, test=test, top=2, sweep_id="wf", tape=tape_uri,
                       out_tape=tape_uri, search="random:8", seed=5)
    assert len(res["train"]) == 8 and len(res["test"]) == 2
    best = res["train"][:2]
    assert sorted(json.dumps(r["params"], sort_keys=True) for r in res["test"]) == \
        sorted(json.dumps(r["params"], sort_keys=True) for r in best)
    by_params = {json.dumps(r["params"], sort_keys=True): r["pnl"] for r in best}
    for row in res["test"]:
        assert row["train_pnl"] == by_params[json.dumps(row["params"], sort_keys=True)]
    for sid, (lo, hi) in (("wf", train), ("wf" + TEST_SUFFIX, test)):
        started = runs_of(tape_uri, sid)
        assert started and all((s.from_ts, s.to_ts) == (lo, hi) for s in started)
    # what the runs traded on lies inside their own window: every fill of a test run is in the test window
    for sid, (lo, hi) in (("wf", train), ("wf" + TEST_SUFFIX, test)):
        fills = fill_times(tape_uri, {s.run_id for s in runs_of(tape_uri, sid)})
        assert all(fills.values()), fills  # each run traded, so the bounds below check something
        assert all(lo <= ts < hi for times in fills.values() for ts in times), (sid, lo, hi, fills)
    # each part read the tape up to its own window's end, from one snapshot taken before training
    [train_offsets] = {s.end_offsets for s in runs_of(tape_uri, "wf")}
    [test_offsets] = {s.end_offsets for s in runs_of(tape_uri, "wf" + TEST_SUFFIX)}
    assert json.loads(train_offsets) == {TOPIC: {"0": 2_000}} and json.loads(test_offsets) == {TOPIC: {"0": 4_000}}
    again = walk_forward("ema_cross", GRID, train=train, test=test, top=2, sweep_id="wf", tape=tape_uri,
                         out_tape=tape_uri, search="random:8", seed=5)
    assert shape(again["test"]) == shape(res["test"]) and len(runs_of(tape_uri, "wf" + TEST_SUFFIX)) == 2


def test_walk_forward_on_the_cli(tape_uri: str) -> None:
    runner = CliRunner()
    args = ["sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=2,3,4", "--grid", "slow=20,30",
            "--search", "optuna:4", "--train", f"{T0}..{T0 + 250 * 10**9}", "--test",
            f"{T0 + 250 * 10**9}..{T0 + 400 * 10**9}", "--objective", "pnl", "--no-progress"]
    res = runner.invoke(cli, [*args, "--sweep-id", "wfc"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "scored on --test" in res.output and "sweep wfc.test" in res.output and "train pnl" in res.output
    res = runner.invoke(cli, [*args, "--sweep-id", "wfj", "--json"], catch_exceptions=False)
    doc = json.loads(res.output)
    assert doc["sweep_id"] == "wfj" and len(doc["test"]) == 1 and "train_pnl" in doc["test"][0]
    bad = runner.invoke(cli, ["sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=2,3", "--train",
                              f"{T0}..{T0 + 10}"])
    assert bad.exit_code != 0 and "needs both --train" in bad.output
    overlap = runner.invoke(cli, ["sweep", "ema_cross", "--tape", tape_uri, "--grid", "fast=2,3", "--train",
                                  f"{T0}..{T0 + 300 * 10**9}", "--test", f"{T0 + 250 * 10**9}..{T0 + 400 * 10**9}"])
    assert overlap.exit_code != 0 and "overlap" in overlap.output


def test_walk_forward_refuses_a_window_given_twice(tape_uri: str) -> None:
    with pytest.raises(RobotError, match="walk-forward sets start"):
        walk_forward("ema_cross", GRID, train=(T0, T0 + 10), test=(T0 + 10, T0 + 20), sweep_id="x", tape=tape_uri,
                     start=T0)


def test_report_sweep_shows_the_walk_forward_test_scores(tape_uri: str, tmp_path: Path) -> None:
    train, test = (T0, T0 + 200 * 10**9), (T0 + 200 * 10**9, T0 + 400 * 10**9)
    res = walk_forward("ema_cross", GRID, train=train, test=test, top=2, sweep_id="wfr", tape=tape_uri,
                       out_tape=tape_uri, search="random:6", seed=2)
    db = tmp_path / "a.duckdb"
    runner = CliRunner()
    assert runner.invoke(cli, ["load", "--tape", tape_uri, "--db", str(db)]).exit_code == 0
    out = tmp_path / "sweep.html"
    rep = runner.invoke(cli, ["report", "--sweep", "wfr", "--db", str(db), "--out", str(out)], catch_exceptions=False)
    assert rep.exit_code == 0, rep.output
    text = rep.output.split("walk-forward, on the test window")[1]
    for row in res["test"]:
        assert str(row["run_id"]) in text
    html = out.read_text()
    assert "walk-forward: the chosen sets on the test window (sweep wfr.test)" in html
    assert html.count(str(res["test"][0]["run_id"])) == 1
