"""Fixtures shared by the producer tests."""

from __future__ import annotations

import pytest

from producers.betfair import cache


@pytest.fixture(params=["c", "python"])
def runner_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the C runner state and book encoder, then on the pure-Python twin."""
    if request.param == "python":
        monkeypatch.setattr(cache, "FAST", None)
    elif cache.FAST is None:
        pytest.skip("the C runner state is not built (or TICKTAPE_NO_CEXT=1)")
    return str(request.param)
