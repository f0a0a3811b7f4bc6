"""Same inputs => identical intent bytes: twice, in two processes, on file and Kafka tapes, 1 vs N workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robots.backtest import backtest, find_run, replay_steps
from robots.sources import ListSource, TapeSource
from robots.sweep import sweep
from ticktape.codec import default_codec
from ticktape.demo import synthetic_trades
from ticktape.events import Quote, Trade
from ticktape.tape import open_tape

TOPIC = "md.sim.trade"
N = 20_000
PARAMS = {"fast": "5", "slow": "20"}


@pytest.fixture(scope="module")
def tape_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"file:{tmp_path_factory.mktemp('det') / 'tape'}"
    tape = open_tape(uri)
    events = synthetic_trades(N)
    for i in range(0, N, 5_000):
        tape.append(TOPIC, events[i:i + 5_000])
    tape.close()
    return uri


def run(uri: str, **kw: object) -> dict[str, object]:
    return backtest("ema_cross", tape=uri, topics=[TOPIC], params=PARAMS, keep=False, **kw).summary  # type: ignore[arg-type]


def test_twice_in_one_process(tape_uri: str) -> None:
    a, b = run(tape_uri), run(tape_uri)
    assert a["intents"] == b["intents"] and int(a["intents"]) > 100  # type: ignore[call-overload]
    assert a["intents_sha256"] == b["intents_sha256"]
    assert a["pnl_exact"] == b["pnl_exact"] and a["run_id"] != b["run_id"]


def test_columnar_and_record_paths_agree(tape_uri: str) -> None:
    assert run(tape_uri)["intents_sha256"] == run(tape_uri, columnar=False)["intents_sha256"]


@pytest.mark.slow
def test_in_two_processes(tape_uri: str) -> None:
    here = run(tape_uri)
    cmd = [sys.executable, "-m", "ticktape", "backtest", "ema_cross", "--tape", tape_uri, "--topics", TOPIC,
           "--param", "fast=5", "--param", "slow=20", "--no-out", "--json", "--no-progress"]
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    outs = [json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout)
            for _ in range(2)]
    assert outs[0]["intents_sha256"] == outs[1]["intents_sha256"] == here["intents_sha256"]
    assert outs[0]["pnl_exact"] == here["pnl_exact"]


@pytest.mark.slow
def test_one_vs_two_sweep_workers(tape_uri: str) -> None:
    grid = {"fast": ["3", "5"], "slow": ["20", "30"]}
    kw = {"tape": tape_uri, "topics": [TOPIC]}
    one = sweep("ema_cross", grid, workers=1, **kw)
    two = sweep("ema_cross", grid, workers=2, **kw)
    key = ("params", "intents_sha256", "pnl_exact", "fills", "intents", "max_drawdown")
    assert [[r[k] for k in key] for r in one] == [[r[k] for k in key] for r in two]
    alone = run(tape_uri)
    row = next(r for r in two if r["params"]["fast"] == 5 and r["params"]["slow"] == 20)
    assert row["intents_sha256"] == alone["intents_sha256"] and row["pnl_exact"] == alone["pnl_exact"]


def test_replay_from_the_manifest_reproduces_the_run(tape_uri: str, tmp_path: Path) -> None:
    out = f"file:{tmp_path / 'out'}"
    res = backtest("ema_cross", tape=tape_uri, topics=[TOPIC], params=PARAMS, out_tape=out,
                   start="2023-11-14T22:14:00Z", end="2023-11-14T22:40:00Z")
    tape = open_tape(out)
    started, finished = find_run(tape, res.run_id)
    assert finished is not None and finished.intents_sha256 == res.summary["intents_sha256"]
    assert started.from_ts is not None and started.to_ts is not None
    import hashlib

    h = hashlib.sha256()
    encode = default_codec().encode
    n = 0
    for step in replay_steps(tape, res.run_id):
        for intent in step.intents:
            h.update(encode(intent))
            n += 1
    assert n == finished.intents and h.hexdigest() == finished.intents_sha256
    # the recorded intents on the tape are the same bytes, in order
    recorded = [r.event for r in tape.read("orders.intent") if r.key == res.run_id]
    h2 = hashlib.sha256()
    for e in recorded:
        h2.update(encode(e))
    assert h2.hexdigest() == finished.intents_sha256
    tape.close()


def test_merge_order_is_ts_then_topic_order_then_partition_then_offset(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'm'}"
    tape = open_tape(uri)
    tape.create_topic("b", partitions=2)
    t = 1_700_000_000_000_000_000
    q = [Quote("sim", f"I{i % 3}", t + (i // 2), t + (i // 2), 1.0, 1.0, 2.0, 1.0) for i in range(12)]
    tr = [Trade("sim", f"I{i % 3}", t + (i // 3), t + (i // 3), 1.5, 1.0, "BUY", str(i)) for i in range(12)]
    tape.append("a", q)
    tape.append("b", tr)
    src = TapeSource(tape, ["b", "a"])
    merged = list(src)
    assert len(merged) == 24
    keys = []
    for e in merged:
        rank = 0 if type(e) is Trade else 1
        keys.append((e.ts_event, rank))
    assert keys == sorted(keys)  # by time, trades (topic "b", listed first) before quotes at equal times
    # within one topic and time: partition order, then offset
    b_parts = {p: [r.event for r in tape.read("b", p)] for p in range(2)}
    first_ts = [e for e in merged if type(e) is Trade and e.ts_event == t]
    expect = [e for p in range(2) for e in b_parts[p] if e.ts_event == t]
    assert first_ts == expect
    again = list(TapeSource(tape, ["b", "a"]))
    assert again == merged
    assert ListSource(merged).events == merged
    tape.close()


def test_fast_columnar_path_equals_the_record_path_across_sealed_segments(tmp_path: Path) -> None:
    from ticktape.demo import synthetic_betfair
    from ticktape.timeutil import parse_time

    tape = open_tape(f"file:{tmp_path / 'seg'}?segment_bytes=200000")
    trades = synthetic_trades(N)
    for i in range(0, N, 1_000):
        tape.append(TOPIC, trades[i:i + 1_000])
    books = synthetic_betfair()
    for i in range(0, len(books), 50):
        tape.append("md.betfair.market", books[i:i + 50])
    assert len(tape.segment_paths(TOPIC)) > 3 and len(tape.segment_paths("md.betfair.market")) >= 2
    for topic, n in ((TOPIC, N), ("md.betfair.market", len(books))):
        fast, slow = TapeSource(tape, [topic]), TapeSource(tape, [topic], columnar=False)
        assert list(fast) == list(slow) == [r.event for r in tape.read(topic)]
        assert len(list(fast)) == n
        assert list(TapeSource(tape, [topic])) == list(fast)  # second pass: from the Parquet copies
    start, end = parse_time("2023-11-14T22:20:00Z"), parse_time("2023-11-14T22:40:00Z")
    window = list(TapeSource(tape, [TOPIC], start=start, end=end))
    assert window == [t for t in trades if start <= t.ts_event < end] and len(window) == 12_000
    tape.close()
