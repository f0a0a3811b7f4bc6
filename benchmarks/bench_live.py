"""Live runner latency, the journal's cost, and restart time.

    python -m benchmarks.bench_live latency [--tape URI | --kafka] [--events N] [--rate R]
    python -m benchmarks.bench_live journal [--tape URI] [--events N]
    python -m benchmarks.bench_live restart [--events N] [--every K]

- `latency`: `ticktape run benchmarks.live_robot:EveryTrade --gateway inline` runs as its own
  process (runner + paper gateway threads); this process appends one trade every 1/R s (paced
  by the wall clock, the append time recorded) and follows `orders.intent` and `orders.event`
  with the runner's own follower (`LiveInputs`, the file tape polled every 0.5 ms). Per trade:
  append -> intent seen, append -> answer seen (ms, p50/p99/max after a 1,000-event warm-up).
  The observer's own follower is in the figures (up to one poll on the file tape).
- `journal`: the runner in this process (no gateway) with its `Journal.append` timed per batch:
  the journal's cost on the path, next to the append -> intent latency of the same run.
- `restart`: a run of `ema_cross` folds N trades (snapshot every K inputs), then a new runner with the same
  run id starts (latest snapshot + journal after it); also the full replay from the journal's
  start (what `ticktape audit --run` does).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import machine, report
from robots.live.inputs import LiveInputs
from robots.live.topics import EVENT_TOPIC, INTENT_TOPIC
from ticktape.events import OrderAccepted, OrderRejected, Trade
from ticktape.tape import open_tape

TOPIC = "md.bench.trade"
ROBOT = "benchmarks.live_robot:EveryTrade"
TS0 = 1_700_000_000_000_000_000
REPO = Path(__file__).resolve().parent.parent


def _trade(i: int) -> Trade:
    ts = TS0 + i * 1_000_000
    return Trade("binance", "BTCUSDT", ts, ts, 30_000.0 + (i % 50), 0.01, "BUY", str(i))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(_pct(values, 0.5), 3), "p99_ms": round(_pct(values, 0.99), 3),
            "max_ms": round(max(values), 3), "mean_ms": round(statistics.fmean(values), 3), "n": len(values)}


class Observer(threading.Thread):
    """Follows orders.intent and orders.event; records when each trade's intent and answer were seen."""

    def __init__(self, uri: str, tape: Any, *, trades: bool = False) -> None:
        super().__init__(daemon=True)
        topics = (INTENT_TOPIC, EVENT_TOPIC, TOPIC) if trades else (INTENT_TOPIC, EVENT_TOPIC)
        positions = {(t, p): end for t in topics for p, end in tape.end_offsets(t).items()}
        self.inputs = LiveInputs(uri, positions)
        self.trade_seen: dict[int, float] = {}  # the observer's own floor: the trade itself seen
        self.intent_seen: dict[int, float] = {}
        self.answer_seen: dict[int, float] = {}
        self.index_of: dict[str, int] = {}
        self.early: dict[str, float] = {}  # answers seen before their intent (another topic, polled later)
        self.stop = threading.Event()

    def run(self) -> None:
        self.inputs.start()
        while not self.stop.is_set():
            records = self.inputs.get(0.05)
            now = time.time_ns() / 1e9
            for rec in records:
                e = rec.event
                if rec.topic == TOPIC:
                    self.trade_seen.setdefault((e.ts_event - TS0) // 1_000_000, now)
                elif rec.topic == INTENT_TOPIC:
                    i = (e.ts_event - TS0) // 1_000_000
                    self.index_of[e.client_order_id] = i
                    self.intent_seen.setdefault(i, now)
                    if e.client_order_id in self.early:
                        self.answer_seen.setdefault(i, self.early.pop(e.client_order_id))
                elif type(e) in (OrderAccepted, OrderRejected):
                    i2 = self.index_of.get(e.client_order_id)
                    if i2 is not None:
                        self.answer_seen.setdefault(i2, now)
                    else:
                        self.early.setdefault(e.client_order_id, now)
        self.inputs.close()


def _feed(tape: Any, n: int, rate: float) -> list[float]:
    """Append trade i at start + i / rate (wall clock); return each append's perf_counter time."""
    sent = []
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / rate
        while True:
            left = target - time.perf_counter()
            if left <= 0:
                break
            time.sleep(left)
        tape.append(TOPIC, [_trade(i)], partition=0)
        sent.append(time.time_ns() / 1e9)
    return sent


@contextlib.contextmanager
def _kafka() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="bench-kafka-")
    script = [sys.executable, str(REPO / "scripts" / "kafka")]
    out = subprocess.run([*script, "start", "--dir", d], capture_output=True, text=True, check=True)
    try:
        yield f"kafka://{out.stdout.strip().splitlines()[-1]}"
    finally:
        subprocess.run([*script, "stop", "--dir", d], capture_output=True, check=False)


