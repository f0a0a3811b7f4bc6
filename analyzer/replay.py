"""Replay a recorded run into DuckDB: the robot's state step by step and its recomputed intents.

`replay(tape, run_id, con)` rebuilds the run from its `RunStarted` manifest (robot, params,
venue, controls and the exact input offsets; see `robots.backtest.runner_for_run`), drives it
through `Runner.steps`, and writes

- `robot_state(run, input_offset, ts_event, event_type, intents, state)`: the state as JSON
  after every step that changed it and after every step that emitted intents (changed or
  not); with `every=N` instead only every N steps and at each intent (far fewer rows for a
  robot whose state changes at every input; a state between two rows is then the earlier
  row's, exactly right only at those steps); `input_offset = -1` holds the initial state;
- `replay_intents(run, input_offset, k, type, client_order_id, instrument, side, price, size,
  ts_event, intent JSON, encoded BLOB)`: every recomputed intent, keyed by its step.

`input_offset` is the runner's step sequence number (inputs and venue answers alike), the same
number the robot's client order ids carry (`{robot_id}-{seq}-{k}`). "What did it know at that
moment?" is then

    SELECT state FROM robot_state WHERE run = ? AND input_offset <= ? ORDER BY input_offset DESC LIMIT 1

Replaying a run again replaces its rows (one transaction).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from ticktape.codec import to_python
from ticktape.domain import IntentDigest
from ticktape.errors import TicktapeError
from ticktape.tape import TapeLike, using_tape
from ticktape.tape.base import Tape

log = logging.getLogger("analyzer.replay")

_DDL = [
    """CREATE TABLE IF NOT EXISTS robot_state (run VARCHAR NOT NULL, input_offset BIGINT NOT NULL,
        ts_event BIGINT, event_type VARCHAR, intents INTEGER NOT NULL, state VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS replay_intents (run VARCHAR NOT NULL, input_offset BIGINT NOT NULL,
        k INTEGER NOT NULL, type VARCHAR NOT NULL, client_order_id VARCHAR, instrument VARCHAR, side VARCHAR,
        price DOUBLE, size DOUBLE, ts_event BIGINT, intent VARCHAR NOT NULL, encoded BLOB NOT NULL)""",
]
_FLUSH = 50_000


@dataclass
class ReplaySummary:
    """What a replay wrote."""

    run_id: str
    steps: int
    states: int
    intents: int
    intents_sha256: str
    seconds: float

    def line(self) -> str:
        return (f"replayed run {self.run_id}: {self.steps} robot steps, {self.intents} intents, "
                f"{self.states} states written in {self.seconds:.2f} s (intents_sha256 {self.intents_sha256})")


class RunError(TicktapeError):
    """A recorded run cannot be rebuilt or re-run (no such run, unknown robot, the robot failed)."""


def build_runner(tape: Tape, run_id: str, robot: str | None = None,
                 params: Mapping[str, object] | None = None) -> tuple[Any, Any, Any, Any]:
    """(manifest, finished, runner, source) of a recorded run; `robot` overrides the manifest's robot
    and `params` (strings as from `--param k=v`, or typed values) override the recorded params.

    Another robot gets those of the run's params its own params type has (the rest belonged to the
    run's robot; the dropped names are logged), then `params` over them.
    """
    from robots.api import RobotError
    from robots.backtest import find_run, runner_for_run
    from robots.registry import robot_class

    try:
        manifest, finished = find_run(tape, run_id)
        recorded: dict[str, object] = json.loads(manifest.params or "{}")
        if robot is not None and robot != manifest.robot:
            known = robot_class(robot).params_type.fields()
            dropped = sorted(set(recorded) - set(known))
            if dropped:
                log.info("replay of run %s with %s: leaving out the run's params it does not have: %s",
                         run_id, robot, ", ".join(dropped))
            recorded = {k: v for k, v in recorded.items() if k in known}
            manifest = manifest._replace(robot=robot)
        if params or robot is not None:
            manifest = manifest._replace(params=json.dumps({**recorded, **(params or {})}, sort_keys=True))
        runner, source = runner_for_run(tape, manifest)
    except (RobotError, ValueError) as exc:
        raise RunError(f"run {run_id}: {exc}") from exc
    return manifest, finished, runner, source


class _Rows:
    """Column buffers for one table, flushed as Arrow."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, names: list[str]) -> None:
        self.con = con
        self.table = table
        self.cols: dict[str, list[Any]] = {n: [] for n in names}

    def add(self, *values: Any) -> None:
        for col, v in zip(self.cols.values(), values, strict=True):
            col.append(v)

    def flush(self) -> None:
        first = next(iter(self.cols.values()))
        if not first:
            return
        batch = pa.table(self.cols)
        self.con.register("_tt_rows", batch)
        self.con.execute(f"INSERT INTO {self.table} BY NAME SELECT * FROM _tt_rows")
        self.con.unregister("_tt_rows")
        for col in self.cols.values():
            col.clear()


def replay(tape: TapeLike, run_id: str, con: duckdb.DuckDBPyConnection, *, robot: str | None = None,
           every: int = 0, params: Mapping[str, object] | None = None) -> ReplaySummary:
    """Re-run `run_id` over its recorded inputs; write `robot_state` and `replay_intents` (see module doc).

    `tape` is a `Tape` or its URI; `robot` replays another robot over the same inputs; `params`
    override the run's params.
    """
    with using_tape(tape, existing=True) as t:
        return _replay(t, run_id, con, robot=robot, every=every, params=params)


def _replay(tape: Tape, run_id: str, con: duckdb.DuckDBPyConnection, *, robot: str | None, every: int,
            params: Mapping[str, object] | None) -> ReplaySummary:
    t0 = time.perf_counter()
    _, _, runner, source = build_runner(tape, run_id, robot, params)
    digest = IntentDigest()
    for ddl in _DDL:
        con.execute(ddl)
    con.begin()
    try:
        con.execute("DELETE FROM robot_state WHERE run = ?", [run_id])
        con.execute("DELETE FROM replay_intents WHERE run = ?", [run_id])
        states = _Rows(con, "robot_state", ["run", "input_offset", "ts_event", "event_type", "intents", "state"])
        intents = _Rows(con, "replay_intents", ["run", "input_offset", "k", "type", "client_order_id", "instrument",
                                                "side", "price", "size", "ts_event", "intent", "encoded"])
        current = runner.robot.state_to_json(runner.state)
        states.add(run_id, -1, None, None, 0, current)
        n_steps = n_states = n_intents = 0
        for step in runner.steps(source):
            n_steps += 1
            if step.state_json is not None:
                current = step.state_json
            keep = step.seq % every == 0 if every else step.state_json is not None
            if keep or step.intents:
                states.add(run_id, step.seq, step.event.ts_event, type(step.event).__name__, len(step.intents),
                           current)
                n_states += 1
            for k, intent in enumerate(step.intents):
                data = digest.add(intent)
                intents.add(run_id, step.seq, k, type(intent).__name__, intent.client_order_id, intent.instrument,
                            getattr(intent, "side", None), getattr(intent, "price", None),
                            getattr(intent, "size", None), intent.ts_event, json.dumps(to_python(intent)), data)
                n_intents += 1
            if len(first_col(states)) >= _FLUSH:
                states.flush()
            if len(first_col(intents)) >= _FLUSH:
                intents.flush()
        states.flush()
        intents.flush()
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        close = getattr(source, "close", None)
        if close is not None and source.tape is not tape:
            close()
    return ReplaySummary(run_id, n_steps, n_states + 1, n_intents, digest.hexdigest(), time.perf_counter() - t0)


def first_col(rows: _Rows) -> list[Any]:
    """The first column buffer (its length is the buffered row count)."""
    return next(iter(rows.cols.values()))


def state_at(con: duckdb.DuckDBPyConnection, run_id: str, input_offset: int) -> Any:
    """The robot's state (parsed JSON) after step `input_offset` of a replayed run."""
    rows = con.execute("SELECT state FROM robot_state WHERE run = ? AND input_offset <= ? "
                       "ORDER BY input_offset DESC LIMIT 1", [run_id, input_offset]).fetchall()
    return json.loads(rows[0][0]) if rows else None
