"""Parameter sweeps: one backtest per parameter set, on an engine (local processes or Ray), every run on the tape.

Each point runs exactly what `backtest()` runs alone (a fresh robot, venue and controls in the
worker), over input offsets the driver pins once for the whole sweep, so its numbers - and its
`intents_sha256` - are the same as a single run's whatever the engine, the number of workers or
the order they finish in. Workers read their inputs from the tape themselves (a URI goes to them,
never the data) and hand their run back encoded; the driver is the one writer of the output tape
(a file tape partition has one writer), appending each run whole: `RunStarted` (with the sweep
id), its intents and venue answers, then `RunFinished`. A sweep started again with the same id
runs only the parameter sets that have no finished run on the output tape.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import random
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Protocol

from robots.api import RobotError
from ticktape.tape.base import Encoded

__all__ = ["ENGINES", "RESULT_FIELDS", "PointResult", "SweepError", "SweepTask", "format_table", "parse_grid",
           "parse_search", "pin_input_offsets", "plan_points", "run_point", "sweep", "sweep_runs"]

RESULT_FIELDS = ("pnl", "fees", "max_drawdown", "sharpe", "sortino", "fills", "intents", "events", "events_per_s",
                 "intents_sha256")
"""Summary fields kept per grid point (plus the params, and `pnl_exact` for exact comparisons)."""

ROW_EXTRA = ("pnl_exact", "wall_time_s", "run_id", "sweep_id")
"""Also kept per point: the exact PnL, the wall time, where the run is on the tape."""


class SweepError(RobotError):
    """A sweep cannot run as asked (engine missing, tape not visible to a worker, sweep id reused...)."""


# --------------------------------------------------------------------------- points


def parse_grid(specs: Iterable[str]) -> dict[str, list[str]]:
    """`["fast=5,10", "slow=50"]` -> `{"fast": ["5", "10"], "slow": ["50"]}` (order kept)."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not name.strip() or not items:
            raise RobotError(f"--grid expects k=v1,v2,..., got {spec!r}")
        grid[name.strip()] = items
    return grid


def grid_points(grid: Mapping[str, Sequence[object]]) -> list[dict[str, object]]:
    """Every combination, in a fixed order (the product of the grid's values in their given order)."""
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]


def grid_point(grid: Mapping[str, Sequence[object]], index: int) -> dict[str, object]:
    """Point `index` of `grid_points(grid)`, without building the others (the last name varies fastest)."""
    out: dict[str, object] = {}
    for name in reversed(list(grid)):
        index, i = divmod(index, len(grid[name]))
        out[name] = grid[name][i]
    return {n: out[n] for n in grid}


def parse_search(spec: str | None) -> tuple[str, int | None]:
    """`None`/`"grid"` -> ("grid", None); `"random:N"` -> ("random", N); `"optuna:N"` -> ("optuna", N)."""
    if spec is None or spec == "grid":
        return "grid", None
    kind, _, n = spec.partition(":")
    if kind in ("random", "optuna") and n.isdigit() and int(n) > 0:
        return kind, int(n)
    raise SweepError(f"--search expects grid, random:N or optuna:N (N > 0), got {spec!r}")


def plan_points(grid: Mapping[str, Sequence[object]], search: str | None = None,
                seed: int = 0) -> list[tuple[int, dict[str, object]]]:
    """(index in the full grid, point) pairs to run: every point, or `random:N` distinct ones drawn with `seed`.

    The draw depends only on the grid, N and the seed (never on the process or the clock), so a
    resumed random sweep draws the same points.
    """
    kind, n = parse_search(search)
    if kind == "optuna":
        raise SweepError("optuna:N points are chosen while the sweep runs (robots.sweep_optuna), not planned")
    total = math.prod(len(v) for v in grid.values()) if grid else 0
    if kind == "grid":
        return list(enumerate(grid_points(grid)))
    picked = random.Random(seed).sample(range(total), min(n or 0, total))
    return [(i, grid_point(grid, i)) for i in picked]


