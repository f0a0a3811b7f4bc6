"""Operator controls of live runs, with real processes on a file tape: SIGTERM cancels the open
orders (or keeps them), the watchdog cancels a dead runner's orders and lets it trade again
when it comes back, and `ticktape control pause|resume|flatten|kill` act on the venue side."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from robots.live.topics import EVENT_TOPIC, INTENT_TOPIC
from tests.live.harness import Proc, run_records, wait_for
from ticktape.events import Event, OrderAccepted, OrderCancelled, OrderFilled, OrderRejected, PlaceOrder, Quote, Trade
from ticktape.tape import Tape, open_tape

TOPIC = "md.sim.quote"
TS0 = 1_700_000_000_000_000_000


def quotes(n: int, *, start: int = 0, mid: float = 100.0, drift: float = 0.0) -> list[Quote]:
    """Quotes around `mid` (moving by `drift` per quote), one ms apart."""
    out = []
    for i in range(start, start + n):
        m = mid + drift * (i - start)
        ts = TS0 + i * 1_000_000
        out.append(Quote("sim", "XYZ", ts, ts, round(m - 0.05, 2), 10.0, round(m + 0.05, 2), 10.0))
    return out


def _ticktape(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ticktape", "--tape", uri, *args], capture_output=True, text=True,
                          timeout=120)


def _answers(tape: Tape, run_id: str, kind: type[Event]) -> list[Event]:
    return [e for e in run_records(tape, EVENT_TOPIC, run_id) if type(e) is kind]


def _runner(uri: str, tmp_path: Path, run_id: str, *extra: str) -> Proc:
    return Proc(f"runner-{run_id}", ["--tape", uri, "run", "market_maker", "--run-id", run_id,
                                     "--param", f"topic={TOPIC}", "--param", "half_spread_bps=50", *extra], tmp_path)


def _quoting(tape: Tape, runner: Proc, run_id: str, procs: list[Proc], n: int = 5) -> None:
    """Wait for the runner, feed `n` quotes, wait until its bid and ask rest at the venue."""
    wait_for("the runner", lambda: runner.said("live on"), 60, procs)
    tape.append(TOPIC, quotes(n))
    wait_for("two resting orders", lambda: len(_answers(tape, run_id, OrderAccepted)) == 2, 30, procs)


def _setup(tmp_path: Path) -> tuple[str, Tape]:
    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    tape.create_topic(TOPIC)
    return uri, tape


def test_sigterm_cancels_open_orders_with_the_inline_gateway(tmp_path: Path) -> None:
    uri, tape = _setup(tmp_path)
    runner = _runner(uri, tmp_path, "mm1")
    runner.start()
    try:
        _quoting(tape, runner, "mm1", [runner])
        assert runner.terminate() == 0, runner.tail()
        cancelled = {e.client_order_id for e in _answers(tape, "mm1", OrderCancelled)}  # type: ignore[attr-defined]
        placed = {e.client_order_id for e in run_records(tape, INTENT_TOPIC, "mm1") if type(e) is PlaceOrder}
        assert placed and cancelled == placed, (placed, cancelled)
        rows = [json.loads(line) for line in _ticktape(uri, "runs", "--json").stdout.splitlines()]
        assert [(r["run_id"], r["state"], r["open_orders"]) for r in rows] == [("mm1", "stopped", 0)]
        audit = _ticktape(uri, "audit", "--run", "mm1")
        assert audit.returncode == 0 and "audit ok" in audit.stdout, audit.stdout + audit.stderr
        # the analyzer shows a live run like a backtest
        db = str(tmp_path / "a.db")
        assert _ticktape(uri, "load", "--db", db).returncode == 0
        rows = _ticktape(uri, "sql", db, "SELECT run_id, mode FROM run_started").stdout
        assert "mm1" in rows and "live" in rows, rows
        report = _ticktape(uri, "report", "--db", db, "mm1", "--out", str(tmp_path / "r.html"))
        assert report.returncode == 0 and "mm1" in (tmp_path / "r.html").read_text(), report.stderr
    finally:
        if runner.alive():
            runner.kill9()


def test_keep_orders_leaves_them_resting(tmp_path: Path) -> None:
    uri, tape = _setup(tmp_path)
    runner = _runner(uri, tmp_path, "mm2", "--keep-orders")
    runner.start()
    try:
        _quoting(tape, runner, "mm2", [runner])
        assert runner.terminate() == 0, runner.tail()
        assert _answers(tape, "mm2", OrderCancelled) == []
        rows = [json.loads(line) for line in _ticktape(uri, "runs", "--json").stdout.splitlines()]
        assert [(r["state"], r["open_orders"]) for r in rows] == [("stopped", 2)]
    finally:
        if runner.alive():
            runner.kill9()


def test_watchdog_cancels_a_dead_runners_orders_and_lets_it_back(tmp_path: Path) -> None:
    uri, tape = _setup(tmp_path)
    gateway = Proc("gateway", ["--tape", uri, "gateway", "--topics", TOPIC, "--dead-after", "1.5"], tmp_path)
    runner = _runner(uri, tmp_path, "mm3", "--gateway", "external")
    procs = [gateway, runner]
    gateway.start()
    try:
        wait_for("the gateway", lambda: gateway.said("serving"), 60, procs)
        runner.start()
        _quoting(tape, runner, "mm3", procs)
        runner.kill9()
        wait_for("the watchdog to cancel both", lambda: len(_answers(tape, "mm3", OrderCancelled)) == 2, 30, procs)
        reasons = {e.reason for e in _answers(tape, "mm3", OrderCancelled)}  # type: ignore[attr-defined]
        assert all(r.startswith("watchdog: no heartbeat") for r in reasons), reasons
        rows = [json.loads(line) for line in _ticktape(uri, "runs", "--json", "--dead-after", "1").stdout.splitlines()]
        assert rows[0]["state"] == "dead"
        runner.start()  # restart: it learns of the cancels from its journal and the tape, quotes again
        wait_for("the runner back", lambda: runner.said("restarted"), 60, procs)
        tape.append(TOPIC, quotes(5, start=5, mid=101.0))
        wait_for("new orders accepted after the heartbeat returned",
                 lambda: len(_answers(tape, "mm3", OrderAccepted)) >= 3, 30, procs)
        assert not [e for e in _answers(tape, "mm3", OrderRejected)]
    finally:
        for p in procs:
            if p.alive():
                p.kill9()


def test_pause_resume_flatten_kill(tmp_path: Path) -> None:
    uri, tape = _setup(tmp_path)
    runner = _runner(uri, tmp_path, "mm4")
    runner.start()
    try:
        _quoting(tape, runner, "mm4", [runner], n=3)
        assert _ticktape(uri, "control", "pause", "mm4", "--reason", "lunch").returncode == 0
        time.sleep(0.5)
        # the mid jumps: the robot re-quotes, the venue side refuses while paused
        tape.append(TOPIC, quotes(3, start=3, mid=105.0))
        wait_for("a refusal while paused", lambda: any("paused for market_maker" in e.reason for e in _answers(
            tape, "mm4", OrderRejected)), 30, [runner])  # type: ignore[attr-defined]
        assert _ticktape(uri, "control", "resume", "mm4").returncode == 0
        time.sleep(0.5)
        # a trade through the resting bid (its re-quote was refused) fills it: the robot holds inventory
        ts = TS0 + 10 * 1_000_000
        tape.append(TOPIC, [Trade("sim", "XYZ", ts, ts, 99.0, 1.0, "SELL", "t1")])
        wait_for("a fill", lambda: len(_answers(tape, "mm4", OrderFilled)) >= 1, 30, [runner])
        assert _position(tape, "mm4") == 1.0
        assert _ticktape(uri, "control", "flatten", "mm4", "--reason", "risk").returncode == 0
        wait_for("flatten to close the position", lambda: _position(tape, "mm4") == 0.0, 30, [runner])
        assert {e.robot for e in _answers(tape, "mm4", OrderFilled)} == {"market_maker"}  # the robot sees them
        wait_for("flatten to cancel the resting ask", lambda: [e.reason for e in _answers(  # type: ignore[attr-defined]
            tape, "mm4", OrderCancelled)] == ["flatten: risk"], 30, [runner])
        assert _ticktape(uri, "control", "kill", "mm4").returncode == 0
        time.sleep(0.5)
        tape.append(TOPIC, quotes(3, start=11, mid=120.0))
        wait_for("a refusal after the kill", lambda: any("kill" in e.reason for e in _answers(
            tape, "mm4", OrderRejected)), 30, [runner])  # type: ignore[attr-defined]
        unknown = _ticktape(uri, "control", "pause", "nope")
        assert unknown.returncode != 0 and "no live run 'nope'" in unknown.stderr
        assert runner.terminate() == 0
    finally:
        if runner.alive():
            runner.kill9()


def _position(tape: Tape, run_id: str) -> float:
    pos = 0.0
    for e in _answers(tape, run_id, OrderFilled):
        pos += e.size if e.side == "BUY" else -e.size  # type: ignore[attr-defined]
    return round(pos, 9)


def test_two_runs_with_inline_gateways_share_one_file_tape(tmp_path: Path) -> None:
    """Both append to `orders.intent`, `orders.event` and `runs`: the file tape's shared appends take turns."""
    from tests.live.harness import wavy_trades

    uri = f"file:{tmp_path / 'tape'}"
    tape = open_tape(uri)
    tape.create_topic("md.binance.trade")
    runners = [Proc(f"runner-{rid}", ["--tape", uri, "run", "tests.live.bots:EveryNth", "--run-id", rid,
                                      "--param", f"n={n}"], tmp_path) for rid, n in (("a", 5), ("b", 7))]
    try:
        for r in runners:
            r.start()
        wait_for("both runners", lambda: all(r.said("live on") for r in runners), 60, runners)
        trades = wavy_trades(700)
        for i in range(0, 700, 50):
            tape.append("md.binance.trade", trades[i:i + 50])
            time.sleep(0.05)
        for rid, n in (("a", 5), ("b", 7)):
            wait_for(f"run {rid}'s answers", lambda rid=rid, n=n: len(_answers(tape, rid, OrderAccepted)) == 700 // n,
                     60, runners)
        for r in runners:
            assert r.terminate() == 0, r.tail()
        for rid in ("a", "b"):
            audit = _ticktape(uri, "audit", "--run", rid)
            assert audit.returncode == 0 and "audit ok" in audit.stdout, audit.stdout + audit.stderr
    finally:
        for r in runners:
            if r.alive():
                r.kill9()


def test_a_run_restarted_after_a_stop_is_watched_again(tmp_path: Path) -> None:
    uri, tape = _setup(tmp_path)
    gateway = Proc("gateway", ["--tape", uri, "gateway", "--topics", TOPIC, "--dead-after", "1.5"], tmp_path)
    runner = _runner(uri, tmp_path, "mm5", "--gateway", "external", "--keep-orders")
    procs = [gateway, runner]
    gateway.start()
    try:
        wait_for("the gateway", lambda: gateway.said("serving"), 60, procs)
        runner.start()
        _quoting(tape, runner, "mm5", procs)
        assert runner.terminate() == 0  # a clean stop, orders kept: RunFinished is on the tape
        runner.start()
        wait_for("the runner back", lambda: runner.said("restarted"), 60, procs)
        time.sleep(1.0)
        runner.kill9()
        wait_for("the watchdog to cancel both", lambda: len(_answers(tape, "mm5", OrderCancelled)) == 2, 30, procs)
    finally:
        for p in procs:
            if p.alive():
                p.kill9()
