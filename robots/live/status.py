"""What `ticktape runs` shows: every live run with its state, from `runs` and its heartbeats."""

from __future__ import annotations

import json
import time
from typing import Any

from robots.live.gateway import last_heartbeat
from robots.live.topics import RUNS_TOPIC
from ticktape.events import RunFinished, RunStarted
from ticktape.tape.base import Tape

__all__ = ["live_runs"]


def live_runs(tape: Tape, *, dead_after: float = 5.0, now_ns: int | None = None) -> list[dict[str, Any]]:
    """One row per live run, oldest first: run_id, robot, state (running / stopped / dead / unknown),
    inputs, open_orders, last_input_ts, heartbeat_ts, started_ts, finished."""
    started: dict[str, RunStarted] = {}
    finished: dict[str, RunFinished] = {}
    for p in range(tape.partitions(RUNS_TOPIC)):
        for rec in tape.read(RUNS_TOPIC, p):
            e = rec.event
            if type(e) is RunStarted and e.mode == "live":
                started.setdefault(e.run_id, e)
            elif type(e) is RunFinished:
                finished[e.run_id] = e
    now = time.time_ns() if now_ns is None else now_ns
    rows = []
    for run_id, manifest in sorted(started.items(), key=lambda kv: kv[1].ts_recv):
        beat = last_heartbeat(tape, run_id)
        info: dict[str, Any] = json.loads(beat.payload) if beat is not None else {}
        if beat is None:
            state = "unknown"
        elif info.get("status") == "stopped":
            state = "stopped"
        elif (now - beat.ts_recv) / 1e9 > dead_after:
            state = "dead"
        else:
            state = "running"
        rows.append({"run_id": run_id, "robot": manifest.robot, "state": state, "inputs": info.get("inputs", 0),
                     "open_orders": info.get("open_orders", 0), "last_input_ts": info.get("last_input_ts") or None,
                     "heartbeat_ts": beat.ts_recv if beat is not None else None, "started_ts": manifest.ts_recv,
                     "finished": run_id in finished})
    return rows
