"""The one rule for a DataFrame's time, shared by every DataFrame adapter (imports and backtests).

The time is the DatetimeIndex if the frame has one, else the first column found among `TIME_COLUMNS` (or the one named).
Datetimes: naive ones are UTC; any resolution (pandas 3 parses strings to µs, older pandas to ns)
becomes integer ns since the epoch. Integers: a column named `ts_event` (the tape's own field) is
ns as it is; any other integer column is s/ms/µs/ns told apart by magnitude.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ticktape.errors import ValidationError

TIME_COLUMNS = ("ts_event", "time", "timestamp", "date", "datetime", "open_time", "close_time", "ts")
"""Columns taken as the time, in this order of preference (names compared case-insensitively)."""


def ints_to_ns(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Epoch integers in s, ms, µs or ns (told apart by magnitude) -> ns."""
    v = values.astype(np.int64)
    out: np.ndarray[Any, Any] = np.select([v < 10**11, v < 10**14, v < 10**17], [v * 10**9, v * 10**6, v * 10**3], v)
    return out


def datetimes_ns(idx: pd.DatetimeIndex, what: str) -> np.ndarray[Any, Any]:
    """A DatetimeIndex of any resolution -> integer ns since the epoch (naive = UTC); a missing time is named."""
    if idx.hasnans:
        row = int(np.flatnonzero(idx.isna())[0])
        raise ValidationError(f"{what} has a missing time at row {row}", field="time")
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    out: np.ndarray[Any, Any] = idx.as_unit("ns").asi8.copy()
    return out


def time_ns(df: pd.DataFrame, time_column: str | None = None) -> tuple[np.ndarray[Any, Any], str | None]:
    """Integer ns since the epoch for every row, and the column it came from (None: the index)."""
    if time_column is None:
        if isinstance(df.index, pd.DatetimeIndex):
            return datetimes_ns(df.index, "the index"), None
        lower = {str(c).lower(): c for c in df.columns}
        found = next((lower[c] for c in TIME_COLUMNS if c in lower), None)
        if found is None:
            raise ValidationError(f"no time: use a DatetimeIndex, a column named one of {', '.join(TIME_COLUMNS)}, "
                                  "or time_column=", field="time")
        time_column = str(found)
    if time_column not in df.columns:
        raise ValidationError(f"time column {time_column!r} is missing (columns: {', '.join(map(str, df.columns))})",
                              field=time_column)
    col = df[time_column]
    if pd.api.types.is_integer_dtype(col.dtype):
        values = col.to_numpy()
        if time_column.lower() == "ts_event":
            return values.astype(np.int64), time_column
        return ints_to_ns(values), time_column
    try:
        return datetimes_ns(pd.DatetimeIndex(pd.to_datetime(col, utc=True)), time_column), time_column
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"column {time_column!r} is not a time: {exc}", field=time_column) from exc