# --------------------------------------------------------------------------- one point (in a worker)


@dataclass(frozen=True)
class SweepTask:
    """One parameter set to backtest: everything a worker needs, as small picklable values."""

    robot: str
    params: dict[str, object]
    run_id: str
    sweep_id: str
    out_uri: str | None  # the tape the driver will append the run to (None: not written)
    backtest_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PointResult:
    """A finished point: its summary row and its run's records, encoded, for the driver to append."""

    row: dict[str, Any]
    records: list[tuple[str, list[Encoded]]]


def file_tape_path(uri: str) -> str | None:
    """The directory of a `file:` tape URI (or a bare path), else None."""
    scheme, colon, rest = uri.partition(":")
    if not colon or len(scheme) == 1:  # a bare path (or a Windows drive letter)
        return uri.partition("?")[0]
    return rest.partition("?")[0] if scheme == "file" else None


def absolute_uri(uri: str) -> str:
    """A file tape URI with an absolute path: workers elsewhere must not resolve it against their own cwd."""
    path = file_tape_path(uri)
    if path is None:
        return uri
    query = uri.partition("?")[2]
    return f"file:{os.path.abspath(path)}" + (f"?{query}" if query else "")


def check_visible(uri: str) -> None:
    """Refuse, in one line, a file tape this process cannot see (a worker would read an empty new tape)."""
    path = file_tape_path(uri)
    if path is not None and not os.path.isdir(path):
        raise SweepError(f"file tape {path} is not visible on {socket.gethostname()} (pid {os.getpid()}): workers "
                         "read the tape themselves; put it on storage every node mounts at that path, or use Kafka")


