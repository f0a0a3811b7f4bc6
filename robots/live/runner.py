"""`ticktape run`: one robot, live on its topics, journaled, snapshotted, restartable.

A `LiveRunner` follows the robot's subscribed topics, the run's answers on `orders.event`
(key = run id) and operator commands on `controls` (target = run id, robot id or `*`), journals
each input before folding it (`robots.live.engine`), writes the intents to `orders.intent`
(key = run id) and a heartbeat every second to `heartbeat.<run id>`. Restarted with the same
run id it resumes from its latest snapshot and journal: intents are re-derived, never re-sent.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from robots.api import Robot, RobotError
from robots.execution import TapeExecution
from robots.live.engine import LiveLoop, Output, append_to, open_live_tape
from robots.live.fold import RunFold, stop_control
from robots.live.real_venues import is_real_venue
from robots.live.snapshots import SnapshotStore
from robots.live.topics import CONTROLS_TOPIC, EVENT_TOPIC, INTENT_TOPIC, RUNS_TOPIC, heartbeat_topic
from robots.registry import get_robot
from robots.sources import robot_topics
from robots.venues import venue_kind, venue_names
from ticktape import code_version
from ticktape.domain import IntentDigest
from ticktape.events import Control, CustomData, Event, RunFinished, RunStarted
from ticktape.tape import Tape
from ticktape.tape.base import Record

__all__ = ["LiveRunner", "RunnerFold", "read_manifest"]

log = logging.getLogger("ticktape.run")


class RunnerFold:
    """The `Fold` of a live run: inputs -> `RunFold` -> intents on `orders.intent`."""

    def __init__(self, robot: Robot[Any, Any], run_id: str) -> None:
        self.run = RunFold(robot, run_id)
        self.run_id = run_id
        self.execution = TapeExecution(INTENT_TOPIC, run_id)
        self._targets = frozenset((run_id, robot.robot_id, "*", ""))

    @property
    def seq(self) -> int:
        return self.run.seq

    @property
    def last_ts(self) -> int:
        return self.run.last_ts

    def accept(self, record: Record) -> bool:
        topic = record.topic
        if topic == EVENT_TOPIC:
            return record.key == self.run_id
        if topic == CONTROLS_TOPIC:
            event = record.event
            return type(event) is Control and event.target in self._targets
        return True

    def fold(self, record: Record) -> list[Output]:
        execution = self.execution
        for intent in self.run.step(record.event):
            execution.submit(intent, intent.ts_event)  # answers come back as inputs from orders.event
        return execution.take()

    def due(self, now: int) -> list[Event]:
        if not self.run.timers:
            return []
        return self.run.due_timers(now)

    def snapshot(self) -> tuple[str, str]:
        return self.run.state_json(), self.run.engine_json()

    def restore(self, state_json: str, engine_json: str) -> None:
        self.run.restore(state_json, engine_json)

    def recorded_outputs(self, tape: Tape, since: dict[str, dict[int, int]]) -> Iterable[Output]:
        return recorded(tape, INTENT_TOPIC, self.run_id, since.get(INTENT_TOPIC, {}))

    def output_topics(self) -> Sequence[str]:
        return (INTENT_TOPIC,)


def recorded(tape: Tape, topic: str, key: str, since: Mapping[int, int]) -> Iterable[Output]:
    """Records of `topic` keyed `key`, from offsets `since` (partition -> offset; default 0)."""
    for p in range(tape.partitions(topic)):
        for rec in tape.read(topic, p, from_offset=since.get(p, 0)):
            if rec.key == key:
                yield topic, key, rec.event


def read_manifest(tape: Tape, run_id: str) -> RunStarted | None:
    """The first `RunStarted` of `run_id` on `runs`, or None."""
    for p in range(tape.partitions(RUNS_TOPIC)):
        for rec in tape.read(RUNS_TOPIC, p):
            if rec.key == run_id and type(rec.event) is RunStarted:
                return rec.event
    return None


class LiveRunner:
    """One live run of one robot (see the module docstring). `start`, `run`, then `stop`."""

    def __init__(self, robot: str, *, tape: str, run_id: str | None = None, params: Mapping[str, object] | None = None,
                 robot_id: str | None = None, controls: Mapping[str, Any] | None = None, venue: str = "paper",
                 gateway: str = "external",
                 store: SnapshotStore | None = None, snapshot_every: int = 10_000, snapshot_seconds: float = 30.0,
                 heartbeat_seconds: float = 1.0, allow_impure: bool = False, poll: float = 0.0005,
                 topics: Sequence[str] | None = None) -> None:
        self.robot_name = robot
        self.uri = tape
        self.bot = get_robot(robot, params, robot_id=robot_id, allow_impure=allow_impure)
        self.run_id = run_id or f"{self.bot.robot_id}-live-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        self.controls = dict(controls or {})
        if is_real_venue(venue):
            if gateway != "external":
                raise RobotError(f"--venue {venue}: a real venue is served by `ticktape gateway --venue {venue}` "
                                 "(use --gateway external): credentials stay in the gateway's process")
        elif venue_kind(venue).simulated:
            raise RobotError(f"--venue {venue}: a simulated venue is for backtests; a live run needs a live venue "
                             f"({', '.join(n for n in venue_names() if not venue_kind(n).simulated)})")
        self.venue = venue
        self.gateway = gateway
        self.tape = open_live_tape(tape)
        self.heartbeat_seconds = heartbeat_seconds
        self._last_beat = 0.0
        self.topics = self._input_topics(topics)
        if not self.topics:
            raise RobotError(f"robot {robot!r} subscribes to no topics; a live run needs some")
        for topic in (INTENT_TOPIC, EVENT_TOPIC, CONTROLS_TOPIC, RUNS_TOPIC, heartbeat_topic(self.run_id)):
            if self.tape.partitions(topic) == 0:
                self.tape.create_topic(topic)
        if store is None:
            from robots.live.snapshots import TapeSnapshotStore

            store = TapeSnapshotStore(self.tape)
        self.fold = RunnerFold(self.bot, self.run_id)
        self.loop = LiveLoop(self.tape, tape, self.run_id, self.fold, (*self.topics, EVENT_TOPIC, CONTROLS_TOPIC),
                             store=store, snapshot_every=snapshot_every, snapshot_seconds=snapshot_seconds, poll=poll)
        self.restarted = False
        self.cancelled = 0  # open orders the stop cancelled

    def _input_topics(self, named: Sequence[str] | None) -> tuple[str, ...]:
        """The topics this run follows: `named` (`--topics`); on a restart, the ones its first start
        recorded (the tape may have gained topics since, and a run must not change its inputs); on a
        first start, the robot's subscription fitted to the tape (`robots.sources.robot_topics`)."""
        if named:
            return tuple(named)
        existing = read_manifest(self.tape, self.run_id)
        if existing is not None and existing.mode == "live":
            return tuple(existing.topics)
        return robot_topics(self.tape, self.bot, flag="--topics")

    # ------------------------------------------------------------------ lifecycle
    def manifest(self) -> RunStarted:
        """This run's `RunStarted`."""
        now = time.time_ns()  # a live run starts now, in event time too
        return RunStarted(self.run_id, self.robot_name, self.bot.robot_id, now, now, self.bot.params.to_json(),
                          self.uri, self.topics, None, None, "{}",
                          json.dumps({"name": self.venue, "gateway": self.gateway, "settings": {}}, sort_keys=True),
                          json.dumps(self.controls, sort_keys=True, separators=(",", ":")), "live", code_version())

    def start(self, *, from_start: bool = False) -> None:
        """Write the manifest (first start) or check it (restart), then recover from snapshot + journal."""
        existing = read_manifest(self.tape, self.run_id)
        if existing is None:
            append_to(self.tape, RUNS_TOPIC, [self.manifest()], [self.run_id])
        else:
            if existing.mode != "live":
                raise RobotError(f"run id {self.run_id!r} is a {existing.mode} run; pick another --run-id")
            mine = self.manifest()
            if tuple(existing.topics) != mine.topics:
                raise RobotError(f"run {self.run_id} was started on topics {', '.join(existing.topics)}; restart it "
                                 f"on the same topics, or start a new run id")
            if (existing.robot, existing.robot_id, existing.params) != (mine.robot, mine.robot_id, mine.params):
                raise RobotError(f"run {self.run_id} was started as {existing.robot} ({existing.robot_id}) with "
                                 f"params {existing.params}; restart it with the same robot and params")
            if existing.controls != mine.controls:
                raise RobotError(f"run {self.run_id} was started with controls {existing.controls} (the gateway "
                                 f"applies those); restart it with the same controls, or start a new run id")
            self.restarted = True
        t0 = time.perf_counter()
        self.loop.recover(start="earliest" if from_start else "latest")
        if self.loop.replayed:
            log.info("run %s: replayed %d journaled inputs in %.3f s", self.run_id, self.loop.replayed,
                     time.perf_counter() - t0)
        if self.restarted:  # the gateway watches a restarted run again (it may have seen it finish)
            now = time.time_ns()
            append_to(self.tape, CONTROLS_TOPIC, [Control(self.run_id, now, now, "RESUME", "restart", None,
                                                          "the run restarted", "ticktape run")], [self.run_id])
        self.beat("running", force=True)

    def run(self, stop: threading.Event) -> None:
        """Follow the inputs until `stop` is set (signal handlers set it)."""
        loop = self.loop
        # what the venue side did while this run was down (answers, controls) comes before new market data
        loop.start_inputs(first=(EVENT_TOPIC, CONTROLS_TOPIC))
        reader = loop.inputs_reader
        assert reader is not None
        while not stop.is_set():
            timeout = 0.05
            if self.fold.run.timers:
                wait = (self.fold.run.timers[0][0] - time.time_ns()) / 1e9
                timeout = min(timeout, max(wait, 0.0))
            loop.step(reader.get(timeout))
            self.beat("running")

    def stop(self, *, keep_orders: bool = False, reason: str = "stop requested", drain_seconds: float = 3.0) -> None:
        """Stop taking inputs; journal the stop (cancels of the open orders unless `keep_orders`); fold the
        venue's answers to them for up to `drain_seconds`; snapshot; write the last heartbeat and RunFinished.

        While draining only this run's answers are folded: market data that arrived meanwhile is
        left unread (not journaled, so a restart reads it).
        """
        loop = self.loop
        self.cancelled = 0 if keep_orders else len(self.fold.run.open)
        stop_event = stop_control(self.run_id, self.fold.last_ts, time.time_ns(), keep_orders=keep_orders,
                                  reason=reason)
        loop.step([], [stop_event])
        reader = loop.inputs_reader
        deadline = time.monotonic() + drain_seconds
        while reader is not None and self.fold.run.open and not keep_orders and time.monotonic() < deadline:
            answers = [r for r in reader.get(0.02) if r.topic == EVENT_TOPIC]
            loop.step(answers)
        loop.close()
        loop.snapshot()
        self.beat("stopped", force=True)
        digest, count = intents_digest(self.tape, self.run_id)
        left = len(self.fold.run.open)
        if left and not keep_orders:
            log.warning("run %s: %d orders still open after %.1f s (no gateway answering?)", self.run_id, left,
                        drain_seconds)
        summary = {"run_id": self.run_id, "robot": self.robot_name, "mode": "live", "inputs": self.fold.seq,
                   "open_orders_left": left, "reason": reason}
        append_to(self.tape, RUNS_TOPIC, [RunFinished(self.run_id, self.fold.last_ts, time.time_ns(), self.fold.seq,
                                                      count, digest, json.dumps(summary, sort_keys=True))],
                  [self.run_id])

    def close(self) -> None:
        """Release the tape."""
        self.loop.close()
        self.tape.close()

    def beat(self, status: str, *, force: bool = False) -> None:
        """Append a heartbeat (at most every `heartbeat_seconds` unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_beat < self.heartbeat_seconds:
            return
        self._last_beat = now
        run = self.fold.run
        payload = json.dumps({"status": status, "inputs": run.seq, "open_orders": len(run.open),
                              "last_input_ts": run.last_ts, "pid": os.getpid()}, sort_keys=True)
        self.tape.append(heartbeat_topic(self.run_id),
                         [CustomData("heartbeat", self.run_id, run.last_ts or time.time_ns(), time.time_ns(),
                                     payload)],
                         keys=[self.run_id], partition=0)


def intents_digest(tape: Tape, run_id: str) -> tuple[str, int]:
    """sha256 over the single-object encoding of every recorded intent of the run, in tape order."""
    digest = IntentDigest()
    for _, _, event in recorded(tape, INTENT_TOPIC, run_id, {}):
        digest.add(event)
    return digest.hexdigest(), digest.count
