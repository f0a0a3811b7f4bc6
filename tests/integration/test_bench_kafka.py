"""The Kafka piece of `python -m benchmarks peers` on a real broker: its figures function at a tiny size
gives sane numbers for both clients, and the benchmark's own command still prints its result lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import bench_kafka
from benchmarks.peers import pipeline

REPO = Path(__file__).resolve().parents[2]


def test_kafka_figures_at_a_tiny_size_for_both_clients(kafka_broker: str) -> None:
    got = bench_kafka.figures(kafka_broker, n=2_000, batch=500, repeat=1, seconds=0.3,
                              clients=pipeline.KAFKA_CLIENTS)
    assert set(got) == {"kafka+rdkafka", "kafka"}
    for scheme, f in got.items():
        assert set(f) == {"produce_events_per_s", "produce_events_per_client_cpu_s", "consume_events_per_s",
                          "consume_events_per_client_cpu_s", "latency_p50_ms", "latency_p99_ms", "latency_max_ms",
                          "latency_events", "latency_appends"}, scheme
        assert all(v > 0 for v in f.values()), (scheme, f)
        assert f["latency_events"] == 300 and f["latency_p50_ms"] <= f["latency_p99_ms"] <= f["latency_max_ms"]
    rows = pipeline.rows({"kafka": got})
    assert len(rows) == 6 and all(r["figure"] != "—" for r in rows)


def test_kafka_benchmark_command_prints_its_result_lines(kafka_broker: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_kafka", "--broker", kafka_broker, "--n", "1000",
                           "--batch", "500", "--repeat", "1", "--seconds", "0.2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [x["bench"] for x in lines] == [
        "kafka.produce[kafka+rdkafka]", "kafka.consume+decode[kafka+rdkafka]", "kafka.latency[kafka+rdkafka]",
        "kafka.produce[kafka]", "kafka.consume+decode[kafka]", "kafka.latency[kafka]", "machine"]
    assert list(lines[0]) == ["bench", "batch", "events_per_s", "events_per_client_cpu_s"]
    assert list(lines[1]) == ["bench", "events_per_s", "events_per_client_cpu_s"]
    assert list(lines[2]) == ["bench", "rate_per_s", "p50_ms", "p99_ms", "max_ms", "events", "appends"]
