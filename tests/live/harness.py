"""Processes and checks the live-run tests share: `ticktape run` / `ticktape gateway` as real
subprocesses (killed with SIGKILL, stopped with SIGTERM), a feeder appending market data at
speed, and the invariants a crash must never break."""

from __future__ import annotations

import collections
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from robots.live.replay import JournalSource, LiveReplayRunner
from robots.live.runner import read_manifest
from robots.live.topics import EVENT_TOPIC, INTENT_TOPIC, journal_topic
from robots.registry import get_robot
from ticktape.codec import default_codec
from ticktape.events import Event, OrderAccepted, OrderFilled, OrderRejected, PlaceOrder, RunSnapshot, Trade
from ticktape.tape import Tape, open_tape

TS0 = 1_700_000_000_000_000_000


def wavy_trades(n: int, *, start: int = 0, instrument: str = "BTCUSDT") -> list[Trade]:
    """Trades whose price swings (a sine plus a slower one), so an EMA cross robot trades often."""
    out = []
    for i in range(start, start + n):
        ts = TS0 + i * 1_000_000
        price = 30_000.0 + 50 * math.sin(i / 9) + 20 * math.sin(i / 37)
        out.append(Trade("binance", instrument, ts, ts, round(price, 2), 0.01, "BUY" if i % 2 else "SELL", str(i)))
    return out


class Proc:
    """One `python -m ticktape ...` process with its output in a log file."""

    def __init__(self, name: str, args: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.env = dict(env or {})
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log, "ab") as fh:
            fh.write(f"\n=== start {self.starts} ===\n".encode())
            env = dict(os.environ, TICKTAPE_LOG_LEVEL="info", **self.env)
            self.proc = subprocess.Popen([sys.executable, "-m", "ticktape", *self.args], stdout=fh,
                                         stderr=subprocess.STDOUT, env=env)
        self.starts += 1

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def said(self, text: str) -> bool:
        """Whether the current start's output contains `text` (e.g. its ready line)."""
        log = self.log.read_text(errors="replace")
        return text in log.rsplit(f"=== start {self.starts - 1} ===", 1)[-1]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Feeder(threading.Thread):
    """Appends `events` to `topic` in small batches at a steady pace."""

    def __init__(self, uri: str, topic: str, events: list[Event], *, batch: int = 20, pace: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.uri, self.topic, self.events, self.batch, self.pace = uri, topic, events, batch, pace
        self.error: BaseException | None = None
        self.sent = 0

    def run(self) -> None:
        try:
            tape = open_tape(self.uri)
            try:
                for i in range(0, len(self.events), self.batch):
                    chunk = self.events[i:i + self.batch]
                    tape.append(self.topic, chunk, partition=0)
                    self.sent += len(chunk)
                    time.sleep(self.pace)
            finally:
                tape.close()
        except BaseException as exc:
            self.error = exc


def wait_for(what: str, check: Callable[[], bool], timeout: float, procs: Sequence[Proc] = ()) -> None:
    """Poll `check` until true; fail naming `what` (with the processes' logs) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in procs)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def journal_covers(tape: Tape, stream: str, topic: str, partition: int, end: int) -> bool:
    """Whether `stream`'s journal has referenced `topic`/`partition` up to `end`."""
    reached = 0
    for rec in tape.read(journal_topic(stream), 0):
        e = rec.event
        if e.topic == topic and e.partition == partition:
            reached = max(reached, e.offset + e.length)
    return reached >= end


def referenced(tape: Tape, stream: str, topic: str) -> list[int]:
    """Every offset of `topic` partition 0 the journal references, in journal order (skipping duplicate entries)."""
    from robots.live.journal import Journal

    out: list[int] = []
    for _, e in Journal(tape, stream).entries(0, 0):
        if e.topic == topic and e.length:
            out.extend(range(e.offset, e.offset + e.length))
    return out


def run_records(tape: Tape, topic: str, run_id: str) -> list[Event]:
    """Distinct records of `run_id` on `topic`, in tape order (exact second copies from retried appends dropped)."""
    encode = default_codec().encode
    seen: set[bytes] = set()
    out = []
    for p in range(tape.partitions(topic)):
        for rec in tape.read(topic, p):
            if rec.key == run_id:
                data = encode(rec.event)
                if data not in seen:
                    seen.add(data)
                    out.append(rec.event)
    return out


def check_run(tape: Tape, run_id: str) -> dict[str, Any]:
    """The invariants of a live run after any number of crashes; returns figures for the test's message."""
    intents = run_records(tape, INTENT_TOPIC, run_id)
    answers = run_records(tape, EVENT_TOPIC, run_id)
    places = [i for i in intents if type(i) is PlaceOrder]
    coids = [p.client_order_id for p in places]
    dup = [c for c, n in collections.Counter(coids).items() if n > 1]
    assert not dup, f"client order ids derived twice with different contents: {dup[:5]}"
    # The place's verdict: its acceptance, or its rejection. A rejection after the acceptance is of a
    # later cancel or replace (a cancel that crossed the order's last fill is refused: nothing is open).
    accepted: set[str] = set()
    verdicts: collections.Counter[str] = collections.Counter()
    for a in answers:
        if type(a) is OrderAccepted or (type(a) is OrderRejected and a.client_order_id not in accepted):
            verdicts[a.client_order_id] += 1
            if type(a) is OrderAccepted:
                accepted.add(a.client_order_id)
    twice = [c for c, n in verdicts.items() if n > 1]
    assert not twice, f"the venue saw these client order ids more than once: {twice[:5]}"
    unanswered = [c for c in coids if verdicts[c] == 0]
    assert not unanswered, f"intents lost (never answered by the venue): {unanswered[:5]}"
    assert all(len(c) <= 32 for c in coids), "client order ids must fit Betfair's 32 characters"
    # The final state equals that of one uninterrupted fold over the whole journal.
    manifest = read_manifest(tape, run_id)
    assert manifest is not None
    robot = get_robot(manifest.robot, json.loads(manifest.params), robot_id=manifest.robot_id)
    replay = LiveReplayRunner(robot, run_id)
    replay.run(JournalSource(tape, run_id))
    snapshots = list(tape.read(f"snapshots.{run_id}", 0))
    last = snapshots[-1].event
    assert type(last) is RunSnapshot
    assert last.state == robot.state_to_json(replay.state), "the state after restarts differs from one fold"
    fills = [a for a in answers if type(a) is OrderFilled]
    kinds = collections.Counter(type(a).__name__ for a in answers)
    return {"intents": len(intents), "places": len(places), "answers": dict(kinds), "fills": len(fills),
            "state": last.state, "inputs": replay.fold.seq}


def start_gateway_and_runner(gateway: Proc, runner: Proc) -> None:
    """Start the gateway, then the runner, each once it is ready (a first start reads from then on)."""
    gateway.start()
    wait_for("the gateway to start", lambda: gateway.said("serving"), 60, (gateway, runner))
    runner.start()
    wait_for("the runner to start", lambda: runner.said("live on"), 60, (gateway, runner))


def kill_all(procs: Sequence[Proc]) -> None:
    """SIGKILL whatever is still running (a test's last word)."""
    for p in procs:
        if p.alive():
            p.kill9()


def maybe_kill9_and_restart(proc: Proc, rng: random.Random, chance: float = 0.25) -> bool:
    """With probability `chance`: SIGKILL `proc`, wait a moment, start it again (True if it did)."""
    if rng.random() >= chance:
        return False
    proc.kill9()
    time.sleep(rng.uniform(0.0, 0.3))
    proc.start()
    return True