def _started(proc: subprocess.Popen[bytes], log: str, marker: str, what: str) -> None:
    deadline = time.monotonic() + 60
    while marker not in Path(log).read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {what} did not start: {Path(log).read_text()[-2000:]}")
        time.sleep(0.1)


def _journaled(tape: Any, stream: str, topic: str) -> dict[int, float]:
    """Offset of `topic` -> wall time (s) the fold of `stream` journaled it (the entry's `ts_recv`, taken
    when its loop step began: the record had reached the fold)."""
    out: dict[int, float] = {}
    journal = f"journal.{stream}"
    if tape.partitions(journal) == 0:
        return out
    for rec in tape.read(journal, 0):
        e = rec.event
        if e.topic == topic:
            for off in range(e.offset, e.offset + e.length):
                out[off] = e.ts_recv / 1e9
    return out


def _stages(tape: Any, run_id: str, gateway_stream: str, base: int) -> tuple[dict[int, float], dict[int, float]]:
    """Trade index -> when the runner journaled it; -> when the gateway journaled its intent."""
    runner = {off - base: t for off, t in _journaled(tape, run_id, TOPIC).items()}
    at_gateway = _journaled(tape, gateway_stream, INTENT_TOPIC)
    gateway: dict[int, float] = {}
    for p in range(tape.partitions(INTENT_TOPIC)):
        if p != 0:
            break  # the journal keys intents by offset of partition 0 only below; one partition here
        for rec in tape.read(INTENT_TOPIC, 0):
            if rec.key == run_id and rec.offset in at_gateway:
                gateway[(rec.event.ts_event - TS0) // 1_000_000] = at_gateway[rec.offset]
    return runner, gateway


def _pyspy(pid: int, seconds: float, out: str) -> subprocess.Popen[bytes]:
    """Sample `pid` with py-spy (raw collapsed stacks, GIL-holding samples only, every thread)."""
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "500", "-f", "raw",
                             "-g", "-t", "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def latency(uri: str, n: int, rate: float, warmup: int = 1000, dump: str | None = None, gateway: str = "inline",
            profile: str | None = None) -> None:
    """Trades in, intents and answers out; `gateway`: inline (runner + gateway threads, one process) or
    external (`ticktape gateway` in a second process)."""
    tape = open_tape(uri)
    for topic in (TOPIC, INTENT_TOPIC, EVENT_TOPIC):
        if tape.partitions(topic) == 0:
            tape.create_topic(topic)
    base = tape.end_offsets(TOPIC).get(0, 0)
    run_id = f"bench-{time.time_ns()}"
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        if gateway == "external":
            glog = tempfile.NamedTemporaryFile(prefix="bench-gw-", suffix=".log", delete=False)  # noqa: SIM115
            logs.append(glog.name)
            procs.append(subprocess.Popen([sys.executable, "-m", "ticktape", "--tape", uri, "gateway", "--topics",
                                           TOPIC], stdout=glog, stderr=glog))
            _started(procs[-1], glog.name, "serving live runs", "gateway")
        log = tempfile.NamedTemporaryFile(prefix="bench-live-", suffix=".log", delete=False)  # noqa: SIM115
        logs.append(log.name)
        procs.append(subprocess.Popen([sys.executable, "-m", "ticktape", "--tape", uri, "run", ROBOT, "--run-id",
                                       run_id, "--gateway", gateway, "--snapshot-seconds", "5"],
                                      stdout=log, stderr=log))
        _started(procs[-1], log.name, "live on", "runner")
        time.sleep(1.0)  # let the gateway's followers start too
        observer = Observer(uri, tape, trades=True)
        observer.start()
        time.sleep(0.5)
        spies = [_pyspy(p.pid, n / rate, f"{profile}.{i}.txt") for i, p in enumerate(procs)] if profile else []
        sent = _feed_from(tape, base, n, rate)
        deadline = time.monotonic() + 30
        while len(observer.answer_seen) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        observer.stop.set()
        for spy in spies:
            spy.wait(60)
        stream = f"gateway-paper-{run_id}" if gateway == "inline" else "gateway-paper"
        at_runner, at_gateway = _stages(tape, run_id, stream, 0)
        at_runner = {i - base: t for i, t in at_runner.items()}
        seen = {i - base: t for i, t in observer.trade_seen.items()}
        intent = {i - base: t for i, t in observer.intent_seen.items()}
        answer = {i - base: t for i, t in observer.answer_seen.items()}
        at_gateway = {i - base: t for i, t in at_gateway.items()}

        def ms(stage: dict[int, float]) -> list[float]:
            return [(stage[i] - sent[i]) * 1e3 for i in range(warmup, n) if i in stage]

        if dump:
            Path(dump).write_text("\n".join(
                " ".join([str(i)] + [f"{(st.get(i, 0) - sent[i]) * 1e3:.3f}"
                                     for st in (seen, at_runner, at_gateway, intent, answer)]) for i in range(n)))
        report("live_latency", tape=uri.split("://")[0].split(":")[0], gateway=gateway, rate_per_s=rate,
               events=n - warmup, answered=len(ms(answer)),
               append_to_intent=_summary(ms(intent)), append_to_answer=_summary(ms(answer)),
               observer_floor=_summary(ms(seen)), append_to_runner_journal=_summary(ms(at_runner)),
               append_to_gateway_journal=_summary(ms(at_gateway)), machine=machine())
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(30)
        tape.close()


