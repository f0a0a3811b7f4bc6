"""Audit a recorded run: recompute its intents from its recorded inputs, compare byte for byte.

The recorded intents are the run's records on `orders.intent` (key = run id), in tape order.
The run is rebuilt from its manifest (`robots.backtest.runner_for_run`) and re-run; each
recomputed intent's single-object encoding must equal the recorded one's (Avro binary encoding
is canonical, so decoding the stored record and encoding it again gives the bytes that were
written). The first mismatch, a missing or an extra intent is a divergence.

Two passes keep the passing case cheap: the first runs at backtest speed (`Runner.run`, the
intents checked as they are emitted, no state serialisation) and stops at the first
divergence; only then a second pass (`Runner.steps`) walks to that intent to report its input
position (step sequence number) and the robot's state just before it.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from analyzer.replay import build_runner
from ticktape.codec import default_codec, to_python
from ticktape.domain import IntentDigest
from ticktape.tape import TapeLike, using_tape
from ticktape.tape.base import Tape

INTENT_TOPIC = "orders.intent"


@dataclass
class Divergence:
    """The first place where recomputed and recorded intents differ."""

    index: int  # the intent's number in the run (0-based)
    input_offset: int | None  # the step that emitted the recomputed intent (None: none did)
    expected: Any  # the recorded intent (None: the recomputation emitted an extra one)
    actual: Any  # the recomputed intent (None: the recomputation ended without it)
    state_before: str | None  # the robot state JSON just before that step
    recorded_offset: int | None  # where the recorded intent is on orders.intent

    def describe(self) -> str:
        """Several lines for a human."""
        def show(x: Any) -> str:
            return json.dumps({"type": type(x).__name__, **to_python(x)}) if x is not None else "(none)"
        where = f"input position {self.input_offset}" if self.input_offset is not None else "after the last input"
        rec = f" (orders.intent offset {self.recorded_offset})" if self.recorded_offset is not None else ""
        return (f"first divergence at intent #{self.index}, {where}{rec}\n"
                f"  expected (recorded): {show(self.expected)}\n"
                f"  actual (recomputed): {show(self.actual)}\n"
                f"  robot state before:  {self.state_before}")


@dataclass
class AuditResult:
    """The verdict."""

    run_id: str
    recorded: int
    recomputed: int
    divergence: Divergence | None
    intents_sha256: str
    recorded_sha256: str | None
    seconds: float

    @property
    def identical(self) -> bool:
        return self.divergence is None and (self.recorded_sha256 in (None, "", self.intents_sha256))

    def line(self) -> str:
        """The one-line summary."""
        if self.identical:
            return (f"audit ok: run {self.run_id}: {self.recomputed} intents recomputed, identical byte for byte "
                    f"to the recorded ones (sha256 {self.intents_sha256}) in {self.seconds:.2f} s")
        if self.divergence is None:
            return (f"audit FAILED: run {self.run_id}: intents match but RunFinished.intents_sha256 "
                    f"{self.recorded_sha256} != recomputed {self.intents_sha256}")
        return f"audit FAILED: run {self.run_id}: {self.divergence.describe()}"


class _Diverged(Exception):
    """Stops the fast pass at the first mismatch."""


def recorded_intents(tape: Tape, run_id: str) -> list[tuple[int, Any]]:
    """(offset, intent) of a run's records on orders.intent, in tape order."""
    out: list[tuple[int, Any]] = []
    for p in range(tape.partitions(INTENT_TOPIC)):
        out.extend((r.offset, r.event) for r in tape.read(INTENT_TOPIC, p) if r.key == run_id)
    return out


def audit(tape: TapeLike, run_id: str, *, robot: str | None = None) -> AuditResult:
    """Recompute `run_id`'s intents and compare them with the recorded ones (see module doc).

    `tape` is a `Tape` or its URI (`ticktape.tape.using_tape`).
    """
    with using_tape(tape, existing=True) as t:
        return _audit(t, run_id, robot=robot)


def _audit(tape: Tape, run_id: str, *, robot: str | None) -> AuditResult:
    t0 = time.perf_counter()
    encode = default_codec().encode
    recorded = recorded_intents(tape, run_id)
    expected = [encode(e) for _, e in recorded]
    _, finished, runner, source = build_runner(tape, run_id, robot)
    digest = IntentDigest()
    count = 0
    mismatch: int | None = None

    def check(intent: Any) -> None:
        nonlocal count, mismatch
        data = digest.add(intent)
        if count >= len(expected) or data != expected[count]:
            mismatch = count
            raise _Diverged
        count += 1

    runner.on_intent = check
    with contextlib.suppress(_Diverged):  # the first mismatch ends the fast pass
        runner.run(source)
    if mismatch is None and count < len(expected):
        mismatch = count  # the recomputation ended before the recorded intents did
    divergence = None if mismatch is None else _locate(tape, run_id, robot, mismatch, recorded)
    return AuditResult(run_id, len(recorded), count if mismatch is None else mismatch, divergence,
                       digest.hexdigest(), finished.intents_sha256 if finished is not None else None,
                       time.perf_counter() - t0)


def _locate(tape: Tape, run_id: str, robot: str | None, index: int,
            recorded: list[tuple[int, Any]]) -> Divergence:
    """Second pass: walk the steps to intent #index; report its step and the state before it."""
    _, _, runner, source = build_runner(tape, run_id, robot)
    state = runner.robot.state_to_json(runner.state)
    seen = 0
    expected = recorded[index][1] if index < len(recorded) else None
    rec_offset = recorded[index][0] if index < len(recorded) else None
    for step in runner.steps(source):
        if seen + len(step.intents) > index:
            actual = step.intents[index - seen]
            return Divergence(index, step.seq, expected, actual, state, rec_offset)
        seen += len(step.intents)
        if step.state_json is not None:
            state = step.state_json
    return Divergence(index, None, expected, None, state, rec_offset)
