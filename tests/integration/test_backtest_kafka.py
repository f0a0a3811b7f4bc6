"""Determinism on the Kafka tape: the same input mirrored to Kafka gives the file tape's intent bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from robots.backtest import backtest, find_run, replay_steps
from tests.kafka_fixtures import KAFKA_BACKENDS
from ticktape.codec import default_codec
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
@pytest.mark.parametrize("backend", KAFKA_BACKENDS)
def test_file_and_kafka_tapes_give_the_same_intents(tape_uri: str, kafka_tape_uri: Callable[[str], str],
                                                    topic: str, backend: str) -> None:
    events = [r.event for r in open_tape(tape_uri).read(TOPIC)]
    kafka = open_tape(kafka_tape_uri(backend))
    try:
        kafka.create_topic(topic)
        for i in range(0, len(events), 5_000):
            kafka.append(topic, events[i:i + 5_000])
        res = backtest("ema_cross", tape=kafka, topics=[topic], params=PARAMS, keep=False, out_tape=kafka)
        on_kafka = res.summary
        # the run recorded on Kafka replays from its manifest to the same intent bytes
        h = hashlib.sha256()
        encode = default_codec().encode
        for step in replay_steps(kafka, res.run_id):
            for intent in step.intents:
                h.update(encode(intent))
        _, finished = find_run(kafka, res.run_id)
    finally:
        kafka.close()
    on_file = run(tape_uri)
    assert on_kafka["events"] == on_file["events"] == N
    assert on_kafka["intents_sha256"] == on_file["intents_sha256"] == h.hexdigest()
    assert finished is not None and finished.intents_sha256 == on_file["intents_sha256"]
    assert on_kafka["pnl_exact"] == on_file["pnl_exact"]


@pytest.mark.kafka
def test_partitioned_topics_merge_the_same_on_file_and_kafka(tmp_path: Path, kafka_tape_uri: Callable[[str], str],
                                                             topic: str) -> None:
    trades = synthetic_trades(6_000, instrument="BTCUSDT") + synthetic_trades(6_000, instrument="ETHUSDT", seed=9)
    file_tape = open_tape(f"file:{tmp_path / 'p'}")
    kafka = open_tape(kafka_tape_uri("kafka"))
    try:
        for tape in (file_tape, kafka):
            tape.create_topic(topic, partitions=3)
            tape.append(topic, trades)  # keyed by instrument: the same partition on both backends
        params = {"fast": "5", "slow": "20", "instrument": "ETHUSDT"}
        a = backtest("ema_cross", tape=file_tape, topics=[topic], params=params, keep=False).summary
        b = backtest("ema_cross", tape=kafka, topics=[topic], params=params, keep=False).summary
    finally:
        file_tape.close()
        kafka.close()
    assert a["events"] == b["events"] == 12_000 and a["intents"] > 0
    assert a["intents_sha256"] == b["intents_sha256"] and a["pnl_exact"] == b["pnl_exact"]
