"""`ticktape sweep --engine ray` on a real Ray cluster (head + one worker node, started by the session).

A 12-point sweep on Ray equals the local sweep run by run, on the tape too; a Ray worker killed
(kill -9) mid-task costs only that task, which Ray runs again, and changes nothing in the results;
a sweep whose driver is killed, started again with the same sweep id, runs only what was missing;
on a Kafka tape the workers read the inputs from the broker and the runs go back to it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from robots.backtest import INTENT_TOPIC, RUNS_TOPIC
from robots.sweep import SweepError, sweep
from tests.ray_fixtures import RayCluster
from ticktape.demo import synthetic_trades
from ticktape.events import RunFinished, RunStarted
from ticktape.tape import open_tape

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TOPIC = "md.sim.trade"
GRID = {"fast": ["3", "5", "8"], "slow": ["20", "30", "40", "60"]}  # 12 points
GRID_ARGS = ["--grid", "fast=3,5,8", "--grid", "slow=20,30,40,60"]
KEY = ("params", "intents_sha256", "pnl_exact", "fees", "max_drawdown", "fills", "intents", "events")


@pytest.fixture(scope="module")
def tape_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # ~0.3 s a run here: long enough to kill a worker in the middle of one
    uri = f"file:{tmp_path_factory.mktemp('ray') / 'tape'}"
    tape = open_tape(uri)
    tape.append(TOPIC, synthetic_trades(30_000))
    tape.close()
    return uri


@pytest.fixture(scope="module")
def local_rows(tape_uri: str) -> list[dict[str, object]]:
    return sweep("ema_cross", GRID, tape=tape_uri, out_tape=tape_uri, sweep_id="local")


def _key(rows: list[dict[str, object]]) -> list[list[str]]:
    return sorted([json.dumps(r[k], sort_keys=True) for k in KEY] for r in rows)


def _sweep_on_tape(uri: str, sweep_id: str) -> tuple[list[RunStarted], list[RunFinished], dict[str, list[bytes]]]:
    """A sweep's RunStarted and RunFinished records, and each run's intents as stored bytes, by params."""
    tape = open_tape(uri)
    try:
        runs = [r.event for r in tape.read(RUNS_TOPIC)]
        started = [e for e in runs if type(e) is RunStarted and e.sweep_id == sweep_id]
        params = {e.run_id: e.params for e in started}
        finished = [e for e in runs if type(e) is RunFinished and e.run_id in params]
        intents: dict[str, list[bytes]] = {}
        codec = tape.codec  # type: ignore[attr-defined]
        for rec in tape.read(INTENT_TOPIC):
            if rec.key in params:
                intents.setdefault(params[rec.key], []).append(codec.encode(rec.event))
    finally:
        tape.close()
    return started, finished, intents


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ticktape", "sweep", "ema_cross", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_sweep_on_ray_equals_the_local_sweep_run_by_run(ray_cluster: RayCluster, tape_uri: str,
                                                          local_rows: list[dict[str, object]]) -> None:
    on_ray = sweep("ema_cross", GRID, tape=tape_uri, out_tape=tape_uri, sweep_id="on-ray", engine="ray",
                   address=ray_cluster.address)
    assert len(on_ray) == 12 and _key(on_ray) == _key(local_rows)
    assert len({r["intents_sha256"] for r in on_ray}) > 6  # the points really differ
    # and on the tape: one finished run per point, the same intent bytes per parameter set
    started, finished, intents = _sweep_on_tape(tape_uri, "on-ray")
    l_started, l_finished, l_intents = _sweep_on_tape(tape_uri, "local")
    assert len(started) == len(finished) == len(l_started) == 12
    assert intents == l_intents and sum(map(len, intents.values())) == sum(int(r["intents"]) for r in on_ray)
    assert sorted(e.intents_sha256 for e in finished) == sorted(e.intents_sha256 for e in l_finished)


def test_a_ray_worker_killed_mid_task_changes_nothing(ray_cluster: RayCluster, tape_uri: str,
                                                      local_rows: list[dict[str, object]]) -> None:
    if not ray_cluster.pgids:
        pytest.skip("TICKTAPE_RAY: a cluster this session did not start; its workers are not ours to kill")
    proc = _cli("--tape", tape_uri, *GRID_ARGS, "--engine", "ray", "--address", str(ray_cluster.address),
                "--sweep-id", "killed", "--json", "--no-progress")
    killed: list[int] = []
    while proc.poll() is None and len(killed) < 2:
        busy = ray_cluster.pids("ray::run_point")  # a worker process while it runs a task (Ray's process title)
        for pid in busy[:1]:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            time.sleep(0.5)  # let Ray notice and reschedule before the next kill
        time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert killed, "no Ray worker was seen running a task"
    assert _key(json.loads(out)) == _key(local_rows)
    started, finished, intents = _sweep_on_tape(tape_uri, "killed")
    # a killed attempt wrote nothing: exactly one run per point, complete
    assert len(started) == len(finished) == 12 and intents == _sweep_on_tape(tape_uri, "local")[2]


def test_a_sweep_started_again_runs_only_what_was_missing(ray_cluster: RayCluster, tape_uri: str,
                                                          local_rows: list[dict[str, object]]) -> None:
    args = ["--tape", tape_uri, *GRID_ARGS, "--engine", "ray", "--address", str(ray_cluster.address),
            "--sweep-id", "resumed", "--json", "--no-progress"]
    proc = _cli(*args)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(_sweep_on_tape(tape_uri, "resumed")[1]) >= 3:
            proc.send_signal(signal.SIGKILL)  # the driver dies mid-sweep
            break
        time.sleep(0.05)
    proc.communicate(timeout=60)
    started, finished, _ = _sweep_on_tape(tape_uri, "resumed")
    done_before = {e.params for e in started if e.run_id in {f.run_id for f in finished}}
    assert 3 <= len(done_before) < 12, "the driver was not killed mid-sweep"

    again = _cli(*args)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert _key(json.loads(out)) == _key(local_rows)
    started2, finished2, intents = _sweep_on_tape(tape_uri, "resumed")
    new = [e for e in started2 if e.run_id not in {s.run_id for s in started}]
    # only the parameter sets without a finished run were run again, each once
    assert sorted(e.params for e in new) == sorted({e.params for e in started2} - done_before)
    assert len({e.params for e in started2}) == 12
    finished_params = sorted(e.params for e in started2 if e.run_id in {f.run_id for f in finished2})
    assert finished_params == sorted({e.params for e in started2})  # one finished run per point
    assert intents.keys() == _sweep_on_tape(tape_uri, "local")[2].keys()


@pytest.mark.kafka
def test_a_sweep_on_ray_reads_a_kafka_tape_and_writes_its_runs_there(ray_cluster: RayCluster, tape_uri: str,
                                                                     kafka_tape_uri: Callable[[str], str],
                                                                     topic: str) -> None:
    grid = {"fast": ["3", "8"], "slow": ["20", "40", "60"]}
    kafka_uri = kafka_tape_uri("kafka")
    kafka = open_tape(kafka_uri)
    try:
        kafka.create_topic(topic)
        events = [r.event for r in open_tape(tape_uri).read(TOPIC, limit=10_000)]
        kafka.append(topic, events)
    finally:
        kafka.close()
    sweep_id = f"kafka-{topic}"
    on_ray = sweep("ema_cross", grid, tape=kafka_uri, topics=[topic], out_tape=kafka_uri, sweep_id=sweep_id,
                   engine="ray", address=ray_cluster.address)
    end = events[-1].ts_event + 1  # the same 10,000 trades from the file tape
    local = sweep("ema_cross", grid, tape=tape_uri, topics=[TOPIC], end=end)
    assert _key(on_ray) == _key(local) and all(r["events"] == 10_000 for r in on_ray)
    started, finished, intents = _sweep_on_tape(kafka_uri, sweep_id)
    assert len(started) == len(finished) == 6 and sum(map(len, intents.values())) == sum(
        int(r["intents"]) for r in on_ray)


def test_a_ray_worker_that_cannot_see_the_file_tape_says_so_in_one_line(ray_cluster: RayCluster,
                                                                        tmp_path: Path) -> None:
    # Offsets given, so the driver opens nothing: only the workers look for the tape, and do not find it.
    missing = tmp_path / "not-mounted-here"
    with pytest.raises(SweepError) as err:
        sweep("ema_cross", {"fast": ["3", "5"]}, tape=f"file:{missing}", topics=[TOPIC],
              end_offsets={TOPIC: {0: 100}}, engine="ray", address=ray_cluster.address)
    msg = str(err.value)
    assert "\n" not in msg and f"file tape {missing} is not visible on {socket.gethostname()}" in msg
    assert f"(pid {os.getpid()})" not in msg and not missing.exists()  # said by a Ray worker; no tape made there


def test_an_optuna_search_on_ray_asks_what_the_local_one_with_as_many_workers_asks(
        ray_cluster: RayCluster, tape_uri: str) -> None:
    """TPE asks a batch as large as the engine runs at once (two CPUs here, two local workers): the
    same seed then gives the same trials, the same runs, byte for byte, on either engine."""
    pytest.importorskip("optuna", reason="the optuna extra (in ticktape[dev]) is not installed")
    on_ray = sweep("ema_cross", GRID, tape=tape_uri, out_tape=tape_uri, sweep_id="opt-ray", engine="ray",
                   address=ray_cluster.address, search="optuna:6", seed=11)
    local = sweep("ema_cross", GRID, tape=tape_uri, out_tape=tape_uri, sweep_id="opt-local", workers=2,
                  search="optuna:6", seed=11)
    assert 1 < len(on_ray) <= 6 and _key(on_ray) == _key(local)
    assert _sweep_on_tape(tape_uri, "opt-ray")[2] == _sweep_on_tape(tape_uri, "opt-local")[2]
