"""Kafka tape: produce and consume+decode throughput per client, and end-to-end latency.

    python -m benchmarks.bench_kafka [--broker HOST:PORT] [--n 200000] [--batch 10000]

Without --broker (or $TICKTAPE_KAFKA) a broker is started with scripts/kafka in a temporary
directory and stopped at the end. One process: the producer and the consumer run in it.

- produce: `tape.append` of N Trades in batches (acks=all, idempotent, each append waits for
  its acknowledgements), on a fresh topic, best of `--repeat`;
- consume+decode: `tape.read` of the whole topic from a fresh tape handle (decoded `Record`s);
- latency: events are due at 1k/s for `--seconds`; a producer thread appends whatever is due
  (one event, or the few that fell due while the previous append was being acknowledged) and
  the consumer follows the partition; latency = time the consumer got the event - time it was
  due. p50/p99/max over all events.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from benchmarks.common import machine, report
from ticktape.demo import synthetic_trades
from ticktape.events import Trade
from ticktape.tape import open_tape

REPO = Path(__file__).resolve().parent.parent


BROKER_PID: int | None = None  # set when this benchmark started the broker: its CPU is measured too


def broker_cpu() -> float:
    """CPU seconds the broker's JVM has used so far (0 when the broker is not ours)."""
    if BROKER_PID is None:
        return 0.0
    fields = Path(f"/proc/{BROKER_PID}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Rates:
    """Best wall-clock rate, and the rate per CPU-second of this (client) process.

    The second says what the client costs whatever else the machine is doing (a shared
    2-core VM: the broker's JVM and other processes compete for the same cores).
    """

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.broker = 0.0

    def add(self, n: int, wall_s: float, cpu_s: float, broker_s: float) -> None:
        self.wall = max(self.wall, n / wall_s)
        self.cpu = max(self.cpu, n / cpu_s)
        self.broker = max(self.broker, n / broker_s) if broker_s else 0.0

    def figures(self) -> dict[str, int]:
        """The rates as the result line names them (the broker's only when it is ours)."""
        broker = {"events_per_broker_cpu_s": round(self.broker)} if self.broker else {}
        return {"events_per_s": round(self.wall), "events_per_client_cpu_s": round(self.cpu), **broker}


def produce_rate(uri: str, events: list[Trade], batch: int, repeat: int) -> tuple[Rates, str]:
    """Rates of `repeat` runs, each on a fresh topic; returns (rates, last topic)."""
    rates = Rates()
    topic = ""
    tape = open_tape(uri)
    tape.append(f"bench.warmup.{uuid.uuid4().hex[:8]}", events[:batch])  # connect, metadata
    for _ in range(repeat):
        topic = f"bench.{uuid.uuid4().hex[:10]}"
        tape.create_topic(topic, 1)
        t0, c0, b0 = time.perf_counter(), time.process_time(), broker_cpu()
        for i in range(0, len(events), batch):
            tape.append(topic, events[i:i + batch])
        rates.add(len(events), time.perf_counter() - t0, time.process_time() - c0, broker_cpu() - b0)
    tape.close()
    return rates, topic


def consume_rate(uri: str, topic: str, n: int, repeat: int) -> Rates:
    """Rates reading (and decoding) the whole topic."""
    rates = Rates()
    for _ in range(repeat):
        tape = open_tape(uri)
        tape.partitions(topic)  # metadata, outside the timing
        t0, c0, b0 = time.perf_counter(), time.process_time(), broker_cpu()
        count = sum(1 for _ in tape.read(topic))
        rates.add(count, time.perf_counter() - t0, time.process_time() - c0, broker_cpu() - b0)
        tape.close()
        assert count == n, f"read {count} of {n}"
    return rates


def latency(uri: str, seconds: float, rate: int = 1000) -> dict[str, float]:
    """Producer -> consumer latency (ms) with events due at `rate`/s."""
    topic = f"bench.latency.{uuid.uuid4().hex[:8]}"
    n = int(seconds * rate)
    events = synthetic_trades(n)
    writer, reader = open_tape(uri), open_tape(uri)
    writer.create_topic(topic, 1)
    writer.append(f"{topic}.warmup", events[:10])
    due = [0] * n
    got = [0] * n
    start = time.perf_counter_ns() + 200_000_000
    for i in range(n):
        due[i] = start + i * 1_000_000_000 // rate
    appends = 0

    def produce() -> None:
        nonlocal appends
        sent = 0
        while sent < n:
            now = time.perf_counter_ns()
            if due[sent] > now:
                time.sleep((due[sent] - now) / 1e9)
                continue
            upto = sent
            while upto < n and due[upto] <= now:
                upto += 1
            writer.append(topic, events[sent:upto])
            appends += 1
            sent = upto

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    for i, _ in enumerate(reader.read(topic, 0, follow=True, limit=n, poll_interval=0.001)):
        got[i] = time.perf_counter_ns()
    thread.join()
    writer.close()
    reader.close()
    lat = sorted((g - d) / 1e6 for g, d in zip(got, due, strict=True))
    return {"p50_ms": round(statistics.median(lat), 2), "p99_ms": round(lat[int(0.99 * (n - 1))], 2),
            "max_ms": round(lat[-1], 2), "events": n, "appends": appends}


def missing_prerequisite() -> str | None:
    """Why `scripts/kafka` cannot start a broker here, or None (as the test fixtures decide it)."""
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "Java 17+ is not installed (needed to run the Kafka broker); give a broker instead"
    cache = Path(os.environ.get("TICKTAPE_KAFKA_CACHE") or REPO / ".cache" / "kafka")
    if not any(cache.glob("*/.complete")) and not shutil.which("mvn"):
        return "Maven is not installed and no Kafka jars are cached (scripts/kafka fetch needs mvn)"
    return None


def start_broker(run_dir: Path) -> str:
    """Start a broker with `scripts/kafka` in `run_dir`; its HOST:PORT."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "kafka"), "start", "--dir", str(run_dir)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/kafka start failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def stop_broker(run_dir: Path) -> None:
    """Stop the broker `start_broker` started in `run_dir` and remove the directory."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "kafka"), "stop", "--dir", str(run_dir)],
                   check=False, capture_output=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def figures(broker: str, n: int = 200_000, batch: int = 10_000, repeat: int = 3, seconds: float = 10.0,
            clients: tuple[str, ...] = ("kafka+rdkafka", "kafka")) -> dict[str, dict[str, float]]:
    """Per client scheme: produce and consume+decode rates of `n` Trades, and latency at 1k events/s."""
    events = synthetic_trades(n)
    out: dict[str, dict[str, float]] = {}
    for scheme in clients:
        uri = f"{scheme}://{broker}"
        rates, topic = produce_rate(uri, events, batch, repeat)
        consumed = consume_rate(uri, topic, n, repeat)
        out[scheme] = {**{f"produce_{k}": v for k, v in rates.figures().items()},
                       **{f"consume_{k}": v for k, v in consumed.figures().items()},
                       **{f"latency_{k}": v for k, v in latency(uri, seconds).items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", default=os.environ.get("TICKTAPE_KAFKA"), help="HOST:PORT (default: start one)")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of the latency run")
    ap.add_argument("--clients", default="kafka+rdkafka,kafka")
    args = ap.parse_args()
    run_dir = None
    broker = args.broker
    if not broker:
        run_dir = Path(tempfile.mkdtemp(prefix="ticktape-bench-kafka-"))
        broker = start_broker(run_dir)
        global BROKER_PID
        BROKER_PID = int((run_dir / "kafka.pid").read_text())
    try:
        got = figures(broker, args.n, args.batch, args.repeat, args.seconds, tuple(args.clients.split(",")))
        for scheme, f in got.items():
            report(f"kafka.produce[{scheme}]", batch=args.batch,
                   **{k.removeprefix("produce_"): v for k, v in f.items() if k.startswith("produce_")})
            report(f"kafka.consume+decode[{scheme}]",
                   **{k.removeprefix("consume_"): v for k, v in f.items() if k.startswith("consume_")})
            report(f"kafka.latency[{scheme}]", rate_per_s=1000,
                   **{k.removeprefix("latency_"): v for k, v in f.items() if k.startswith("latency_")})
        report("machine", machine=machine(), load_average=os.getloadavg())
    finally:
        if run_dir is not None:
            stop_broker(run_dir)


if __name__ == "__main__":
    main()