def row_of(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep row from a run summary: params, result fields, exact PnL, wall time, run and sweep ids."""
    row: dict[str, Any] = {"params": summary["params"]}
    for name in (*RESULT_FIELDS, *ROW_EXTRA):
        row[name] = summary.get(name)
    return row


def run_point(task: SweepTask) -> PointResult:
    """Backtest one point (what every engine's worker runs): the row, and the run's records encoded."""
    from robots.backtest import backtest

    check_visible(task.backtest_kwargs["tape"])
    res = backtest(task.robot, params=task.params, keep=False, run_id=task.run_id, sweep_id=task.sweep_id,
                   out_tape=None, capture_for=task.out_uri, **task.backtest_kwargs)
    return PointResult(row_of(res.summary), res.captured.records if res.captured is not None else [])


# --------------------------------------------------------------------------- engines


class Engine(Protocol):
    """Runs tasks and yields their results as they finish (in any order).

    Used as a context manager around every `run` of one sweep (a search runs many batches: the
    engine's workers or cluster connection are set up once).
    """

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...

    def slots(self) -> int:
        """How many runs it runs at once (the batch a search asks for)."""

    def run(self, tasks: Sequence[SweepTask]) -> Iterator[PointResult]:
        """Every task's result, each once, in finish order; a task's error is raised."""


class LocalEngine:
    """In this process (`workers` <= 1) or in spawned worker processes."""

    def __init__(self, *, workers: int = 1, address: str | None = None) -> None:
        if address is not None:
            raise SweepError("--address is for --engine ray")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def slots(self) -> int:
        """The worker processes."""
        return max(1, self.workers)

    def run(self, tasks: Sequence[SweepTask]) -> Iterator[PointResult]:
        """Sequentially, or over a process pool (spawn: workers start clean, no inherited tapes or threads);
        the pool stays up for the engine's next `run` until the engine is closed."""
        if self.workers <= 1 or (len(tasks) <= 1 and self._pool is None):
            for t in tasks:
                yield run_point(t)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        futures = [self._pool.submit(run_point, t) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def _ray_engine(*, workers: int = 1, address: str | None = None) -> Engine:
    if workers > 1:
        raise SweepError("--workers is for --engine local: a Ray cluster runs as many runs at once as it has CPUs")
    from robots.sweep_ray import RayEngine

    return RayEngine(address=address)


ENGINES: dict[str, Callable[..., Engine]] = {"local": LocalEngine, "ray": _ray_engine}
"""Engine name -> factory(workers=, address=)."""


# --------------------------------------------------------------------------- the sweep (driver)


def _canonical(robot: str, point: Mapping[str, object], allow_impure: bool) -> str:
    from robots.registry import get_robot

    return str(get_robot(robot, point, allow_impure=allow_impure).params.to_json())


def sweep_runs(tape: Any, sweep_id: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The runs of `sweep_id` on `tape`: (run_id -> RunStarted, canonical params -> row of its finished run)."""
    from robots.backtest import RUNS_TOPIC
    from ticktape.events import RunFinished, RunStarted

    started: dict[str, Any] = {}
    finished: dict[str, Any] = {}
    for p in range(tape.partitions(RUNS_TOPIC)):
        for rec in tape.read(RUNS_TOPIC, p):
            e = rec.event
            if type(e) is RunStarted and e.sweep_id == sweep_id:
                started[e.run_id] = e
            elif type(e) is RunFinished:
                finished[e.run_id] = e
    done = {started[r].params: row_of(json.loads(finished[r].summary)) for r in started if r in finished}
    return started, done


Offsets = dict[str, dict[int, int]]


def _recorded(out: Any, sweep_id: str, robot: str) -> tuple[dict[str, dict[str, Any]], Offsets | None]:
    """What a sweep id already has on its output tape: rows of its finished points (by canonical
    params), and the input offsets its first run read (None for a new sweep)."""
    started, done = sweep_runs(out, sweep_id)
    if not started:
        return done, None
    first = min(started.values(), key=lambda e: (e.ts_recv, e.run_id))
    if first.robot != robot:
        raise SweepError(f"sweep {sweep_id} on {out.uri} is a sweep of {first.robot}, not {robot}")
    # The resumed points read exactly the inputs the first ones read, however the tape grew since.
    return done, {t: {int(p): int(o) for p, o in parts.items()} for t, parts in json.loads(first.end_offsets).items()}


def pin_input_offsets(robot: str, point: Mapping[str, object], uri: str, *,
                      topics: Sequence[str] | None = None, allow_impure: bool = False) -> Offsets:
    """The input tape's end offsets now, for the topics `robot` at `point` reads (or `topics`).

    A sweep's runs all read up to these offsets, so a tape that grows while it runs changes no run.
    """
    if not topics:  # the robot's default topics, fitted to the tape as its runs will fit them
        topics = _fit_default_topics(robot, point, {"tape": uri}, allow_impure)
    return _pin_offsets(uri, topics)


def _fit_default_topics(robot: str, point: Mapping[str, object], kwargs: Mapping[str, Any],
                        allow_impure: bool) -> list[str]:
    """The robot's topics fitted to the input tape (`robots.sources.robot_topics`)."""
    from robots.registry import get_robot
    from robots.sources import robot_topics
    from ticktape.tape import open_existing_tape

    bot = get_robot(robot, point, allow_impure=allow_impure)
    tape = open_existing_tape(kwargs["tape"])
    try:
        return list(robot_topics(tape, bot, flag=str(kwargs.get("topics_flag", "topics=[...]"))))
    finally:
        tape.close()


def _pin_offsets(uri: str, topics: Sequence[str]) -> dict[str, dict[int, int]]:
    from ticktape.tape import open_existing_tape

    tape = open_existing_tape(uri)  # the driver reads the end offsets only; a missing file tape is an error
    try:
        return {t: dict(tape.end_offsets(t)) for t in topics if tape.partitions(t) > 0}
    finally:
        tape.close()


class _Progress:
    """A progress bar on stderr: runs done, runs/s and the best objective so far."""

    def __init__(self, enabled: bool, total: int, desc: str, objective: str, descending: bool) -> None:
        self.bar = None
        self.objective, self.descending = objective, descending
        self.best: float | None = None
        if enabled:
            from tqdm import tqdm

            # every run redraws it: a run takes long next to a line on stderr
            self.bar = tqdm(total=total, unit="run", desc=desc, leave=False, mininterval=0, miniters=1)

    def update(self, row: Mapping[str, Any]) -> None:
        v = row.get(self.objective, row["params"].get(self.objective))
        if isinstance(v, int | float) and (self.best is None or (v > self.best) == self.descending):
            self.best = float(v)
        if self.bar is not None:
            if self.best is not None:
                self.bar.set_postfix_str(f"best {self.objective} {self.best:g}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def new_sweep_id(robot: str) -> str:
    """`<robot>-<12 hex>`: a fresh id (the robot name made safe for a run id)."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', robot)}-{uuid.uuid4().hex[:12]}"


def sweep(robot: str, grid: Mapping[str, Sequence[object]], *, fixed: Mapping[str, object] | None = None,
          workers: int = 1, sort_by: str = "pnl", descending: bool = True, progress: bool = False,
          engine: str = "local", address: str | None = None, sweep_id: str | None = None,
          out_tape: str | None = None, search: str | None = None, seed: int = 0,
          points: Sequence[Mapping[str, object]] | None = None, **backtest_kwargs: Any) -> list[dict[str, Any]]:
    """Backtest `robot` on every planned point (merged over `fixed` params); rows sorted by `sort_by`.

    `backtest_kwargs` go to `robots.backtest.backtest` (`tape` as a URI string, topics, start, end,
    venue name, venue_settings, controls table); they must be picklable. `engine` is a name in
    `ENGINES` (`ray` connects to `address`, else `RAY_ADDRESS`, else starts a local Ray).
    With `out_tape`, every run is appended there under `sweep_id` (default: a new id), and the
    points that already have a finished run of that sweep there are not run again: their rows
    come from the tape. `search` is `grid` (default), `random:N` drawn with `seed`, or `optuna:N`
    (TPE over the grid's values, seeded, `sort_by` its objective: `robots.sweep_optuna`). `points`
    runs exactly those parameter sets instead of planning from the grid.
    """
    from robots.backtest import append_captured

    if engine not in ENGINES:
        raise SweepError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if "tape" not in backtest_kwargs or not isinstance(backtest_kwargs["tape"], str):
        raise SweepError("a sweep reads a tape given by URI (tape='file:...' or 'kafka://...')")
    allow_impure = bool(backtest_kwargs.get("allow_impure", False))
    kwargs = {**backtest_kwargs, "tape": absolute_uri(backtest_kwargs["tape"])}
    out_uri = absolute_uri(out_tape) if out_tape is not None else None
    sid = sweep_id or new_sweep_id(robot)
    kind, n_trials = parse_search(search)
    if points is not None:
        planned = [(i, {**(fixed or {}), **p}) for i, p in enumerate(points)]
    elif kind == "optuna":  # chosen while running; the first point of the grid tells the topics to pin
        planned = [(0, {**(fixed or {}), **grid_point(grid, 0)})] if grid else []
    else:
        planned = [(i, {**(fixed or {}), **p}) for i, p in plan_points(grid, search, seed)]
    if not planned:
        return []

    from ticktape.tape import open_existing_tape, open_tape

    if "end_offsets" not in kwargs or out_uri == kwargs["tape"]:
        # The driver needs the input to pin its offsets; and it must be there before an output tape
        # at the same place is opened (that makes a file tape's directory). With offsets given and
        # the runs going elsewhere, only the workers read it.
        open_existing_tape(kwargs["tape"]).close()
    out = None
    done: dict[str, dict[str, Any]] = {}
    pinned: dict[str, dict[int, int]] | None = None
    if out_uri is not None:
        out = open_tape(out_uri)
        try:
            done, pinned = _recorded(out, sid, robot)
        except SweepError:
            out.close()
            raise
    try:
        if not kwargs.get("topics") and "end_offsets" not in kwargs:
            # the driver fits the robot's default topics to the tape once (one log line, one error),
            # and every worker then reads the topics it chose
            kwargs["topics"] = _fit_default_topics(robot, planned[0][1], kwargs, allow_impure)
        if pinned is None and "end_offsets" not in kwargs:
            pinned = _pin_offsets(kwargs["tape"], kwargs["topics"])
        if pinned is not None:
            kwargs["end_offsets"] = pinned

        def task(index: int, point: Mapping[str, object]) -> SweepTask:
            return SweepTask(robot, dict(point), f"{sid}-{index:04d}-{uuid.uuid4().hex[:6]}", sid, out_uri, kwargs)

        with ENGINES[engine](workers=workers, address=address) as runner:
            def run_tasks(tasks: Sequence[SweepTask]) -> Iterator[PointResult]:
                for res in runner.run(tasks):
                    if out is not None:
                        append_captured(out, res.records)
                    bar.update(res.row)
                    yield res

            if kind == "optuna" and points is None:
                from robots.sweep_optuna import optuna_search

                def run_batch(todo: list[tuple[int, dict[str, object], str]]) -> dict[str, dict[str, Any]]:
                    keys = {}
                    tasks = []
                    for number, point, k in todo:
                        tasks.append(task(number, point))
                        keys[tasks[-1].run_id] = k
                    return {keys[res.row["run_id"]]: res.row for res in run_tasks(tasks)}

                bar = _Progress(progress, n_trials or 0, f"sweep {sid}", sort_by, descending)
                try:
                    rows = optuna_search(grid, n_trials or 0, seed=seed, objective=sort_by, maximize=descending,
                                         batch=runner.slots(), key=lambda p: _canonical(robot, p, allow_impure),
                                         known=done, run_batch=run_batch, fixed=fixed)
                finally:
                    bar.close()
            else:
                rows = []
                tasks: list[SweepTask] = []
                seen: set[str] = set()
                for index, point in planned:
                    c = _canonical(robot, point, allow_impure)
                    if c in seen:
                        continue  # the same parameters twice (e.g. "5" and "05"): one run
                    seen.add(c)
                    if c in done:
                        rows.append(done[c])
                    else:
                        tasks.append(task(index, point))
                bar = _Progress(progress, len(seen), f"sweep {sid}", sort_by, descending)
                for row in rows:
                    bar.update(row)
                try:
                    rows.extend(res.row for res in run_tasks(tasks))
                finally:
                    bar.close()
    finally:
        if out is not None:
            out.close()
    return sort_rows(rows, sort_by, descending)


def sort_rows(rows: list[dict[str, Any]], sort_by: str, descending: bool = True) -> list[dict[str, Any]]:
    """Sort by a summary field (None last), ties broken by the params' canonical text."""
    if rows and sort_by not in rows[0] and sort_by not in rows[0]["params"]:
        raise RobotError(f"cannot sort by {sort_by!r}; fields: {', '.join([*rows[0], *rows[0]['params']])}")

    def key(row: dict[str, Any]) -> tuple[bool, float, str]:
        v = row.get(sort_by, row["params"].get(sort_by))
        num = float(v) if isinstance(v, int | float) else 0.0
        return (v is None, -num if descending else num, json.dumps(row["params"], sort_keys=True))

    return sorted(rows, key=key)


def format_table(rows: Sequence[Mapping[str, Any]], grid_names: Sequence[str]) -> str:
    """A plain-text table: grid params first, then the result fields."""
    cols = [*grid_names, "pnl", "fees", "max_drawdown", "fills", "intents", "events/s", "intents_sha256"]
    lines = [cols]
    for r in rows:
        p = r["params"]
        lines.append([*(str(p.get(n)) for n in grid_names), f"{r['pnl']:.2f}", f"{r['fees']:.2f}",
                      f"{r['max_drawdown']:.2f}", str(r["fills"]), str(r["intents"]),
                      f"{r['events_per_s'] or 0:,}", str(r["intents_sha256"])[:16]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) if i >= len(grid_names) else v.ljust(w)
                               for i, (v, w) in enumerate(zip(line, widths, strict=True))).rstrip()
                     for line in lines)
