"""Replay a live run from its journal: the same fold, from the first input, for audits and `ticktape load`.

`runner_for_live_run(tape, manifest)` gives an object with the backtest runner's replay surface
(`run`, `steps`, `on_intent`, `robot`, `state`), so `ticktape audit --run`, `ticktape replay`
and the analyzer treat a live run like a backtest. The inputs are the journal's, in journal
order, across every restart; snapshots are not used (a replay from the start also proves them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from robots.api import Intent, Robot
from robots.live.fold import RunFold
from robots.live.journal import Journal, JournalReplay
from robots.registry import get_robot
from robots.runner import RunStats, Step
from ticktape.domain import IntentDigest
from ticktape.events import Event, RunStarted
from ticktape.tape.base import Tape

__all__ = ["JournalSource", "LiveReplayRunner", "runner_for_live_run"]


class JournalSource:
    """A live run's inputs in journal order (iterating yields the events)."""

    def __init__(self, tape: Tape, stream: str) -> None:
        self.tape = tape
        self.stream = stream
        self.journal = Journal(tape, stream)
        self.topics: tuple[str, ...] = (self.journal.topic,)

    def __iter__(self) -> Iterator[Event]:
        replay = JournalReplay(self.tape)
        for offset, entry in self.journal.entries(0, 0):
            for rec in replay.records(entry, where=f"{self.journal.topic} offset {offset}"):
                yield rec.event

    def describe(self) -> str:
        return f"{self.tape.uri} {self.journal.topic}"

    def close(self) -> None:
        """Nothing to release (the tape belongs to the caller)."""


class LiveReplayRunner:
    """Re-runs a live run's fold over its journal (see the module docstring)."""

    def __init__(self, robot: Robot[Any, Any], run_id: str) -> None:
        self.robot = robot
        self.run_id = run_id
        self.fold = RunFold(robot, run_id)
        self.on_intent: Callable[[Intent], None] | None = None
        self.stats = RunStats()

    @property
    def state(self) -> Any:
        return self.fold.state

    def run(self, events: JournalSource) -> RunStats:
        """Fold every journaled input; intents go to `on_intent`; return the counters."""
        for _ in self.steps(events, states=False):
            pass
        return self.stats

    def steps(self, events: JournalSource, *, states: bool = True) -> Iterator[Step]:
        """Every step with the state JSON when it changed (None otherwise, or when `states` is False)."""
        fold = self.fold
        digest = IntentDigest()
        stats = self.stats
        sink = self.on_intent
        last = fold.state_json() if states else None
        for event in events:
            seq = fold.seq
            intents = fold.step(event)
            stats.events += 1
            if stats.first_ts is None:
                stats.first_ts = event.ts_event
            for intent in intents:
                stats.intents += 1
                digest.add(intent)
                if sink is not None:
                    sink(intent)
            changed = None
            if states:
                now = fold.state_json()
                changed = now if now != last else None
                last = now
            yield Step(seq, event, changed, tuple(intents))
        stats.robot_steps = stats.events
        stats.last_ts = fold.last_ts or None
        stats.intents_sha256 = digest.hexdigest()


def runner_for_live_run(tape: Tape, manifest: RunStarted) -> tuple[LiveReplayRunner, JournalSource]:
    """The replay runner and the journal source of a live run."""
    robot = get_robot(manifest.robot, json.loads(manifest.params), robot_id=manifest.robot_id)
    return LiveReplayRunner(robot, manifest.run_id), JournalSource(tape, manifest.run_id)
