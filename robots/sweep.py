"""Parameter sweeps: one backtest per grid point, over worker processes, with a progress bar.

Each grid point runs exactly what `backtest()` runs alone (a fresh robot, venue and controls in
the worker), so its numbers - and its `intents_sha256` - are the same as a single run's, whatever
the number of workers. Results come back sorted by a summary field, ties broken by the params.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from robots.api import RobotError

__all__ = ["RESULT_FIELDS", "format_table", "parse_grid", "sweep"]

RESULT_FIELDS = ("pnl", "fees", "max_drawdown", "fills", "intents", "events", "events_per_s", "intents_sha256")
"""Summary fields kept per grid point (plus the params, and `pnl_exact` for exact comparisons)."""


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


def _run_point(robot: str, params: dict[str, object], kwargs: dict[str, Any]) -> dict[str, Any]:
    from robots.backtest import backtest

    res = backtest(robot, params=params, keep=False, **kwargs)
    row: dict[str, Any] = {"params": res.summary["params"]}
    for name in (*RESULT_FIELDS, "pnl_exact", "wall_time_s"):
        row[name] = res.summary.get(name)
    return row


def sweep(robot: str, grid: Mapping[str, Sequence[object]], *, fixed: Mapping[str, object] | None = None,
          workers: int = 1, sort_by: str = "pnl", descending: bool = True, progress: bool = False,
          **backtest_kwargs: Any) -> list[dict[str, Any]]:
    """Backtest `robot` on every grid point (merged over `fixed` params); rows sorted by `sort_by`.

    `backtest_kwargs` go to `robots.backtest.backtest` (tape as a URI string, topics, start, end,
    venue name, venue_settings, controls table); they must be picklable for `workers > 1`.
    """
    points = [{**(fixed or {}), **p} for p in grid_points(grid)]
    if not points:
        return []
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(points), unit="run", desc=f"sweep {robot}", leave=False)
    try:
        if workers <= 1:
            for p in points:
                rows.append(_run_point(robot, p, backtest_kwargs))
                if bar is not None:
                    bar.update(1)
        else:
            # spawn: workers start clean (no inherited broker connections, open tapes or threads)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(points)), mp_context=ctx) as pool:
                futures = [pool.submit(_run_point, robot, p, backtest_kwargs) for p in points]
                for fut in as_completed(futures):
                    rows.append(fut.result())
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return sort_rows(rows, sort_by, descending)


def sort_rows(rows: list[dict[str, Any]], sort_by: str, descending: bool = True) -> list[dict[str, Any]]:
    """Sort by a summary field (None last), ties broken by the params' canonical text."""
    import json

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