def journal_cost(uri: str, n: int, rate: float) -> None:
    """In one process: time Journal.append per batch, next to the append -> intent latency."""
    from robots.live.journal import Journal
    from robots.live.runner import LiveRunner

    for skip in (False,):
        tape = open_tape(uri)
        topic_uri = uri
        if tape.partitions(TOPIC) == 0:
            tape.create_topic(TOPIC)
        runner = LiveRunner(ROBOT, tape=topic_uri, run_id=f"journal-{skip}-{time.time_ns()}")
        runner.start()
        durations: list[float] = []
        original = Journal.append

        def timed(self: Journal, entries: Any, _orig: Any = original, _skip: bool = skip,
                  _out: list[float] = durations) -> None:
            t0 = time.perf_counter()
            if not _skip:
                _orig(self, entries)
            _out.append((time.perf_counter() - t0) * 1e3)

        Journal.append = timed  # type: ignore[method-assign]
        observer = Observer(uri, tape)
        observer.start()
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        time.sleep(0.5)
        base = tape.end_offsets(TOPIC).get(0, 0)
        sent = _feed_from(tape, base, n, rate)
        time.sleep(1.0)
        stop.set()
        thread.join(10)
        Journal.append = original  # type: ignore[method-assign]
        observer.stop.set()
        to_intent = [(observer.intent_seen[base + i] - sent[i]) * 1e3 for i in range(n // 5, n)
                     if base + i in observer.intent_seen]
        report("live_journal", journal="skipped" if skip else "on", journal_append=_summary(durations),
               append_to_intent=_summary(to_intent), machine=machine())
        runner.close()
        tape.close()


def _feed_from(tape: Any, base: int, n: int, rate: float) -> list[float]:
    sent = []
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / rate
        while (left := target - time.perf_counter()) > 0:
            time.sleep(left)
        tape.append(TOPIC, [_trade(base + i)], partition=0)
        sent.append(time.time_ns() / 1e9)
    return sent


def restart(n: int, every: int) -> None:
    from robots.live.replay import JournalSource, LiveReplayRunner
    from robots.live.runner import LiveRunner
    from robots.registry import get_robot

    with tempfile.TemporaryDirectory() as d:
        uri = f"file:{d}/tape"
        tape = open_tape(uri)
        tape.create_topic(TOPIC)
        for i in range(0, n, 100_000):
            tape.append(TOPIC, [_trade(j) for j in range(i, min(n, i + 100_000))], partition=0)
        # ema_cross (it waits for each order's answer: a handful of open orders, as a real robot has)
        params = {"topic": TOPIC, "fast": "10", "slow": "50"}
        runner = LiveRunner("ema_cross", tape=uri, run_id="restart", params=params, snapshot_every=every,
                            snapshot_seconds=1e9)
        runner.start(from_start=True)
        t0 = time.perf_counter()
        batch: list[Any] = []
        for rec in tape.read(TOPIC):
            batch.append(rec)
            if len(batch) == 1000:
                runner.loop.step(batch)
                batch = []
        runner.loop.step(batch)
        fold_s = time.perf_counter() - t0
        runner.close()
        t0 = time.perf_counter()
        again = LiveRunner("ema_cross", tape=uri, run_id="restart", params=params, snapshot_every=every)
        again.start()
        restart_s = time.perf_counter() - t0
        replayed = again.loop.replayed
        again.close()
        t0 = time.perf_counter()
        replay = LiveReplayRunner(get_robot("ema_cross", params), "restart")
        replay.run(JournalSource(tape, "restart"))
        full_s = time.perf_counter() - t0
        report("live_restart", inputs=n, snapshot_every=every, fold_live_s=round(fold_s, 3),
               fold_inputs_per_s=round(n / fold_s), restart_s=round(restart_s, 3), replayed_after_snapshot=replayed,
               full_replay_s=round(full_s, 3), full_replay_inputs_per_s=round(n / full_s), machine=machine())


def main() -> None:
    sys.setswitchinterval(0.0005)  # the observer thread must not wait 5 ms for the feeder's GIL
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["latency", "journal", "restart"])
    parser.add_argument("--tape", default=None, help="tape URI (default: a temporary file tape)")
    parser.add_argument("--kafka", action="store_true", help="start a broker with scripts/kafka and use it")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--rate", type=float, default=1000.0, help="market events per second")
    parser.add_argument("--dump", default=None,
                        help="latency: write 'i seen runner_journal gateway_journal intent answer' (ms) per trade here")
    parser.add_argument("--gateway", choices=["inline", "external"], default="inline",
                        help="latency: the paper gateway in the runner's process, or `ticktape gateway` apart")
    parser.add_argument("--profile", default=None, help="latency: py-spy the runner (and gateway) to PREFIX.<i>.txt")
    parser.add_argument("--every", type=int, default=10_000, help="restart: snapshot every N inputs")
    args = parser.parse_args()
    if args.what == "restart":
        restart(args.events or 1_000_000, args.every)
        return
    with contextlib.ExitStack() as stack:
        uri = args.tape
        if uri is None and args.kafka:
            uri = stack.enter_context(_kafka())
        if uri is None:
            uri = f"file:{stack.enter_context(tempfile.TemporaryDirectory())}/tape"
        if args.what == "latency":
            latency(uri, args.events or 6000, args.rate, dump=args.dump, gateway=args.gateway, profile=args.profile)
        else:
            journal_cost(uri, args.events or 3000, args.rate)


if __name__ == "__main__":
    main()
