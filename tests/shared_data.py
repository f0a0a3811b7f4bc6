"""Where the real recorded markets live, and the one rule for tests that need them.

The data is `../shared/data` beside the repository (the project's layout), or wherever
`TICKTAPE_SHARED_DATA` points (CI sets it when the clone is somewhere else). A test that needs
files from it carries `@pytest.mark.shared_data("betfair/1.197931750", ...)`: without them it is
skipped on a laptop with one message, and fails under `CI=1`, like the Kafka tests, so CI never
passes by not running them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TICKTAPE_SHARED_DATA") or REPO.parent / "shared" / "data")
BETFAIR = SHARED_DATA / "betfair"
"""The recorded Betfair markets, order streams, catalogues, cricket and race streams."""


def missing(names: tuple[str, ...]) -> list[Path]:
    """The paths under the shared data (the whole folder when no name is given) that do not exist."""
    paths = [SHARED_DATA / n for n in names] or [SHARED_DATA]
    return [p for p in paths if not p.exists()]


def check_item(item: pytest.Item) -> None:
    """Skip, or under CI fail, a test marked `shared_data` whose files are not there."""
    marks = list(item.iter_markers("shared_data"))
    if not marks:
        return
    absent = missing(tuple(n for m in marks for n in m.args))
    if not absent:
        return
    message = (f"shared data missing: {', '.join(str(p) for p in absent)} "
               "(../shared/data beside the repository, or set TICKTAPE_SHARED_DATA)")
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
