"""One way to wait between attempts: exponential backoff, capped, with optional jitter.

Used wherever ticktape tries again: the recorders reconnecting a dropped stream, a live
process re-appending to a tape that failed, the gateway's sender asking a venue again. Jitter
(a random fraction of each delay taken off) keeps many clients that failed together from
retrying together; `rng` makes it reproducible in tests.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = ["backoff_delays", "retry_call"]

T = TypeVar("T")


def backoff_delays(initial: float, maximum: float, *, factor: float = 2.0, jitter: float = 0.0,
                   rng: random.Random | None = None) -> Iterator[float]:
    """initial, initial*factor, ... capped at `maximum`; each delay less up to `jitter` of itself.

    `jitter=0.5` gives a delay d as a uniform value in [d/2, d] ("equal jitter").
    """
    if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter <= 1:
        raise ValueError(f"backoff: need 0 < initial <= maximum, factor >= 1, 0 <= jitter <= 1 "
                         f"(got {initial}, {maximum}, {factor}, {jitter})")
    draw = (rng or random.Random()).random
    delay = initial
    while True:
        yield delay * (1 - jitter * draw()) if jitter else delay
        delay = min(delay * factor, maximum)


def retry_call(call: Callable[[], T], *, retry_on: tuple[type[BaseException], ...],
               delays: Iterator[float], attempts: int | None = None,
               on_retry: Callable[[BaseException, float], object] | None = None,
               sleep: Callable[[float], object] = time.sleep) -> T:
    """`call()` until it returns, waiting the next of `delays` after each exception in `retry_on`.

    Other exceptions propagate at once; after `attempts` failures (None: no limit) the last one
    does. `on_retry(exc, delay)` is told before each wait (for logging); `sleep` waits (a
    `threading.Event.wait` makes the wait end early on a stop).
    """
    failures = 0
    while True:
        try:
            return call()
        except retry_on as exc:
            failures += 1
            if attempts is not None and failures >= attempts:
                raise
            delay = next(delays)
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
