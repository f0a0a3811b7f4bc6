"""Kill -9 the runner and the gateway at random moments while a market is appended at speed.

The proof the live-runner issue asks for, on the file tape (follow mode) and on a real Kafka
broker: after at least 20 SIGKILLs and restarts in total, no client order id reached the venue
twice, no intent was lost, the robot's final state equals one uninterrupted fold over the
journal, the journal referenced every market record exactly once and in order, and
`ticktape audit --run` passes.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from producers.betfair.historical import import_file
from robots.live.topics import EVENT_TOPIC, INTENT_TOPIC
from tests.live.harness import Feeder, Proc, check_run, journal_covers, referenced, wait_for, wavy_trades
from tests.shared_data import BETFAIR
from ticktape.events import Event
from ticktape.tape import open_tape

TOPIC = "md.binance.trade"
N = 6000
KILLS = 22
EMA = ("ema_cross", "--param", "fast=3", "--param", "slow=8", "--param", f"topic={TOPIC}")


@dataclass
class Market:
    """What a crash run replays: a robot (name and params), its topic, the events, and the pace."""

    robot: tuple[str, ...]
    topic: str
    events: list[Event]
    batch: int
    pace: float
    min_places: int


def _crash_run(uri: str, tmp_path: Path, *, seed: int, market: Market | None = None, kills_total: int = KILLS,
               broker_fault: Callable[[], None] | None = None) -> None:
    market = market or Market(EMA, TOPIC, list(wavy_trades(N)), 10, 0.04, 20)  # ~25 s: kills land mid-stream
    topic, n = market.topic, len(market.events)
    rng = random.Random(seed)
    run_id = f"crash-{seed}"
    setup = open_tape(uri)
    setup.create_topic(topic)
    gateway = Proc("gateway", ["--tape", uri, "gateway", "--topics", topic, "--dead-after", "30"], tmp_path)
    runner = Proc("runner", ["--tape", uri, "run", *market.robot, "--run-id", run_id, "--gateway", "external",
                             "--snapshot-every", "200"], tmp_path)
    procs = [gateway, runner]
    gateway.start()
    # ready = its start positions are journaled (a first start reads what arrives from then on)
    wait_for("the gateway to start", lambda: gateway.said("serving"), 60, procs)
    runner.start()
    wait_for("the runner to start", lambda: runner.said("live on"), 60, procs)
    feeder = Feeder(uri, topic, market.events, batch=market.batch, pace=market.pace)
    feeder.start()
    kills = {"runner": 0, "gateway": 0}
    try:
        for i in range(kills_total):
            time.sleep(rng.uniform(0.3, 1.3))
            victim = rng.choice(procs)
            victim.kill9()
            kills[victim.name] += 1
            if broker_fault is not None and i == kills_total // 2:
                broker_fault()
            time.sleep(rng.uniform(0.0, 0.3))
            victim.start()
        feeder.join(120)
        assert feeder.error is None, feeder.error
        assert feeder.sent == n
        # Let both catch up: every market record journaled, every intent and answer folded.
        check = open_tape(uri)
        try:
            wait_for("the runner to journal every market record",
                     lambda: journal_covers(check, run_id, topic, 0, n), 120, procs)

            def settled() -> bool:
                ends_i = check.end_offsets(INTENT_TOPIC)
                ends_e = check.end_offsets(EVENT_TOPIC)
                return (all(journal_covers(check, "gateway-paper", INTENT_TOPIC, p, e) for p, e in ends_i.items())
                        and all(journal_covers(check, run_id, EVENT_TOPIC, p, e) for p, e in ends_e.items()))

            wait_for("the gateway and the runner to fold every intent and answer", settled, 120, procs)
            wait_for("both to be up", lambda: runner.said("live on") and gateway.said("serving"), 60, procs)
            assert runner.terminate() == 0, runner.tail()
            wait_for("the gateway to answer the stop", settled, 60, procs)
            assert gateway.terminate() == 0, gateway.tail()
            figures = check_run(check, run_id)
            assert figures["places"] >= market.min_places, f"the robot hardly traded: {figures}"
            print(f"{run_id}: kills {kills}, {figures}")  # shown with -s
            offsets = referenced(check, run_id, topic)
            assert offsets == list(range(n)), "the journal must reference each market record once, in order"
        finally:
            check.close()
        assert min(kills.values()) >= kills_total // 4 and sum(kills.values()) == kills_total, kills
        audit = subprocess.run([sys.executable, "-m", "ticktape", "--tape", uri, "audit", "--run", run_id],
                               capture_output=True, text=True, timeout=300)
        assert audit.returncode == 0 and "audit ok" in audit.stdout, audit.stdout + audit.stderr
    finally:
        for p in procs:
            if p.alive():
                p.kill9()
        setup.close()


@pytest.mark.slow
def test_kill9_runner_and_gateway_on_the_file_tape(tmp_path: Path) -> None:
    _crash_run(f"file:{tmp_path / 'tape'}", tmp_path, seed=11)


@pytest.mark.slow
@pytest.mark.shared_data("betfair/1.197931750", "betfair/1.197931751")
def test_kill9_on_a_recorded_betfair_market(tmp_path: Path) -> None:
    """Two recorded Betfair markets (the sample in ../shared/data) replayed as live; the robot backs the
    favourite before each off and the paper venue matches and settles it, through 10 kills."""
    source = open_tape(f"file:{tmp_path / 'import'}")
    for market in ("1.197931750", "1.197931751"):
        import_file(source, BETFAIR / market)
    events = [r.event for r in source.read("md.betfair.market")]
    source.close()
    robot = ("betfair_back_favourite", "--param", "topic=md.betfair.market")
    _crash_run(f"file:{tmp_path / 'tape'}", tmp_path, seed=5, kills_total=10,
               market=Market(robot, "md.betfair.market", events, 2, 0.08, 2))


@pytest.mark.kafka
@pytest.mark.slow
def test_kill9_runner_gateway_and_broker_on_kafka(tmp_path: Path) -> None:
    from tests.kafka_fixtures import start_broker

    broker = start_broker(tmp_path / "broker")
    try:
        def broker_crash() -> None:
            broker.kill()
            time.sleep(1.0)
            broker.restart_same()

        _crash_run(f"kafka://{broker.address}", tmp_path, seed=23, broker_fault=broker_crash)
    finally:
        broker.stop()
