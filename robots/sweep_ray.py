"""The Ray engine of `robots.sweep`: each point is a Ray task running `robots.sweep.run_point`.

Ray is an optional extra (`pip install 'ticktape[ray]'`), imported only when this engine is used.
Tasks get the tape's URI, never its data, and read their inputs on the node they run on; every
node needs ticktape installed (the same version as the driver) and, for a file tape, the tape at
the same path. A task whose worker process dies (kill -9, a node lost) is run again by Ray up to
`max_retries` times: a point is a pure function of its inputs, so a retry gives the same run.
A robot's own error is not retried: it would fail again the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from robots.sweep import PointResult, SweepError, SweepTask, run_point

__all__ = ["RayEngine", "import_ray"]

MAX_RETRIES = 3
"""Attempts after the first when a task's worker dies."""


def import_ray() -> Any:
    """The `ray` module, or a one-line `SweepError` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise SweepError(f"--engine ray needs Ray: pip install 'ticktape[ray]' ({exc})") from None
    return ray


class RayEngine:
    """Runs every task on a Ray cluster (one CPU each) and yields results as they finish."""

    def __init__(self, *, address: str | None = None, max_retries: int = MAX_RETRIES) -> None:
        self.ray = import_ray()
        self.address = address
        self.max_retries = max_retries
        self._entered = False
        self._own = False

    def __enter__(self) -> RayEngine:
        """Connect once for every `run` of the sweep (a search runs one batch after another)."""
        self._own = self._connect()
        self._entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._entered = False
        if self._own:
            self.ray.shutdown()
            self._own = False

    def slots(self) -> int:
        """The cluster's CPUs (each run takes one)."""
        if not self.ray.is_initialized():
            return 1
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def _connect(self) -> bool:
        """Connect (unless this process already is); True when this engine must disconnect at the end."""
        if self.ray.is_initialized():
            return False
        try:
            # address None: $RAY_ADDRESS, else a local Ray started for this process (Ray's own rule)
            self.ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "$RAY_ADDRESS or a new local instance"
            raise SweepError(f"cannot connect to the Ray cluster at {where}: {exc}") from exc
        return True

    def run(self, tasks: Sequence[SweepTask]) -> Iterator[PointResult]:
        """Submit every task at once (Ray queues what the cluster cannot run yet); yield in finish order."""
        if not tasks:
            return
        ray = self.ray
        own = False if self._entered else self._connect()
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(run_point)
        pending = {remote.remote(t): t for t in tasks}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    yield self._result(ref, task)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if own:
                ray.shutdown()

    def _result(self, ref: Any, task: SweepTask) -> PointResult:
        exc_mod = self.ray.exceptions
        try:
            res = self.ray.get(ref)
        except exc_mod.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None  # the robot's, the tape's or the visibility error, as a local run gives it
            raise SweepError(f"run {task.run_id} ({task.params}) failed on Ray: {exc}") from exc
        except (exc_mod.WorkerCrashedError, exc_mod.NodeDiedError, exc_mod.TaskUnschedulableError) as exc:
            raise SweepError(f"run {task.run_id} ({task.params}): its Ray worker died on each of its "
                             f"{self.max_retries + 1} attempts ({type(exc).__name__})") from exc
        if not isinstance(res, PointResult):
            raise SweepError(f"run {task.run_id}: a Ray worker returned {type(res).__name__}, not a PointResult "
                             "(is the same ticktape installed on every node?)")
        return res
