"""Walk-forward sweeps: choose parameters on a training window, score them on a test window after it.

`ticktape sweep ... --train FROM..TO --test FROM..TO` runs the search (grid, random or optuna) on
the inputs inside the training window only, takes the best `top` parameter sets by the objective,
and runs each of them again on the test window. The test runs are ordinary runs on the tape
under the sweep id `<sweep id>.test`, so `ticktape report --sweep ID` shows each chosen set's
training score beside the score it got on data it was not chosen on. Training and test read the
same snapshot of the input tape (its end offsets taken once, before training), so data appended
while the walk-forward runs changes neither; a resumed walk-forward (same sweep id) runs only what
has no finished run, each part on the inputs its first runs read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from robots.sweep import SweepError, absolute_uri, grid_point, pin_input_offsets, sweep

__all__ = ["TEST_SUFFIX", "parse_window", "walk_forward"]

TEST_SUFFIX = ".test"
"""A walk-forward's test runs carry the sweep id `<sweep id>.test`."""


def parse_window(text: str, option: str) -> tuple[int, int]:
    """`FROM..TO` (ISO 8601, UTC if naive, or integer ns) -> (start, end) ns, half-open; a clear error otherwise."""
    from ticktape.timeutil import parse_time

    lo, sep, hi = text.partition("..")
    if not sep or not lo.strip() or not hi.strip():
        raise SweepError(f"{option} expects FROM..TO (e.g. 2024-01-01..2024-02-01), got {text!r}")
    try:
        start, end = parse_time(lo.strip()), parse_time(hi.strip())
    except ValueError as exc:
        raise SweepError(f"{option} {text!r}: {exc}") from None
    if end <= start:
        raise SweepError(f"{option} {text!r}: the window ends before it starts")
    return start, end


def check_windows(train: tuple[int, int], test: tuple[int, int]) -> None:
    """Refuse windows that overlap: the test score would include data the parameters were chosen on."""
    if train[0] < test[1] and test[0] < train[1]:
        raise SweepError("--train and --test overlap: the test window must hold only data the search did not see")


def walk_forward(robot: str, grid: Mapping[str, Sequence[object]], *, train: tuple[int, int],
                 test: tuple[int, int], top: int = 1, sweep_id: str, sort_by: str = "pnl",
                 descending: bool = True, **sweep_kwargs: Any) -> dict[str, Any]:
    """The search on `train`, then its best `top` parameter sets on `test`.

    Returns `{"sweep_id", "train": rows (best first), "test": rows}`; each test row has the
    objective its parameters scored in training as `train_<objective>`.
    """
    check_windows(train, test)
    if top < 1:
        raise SweepError("--top must be at least 1")
    for key in ("start", "end", "points"):
        if sweep_kwargs.get(key) is not None:
            raise SweepError(f"walk-forward sets {key} itself (from --train and --test)")
    sweep_kwargs = {k: v for k, v in sweep_kwargs.items() if k not in ("start", "end", "points")}
    if "end_offsets" not in sweep_kwargs and isinstance(sweep_kwargs.get("tape"), str):
        # Pinned here, not taken from the training runs: a run records its offsets cut at its window's
        # end, so a test window after training would read nothing up to the training runs' offsets.
        first = {**(sweep_kwargs.get("fixed") or {}), **(grid_point(grid, 0) if grid else {})}
        sweep_kwargs["end_offsets"] = pin_input_offsets(
            robot, first, absolute_uri(sweep_kwargs["tape"]), topics=sweep_kwargs.get("topics"),
            allow_impure=bool(sweep_kwargs.get("allow_impure", False)))
    trained = sweep(robot, grid, start=train[0], end=train[1], sweep_id=sweep_id, sort_by=sort_by,
                    descending=descending, **sweep_kwargs)
    scored = [r for r in trained if isinstance(r.get(sort_by, r["params"].get(sort_by)), int | float)]
    best = scored[:top]
    if not best:
        raise SweepError(f"no training run has a numeric {sort_by}: nothing to test")
    kwargs = {k: v for k, v in sweep_kwargs.items() if k not in ("search", "seed", "fixed")}
    tested = sweep(robot, {}, start=test[0], end=test[1], sweep_id=sweep_id + TEST_SUFFIX, sort_by=sort_by,
                   descending=descending, points=[r["params"] for r in best], **kwargs)
    train_score = {json.dumps(r["params"], sort_keys=True): r.get(sort_by) for r in best}
    for row in tested:
        row[f"train_{sort_by}"] = train_score.get(json.dumps(row["params"], sort_keys=True))
    return {"sweep_id": sweep_id, "train": trained, "test": tested}
