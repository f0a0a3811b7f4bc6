"""`ticktape run --snapshots mongodb://...`: a live run keeps its snapshots in MongoDB (real FerretDB),
resumes from them after a SIGKILL, and goes on trading while that server is down."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from robots.live.replay import JournalSource, LiveReplayRunner
from robots.live.runner import read_manifest
from robots.live.topics import INTENT_TOPIC
from robots.registry import get_robot
from tests.live.harness import (
    Feeder,
    Proc,
    journal_covers,
    kill_all,
    run_records,
    start_gateway_and_runner,
    wait_for,
    wavy_trades,
)
from tests.mongo_fixtures import MongoServer
from ticktape.codec import default_codec
from ticktape.mongo.snapshots import MongoSnapshotStore
from ticktape.tape import Tape, open_tape

TOPIC = "md.binance.trade"
EMA = ("ema_cross", "--param", "fast=3", "--param", "slow=8", "--param", f"topic={TOPIC}")


def _procs(uri: str, snapshots: str, run_id: str, tmp_path: Path) -> tuple[Proc, Proc]:
    gateway = Proc("gateway", ["--tape", uri, "gateway", "--topics", TOPIC, "--dead-after", "30"], tmp_path)
    runner = Proc("runner", ["--tape", uri, "run", *EMA, "--run-id", run_id, "--gateway", "external",
                             "--snapshots", snapshots, "--snapshot-every", "100"], tmp_path)
    return gateway, runner


def _check_against_one_fold(tape: Tape, run_id: str, store: MongoSnapshotStore) -> int:
    """The intents on the tape are those of one uninterrupted fold over the journal, and the last
    snapshot in MongoDB holds that fold's final state. Returns the number of intents."""
    manifest = read_manifest(tape, run_id)
    assert manifest is not None
    robot = get_robot(manifest.robot, json.loads(manifest.params), robot_id=manifest.robot_id)
    replay = LiveReplayRunner(robot, run_id)
    derived: list[object] = []
    replay.on_intent = derived.append
    replay.run(JournalSource(tape, run_id))
    encode = default_codec().encode
    on_tape = [encode(i) for i in run_records(tape, INTENT_TOPIC, run_id)]
    once: list[bytes] = []  # run_records drops exact second copies (retried appends): so here
    for data in (encode(i) for i in derived):
        if data not in once:
            once.append(data)
    assert on_tape == once, f"{len(on_tape)} intents on the tape, {len(once)} derived by one fold"
    last = store.latest(run_id)
    assert last is not None and last.state == robot.state_to_json(replay.state)
    assert tape.partitions(f"snapshots.{run_id}") == 0, "with --snapshots mongodb:// the tape keeps none"
    return len(on_tape)


@pytest.mark.slow
def test_kill9_restart_resumes_from_the_snapshot_in_mongodb(tmp_path: Path, mongo_db_uri: str) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    run_id = "mongo-snap-1"
    n = 3000
    setup = open_tape(uri)
    setup.create_topic(TOPIC)
    store = MongoSnapshotStore(mongo_db_uri)
    gateway, runner = _procs(uri, mongo_db_uri, run_id, tmp_path)
    procs = [gateway, runner]
    try:
        start_gateway_and_runner(gateway, runner)
        feeder = Feeder(uri, TOPIC, wavy_trades(n), batch=10, pace=0.02)
        feeder.start()
        wait_for("snapshots in MongoDB", lambda: (s := store.latest(run_id)) is not None and s.seq >= 500, 60, procs)
        runner.kill9()
        before = store.snapshots(run_id)
        assert 1 <= len(before) <= 3 and before == sorted(before, key=lambda s: s.journal_offset)
        runner.start()
        wait_for("the runner to restart", lambda: runner.said("live on"), 60, procs)
        restarted = re.search(r"restarted at input #(\d+) \((\d+) journaled inputs replayed after its snapshot\)",
                              runner.tail())
        assert restarted, runner.tail()
        total, replayed = int(restarted.group(1)), int(restarted.group(2))
        assert replayed < total - 400, f"replayed {replayed} of {total}: the snapshot in MongoDB was not used"
        feeder.join(120)
        assert feeder.error is None and feeder.sent == n
        wait_for("the runner to journal every trade", lambda: journal_covers(setup, run_id, TOPIC, 0, n), 120, procs)
        assert runner.terminate() == 0, runner.tail()
        assert gateway.terminate() == 0, gateway.tail()
        intents = _check_against_one_fold(setup, run_id, store)
        assert intents >= 20, f"the robot hardly traded ({intents} intents)"
        assert store.collection.count_documents({"stream": run_id}) <= 3
    finally:
        kill_all(procs)
        store.close()
        setup.close()


@pytest.mark.slow
def test_a_run_keeps_trading_while_the_snapshot_server_is_down(tmp_path: Path, mongo_server: MongoServer) -> None:
    uri = f"file:{tmp_path / 'tape'}"
    run_id = "mongo-snap-2"
    n = 4000
    snapshots = f"{mongo_server.uri}/snaps"
    setup = open_tape(uri)
    setup.create_topic(TOPIC)
    store = MongoSnapshotStore(snapshots)
    gateway, runner = _procs(uri, snapshots, run_id, tmp_path)
    procs = [gateway, runner]
    try:
        start_gateway_and_runner(gateway, runner)
        feeder = Feeder(uri, TOPIC, wavy_trades(n), batch=10, pace=0.02)
        feeder.start()
        wait_for("a first snapshot", lambda: store.latest(run_id) is not None, 60, procs)
        first = store.latest(run_id)
        assert first is not None
        mongo_server.kill()
        intents_at_kill = len(run_records(setup, INTENT_TOPIC, run_id))
        sent_at_kill = feeder.sent
        wait_for("the runner to warn that a snapshot was not saved", lambda: runner.said("not saved to"), 60, procs)
        # still trading: the journal follows the feed and intents keep coming, with the server down
        wait_for("the runner to journal 1000 more trades",
                 lambda: journal_covers(setup, run_id, TOPIC, 0, sent_at_kill + 1000), 60, procs)
        assert runner.alive(), runner.tail()
        assert len(run_records(setup, INTENT_TOPIC, run_id)) > intents_at_kill
        mongo_server.restart()
        wait_for("snapshots saved again", lambda: runner.said("again (after"), 60, procs)
        again = store.latest(run_id)
        assert again is not None and again.journal_offset > first.journal_offset
        feeder.join(120)
        assert feeder.error is None and feeder.sent == n
        wait_for("the runner to journal every trade", lambda: journal_covers(setup, run_id, TOPIC, 0, n), 120, procs)
        assert runner.terminate() == 0, runner.tail()
        assert gateway.terminate() == 0, gateway.tail()
        _check_against_one_fold(setup, run_id, store)
    finally:
        kill_all(procs)
        store.close()
        setup.close()
