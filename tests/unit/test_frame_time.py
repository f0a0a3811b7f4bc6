"""One time rule for DataFrames (ticktape.frame_time): a backtest from a DataFrame and an import of the
same DataFrame put every event at the same absolute ns, whatever resolution pandas gave the column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from producers.frames import bars_from_frame
from robots.sources import frame_to_events
from ticktape.errors import ValidationError
from ticktape.frame_time import time_ns

NS = [1_704_067_200_000_000_000, 1_704_067_201_000_000_000]  # 2024-01-01 00:00:00 and :01 UTC


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_datetimes_of_any_resolution_are_ns_since_the_epoch(unit: str) -> None:
    times = pd.to_datetime(["2024-01-01 00:00:00", "2024-01-01 00:00:01"]).as_unit(unit)
    frame = pd.DataFrame({"timestamp": times, "price": [1.0, 2.0]})
    assert time_ns(frame)[0].tolist() == NS
    assert [e.ts_event for e in frame_to_events(frame)] == NS


def test_strings_parsed_by_the_installed_pandas_land_at_the_right_time() -> None:
    """pandas 3 parses these to µs; astype("int64") then gave 1970 (the issue's bug)."""
    frame = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-01 00:00:00", "2024-01-01 00:00:01"]),
                          "price": [1.0, 2.0]})
    assert [e.ts_event for e in frame_to_events(frame)] == NS


def test_backtest_and_import_agree_on_a_bar_frame() -> None:
    index = pd.DatetimeIndex(pd.to_datetime(["2024-01-01 00:00", "2024-01-01 00:01"], utc=True))
    frame = pd.DataFrame({"open": [1.0, 2.0], "high": [2.0, 3.0], "low": [0.5, 1.5], "close": [1.5, 2.5],
                          "volume": [10.0, 20.0]}, index=index)
    from_backtest = [e.ts_event for e in frame_to_events(frame, kind="bars")]
    bars, problems = bars_from_frame(frame, venue="sim", instrument="X", interval="1m", label="close")
    imported = [b.ts_event for b in bars]
    assert problems == []
    assert from_backtest == imported == [int(t.value) for t in index]


def test_integer_columns() -> None:
    seconds = pd.DataFrame({"time": np.array([1_704_067_200, 1_704_067_201])})
    assert time_ns(seconds)[0].tolist() == NS  # magnitude says seconds
    tape_field = pd.DataFrame({"ts_event": np.array([5, 6])})
    assert time_ns(tape_field)[0].tolist() == [5, 6]  # the tape's own field is ns, never rescaled


def test_no_time_is_named() -> None:
    with pytest.raises(ValidationError, match="no time"):
        time_ns(pd.DataFrame({"price": [1.0]}))
    with pytest.raises(ValidationError, match="missing time at row 1"):
        time_ns(pd.DataFrame({"time": pd.to_datetime(["2024-01-01", None])}))
