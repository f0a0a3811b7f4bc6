"""The one backoff helper: delays, jitter bounds, and which exceptions are retried."""

from __future__ import annotations

import random

import pytest

from ticktape.retry import backoff_delays, retry_call


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = backoff_delays(1.0, 10.0)
    assert [next(delays) for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_stays_within_its_fraction_and_varies() -> None:
    delays = backoff_delays(1.0, 8.0, jitter=0.5, rng=random.Random(3))
    got = [next(delays) for _ in range(200)]
    caps = [min(2.0 ** i, 8.0) for i in range(200)]
    assert all(c / 2 <= d <= c for d, c in zip(got, caps, strict=True))
    assert len({round(d, 6) for d in got[10:]}) > 100  # not one fixed value


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="backoff"):
        next(backoff_delays(0.0, 1.0))
    with pytest.raises(ValueError, match="backoff"):
        next(backoff_delays(1.0, 2.0, jitter=1.5))


def test_retry_call_retries_only_the_named_errors_and_gives_up_after_attempts() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "up"

    assert retry_call(flaky, retry_on=(ConnectionError,), delays=backoff_delays(0.1, 1.0), sleep=waits.append) == "up"
    assert waits == [0.1, 0.2]

    def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):  # not in retry_on: at once
        retry_call(broken, retry_on=(ConnectionError,), delays=backoff_delays(0.1, 1.0), sleep=waits.append)

    def down() -> None:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError, match="still down"):  # the 4th failure is raised
        retry_call(down, retry_on=(ConnectionError,), delays=backoff_delays(0.1, 1.0), attempts=4, sleep=waits.append)
    assert waits[-3:] == [0.1, 0.2, 0.4]
