"""Helpers shared by the benchmarks: timing, machine description, result lines."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any


def machine() -> str:
    """A one-line description of the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def best_rate(n: int, fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best of `repeat` runs of `fn`, as items per second (best-of filters a noisy neighbour)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def max_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, **values: Any) -> None:
    """Print one result line as JSON (easy to paste into BENCHMARKS.md or diff over time)."""
    print(json.dumps({"bench": name, **values}), flush=True)
