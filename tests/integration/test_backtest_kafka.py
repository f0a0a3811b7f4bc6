"""Determinism on the Kafka tape: the same input mirrored to Kafka gives the file tape's intent bytes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from robots.backtest import backtest
from ticktape.demo import synthetic_trades
from ticktape.tape import open_tape

TOPIC = "md.sim.trade"
N = 20_000
PARAMS = {"fast": "5", "slow": "20"}


@pytest.fixture
def tape_uri(tmp_path: Path) -> str:
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    events = synthetic_trades(N)
    for i in range(0, N, 5_000):
        tape.append(TOPIC, events[i:i + 5_000])
    tape.close()
    return uri


def run(uri: str) -> dict[str, object]:
    return backtest("ema_cross", tape=uri, topics=[TOPIC], params=PARAMS, keep=False).summary


@pytest.mark.kafka
def test_file_and_kafka_tapes_give_the_same_intents(tape_uri: str, kafka_tape_uri: Callable[[str], str],
                                                    topic: str) -> None:
    events = [r.event for r in open_tape(tape_uri).read(TOPIC)]
    kafka = open_tape(kafka_tape_uri("kafka"))
    try:
        kafka.create_topic(topic)
        for i in range(0, len(events), 5_000):
            kafka.append(topic, events[i:i + 5_000])
        on_kafka = backtest("ema_cross", tape=kafka, topics=[topic], params=PARAMS, keep=False).summary
    finally:
        kafka.close()
    on_file = run(tape_uri)
    assert on_kafka["events"] == on_file["events"] == N
    assert on_kafka["intents_sha256"] == on_file["intents_sha256"]
    assert on_kafka["pnl_exact"] == on_file["pnl_exact"]
