"""`--search optuna:N`: Optuna's TPE sampler chooses the parameter sets, the sweep's engine runs them.

The search space is the grid (`--grid k=v1,v2,...`): each parameter is a categorical choice among
its given values, so TPE explores the same points a grid would, only fewer and better chosen.
Trials are asked in batches as large as the engine runs at once, run as ordinary sweep points
(each a run on the tape under the sweep id), then told in the order they were asked: with the
sampler seeded by `--seed` and backtests deterministic, the same command asks the same trials.

A trial that proposes parameters already run (in this sweep, or found finished on the output tape
when a sweep is resumed) is told that run's value without a second backtest, so a resumed search
asks the same sequence again and runs only what is missing. A run whose objective is not a number
(Sharpe below its minimum of days) is told as a failed trial, which TPE leaves out of its model.
Optuna is an optional extra (`pip install 'ticktape[optuna]'`), imported only for this search.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from robots.sweep import RESULT_FIELDS, SweepError

__all__ = ["OBJECTIVES", "import_optuna", "optuna_search"]

OBJECTIVES = tuple(f for f in RESULT_FIELDS if f not in ("events", "events_per_s", "intents_sha256"))
"""Summary fields a search may optimise: the numeric results that are the same on every run of the
same inputs (not the input count, the machine-dependent speed, or the hash)."""

Point = dict[str, object]
RunBatch = Callable[[list[tuple[int, Point, str]]], dict[str, dict[str, Any]]]
"""Runs (trial number, point, key) triples not run yet; returns key -> the point's row."""


def import_optuna() -> Any:
    """The `optuna` module, or a one-line `SweepError` naming the extra to install."""
    try:
        import optuna
    except ImportError as exc:
        raise SweepError(f"--search optuna:N needs Optuna: pip install 'ticktape[optuna]' ({exc})") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial otherwise
    return optuna


def objective_value(row: Mapping[str, Any], objective: str) -> float | None:
    """The row's objective (a summary field, else a param) as a float; None when it is not a number."""
    value = row.get(objective, row["params"].get(objective))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def optuna_search(grid: Mapping[str, Sequence[object]], n_trials: int, *, seed: int, objective: str,
                  maximize: bool, batch: int, key: Callable[[Point], str], known: Mapping[str, dict[str, Any]],
                  run_batch: RunBatch, fixed: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
    """Ask `n_trials` trials of TPE over `grid` in batches of `batch`; the rows of every distinct point run.

    `key` gives a point's canonical params (what the sweep de-duplicates by); `known` holds the rows
    of points already finished (a resumed sweep's), which are told without running. Rows come back
    in the order their points were first asked.
    """
    optuna = import_optuna()
    names = list(grid)
    if not names:
        raise SweepError("--search optuna:N needs at least one --grid parameter to search")
    if objective not in OBJECTIVES and objective not in names:
        # a misspelt objective would make every trial a failure and the search a random one
        raise SweepError(f"--objective {objective!r} is not a run summary field (pnl, max_drawdown, sharpe, ...)")
    study = optuna.create_study(direction="maximize" if maximize else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    rows: dict[str, dict[str, Any]] = {}
    failed = optuna.trial.TrialState.FAIL
    asked = 0
    while asked < n_trials:
        trials = [study.ask() for _ in range(min(batch, n_trials - asked))]
        asked += len(trials)
        points = [{**(fixed or {}), **{n: t.suggest_categorical(n, list(grid[n])) for n in names}} for t in trials]
        keys = [key(p) for p in points]
        todo: dict[str, tuple[int, Point, str]] = {}
        for t, p, k in zip(trials, points, keys, strict=True):
            if k not in rows and k not in known and k not in todo:
                todo[k] = (t.number, p, k)
        by_key = run_batch(list(todo.values())) if todo else {}
        for t, k in zip(trials, keys, strict=True):  # told in the order asked: the same history every time
            row = rows.get(k) or known.get(k) or by_key.get(k)
            if row is None:
                raise SweepError(f"trial {t.number}: no result came back for {json.loads(k)}")
            rows.setdefault(k, row)
            value = objective_value(row, objective)
            if value is None:
                study.tell(t, state=failed)
            else:
                study.tell(t, value)
    return list(rows.values())
