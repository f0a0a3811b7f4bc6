"""Flat events (NamedTuples) from an Arrow record batch: in C from the column buffers, or in Python.

Two twins give the same events, value for value and type for type:

- `python_rows`: each column as Python values (dictionary columns share one str per distinct
  value), then `map(tuple.__new__, ...)` over the zipped columns: no Python frame per event.
- `c_rows`: `ticktape._rows.build` makes each value object once, straight from the column's
  buffers, into the event tuple (no per-column lists, no zip tuples): the backtest's reading of
  Parquet copies costs about half as much. It takes float64, int64, bool, string and
  dictionary<int32, string> columns without nulls, and all-null columns; for any other batch it
  returns None and the caller uses `python_rows`.

`batch_rows` picks C when it is built (and `TICKTAPE_NO_CEXT` is not 1).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

import pyarrow as pa

from ticktape.cext import optional_extension
from ticktape.events import Event

ROWS = optional_extension("ticktape._rows")
"""The C builder when built (`ticktape._rows`), else None."""


def pylist(column: pa.Array) -> Sequence[Any]:
    """A column as Python values; dictionary columns share one str object per distinct value."""
    if pa.types.is_dictionary(column.type) and len(column) > 1 and column.null_count == 0:
        values = column.dictionary.to_pylist()
        return itemgetter(*column.indices.to_numpy(zero_copy_only=False).tolist())(values)  # type: ignore[no-any-return]
    return column.to_pylist()  # type: ignore[no-any-return]


def python_rows(cls: type, batch: pa.RecordBatch) -> Iterable[Event]:
    """The batch's rows as `cls` events, through Python lists (the twin of `c_rows`)."""
    return map(tuple.__new__, itertools.repeat(cls), zip(*[pylist(c) for c in batch.columns], strict=True))


def _spec(rows: Any, column: pa.Array) -> tuple[int, Any, Any, int, Any] | None:
    """What `ticktape._rows.build` needs to read one column, or None when it does not take it."""
    n = len(column)
    if n and column.null_count == n:
        return (rows.KIND_NONE, None, None, 0, None)
    if column.null_count:
        return None
    t = column.type
    if pa.types.is_dictionary(t):
        if t.index_type != pa.int32() or not pa.types.is_string(t.value_type):
            return None
        indices = column.indices
        return (rows.KIND_DICT, indices.buffers()[1], None, indices.offset, tuple(column.dictionary.to_pylist()))
    buffers = column.buffers()
    if t == pa.float64():
        kind = rows.KIND_F64
    elif t == pa.int64():
        kind = rows.KIND_I64
    elif t == pa.bool_():
        kind = rows.KIND_BOOL
    elif t == pa.string():  # all-empty strings may come without a data buffer
        return (rows.KIND_STR, buffers[1], buffers[2] if buffers[2] is not None else b"", column.offset, None)
    else:
        return None
    return (kind, buffers[1], None, column.offset, None)


def c_rows(cls: type, batch: pa.RecordBatch) -> list[Event] | None:
    """The batch's rows as `cls` events, built in C; None when C is not built or a column is not taken."""
    rows = ROWS
    if rows is None:
        return None
    if batch.num_rows == 0:
        return []
    specs = []
    for column in batch.columns:
        spec = _spec(rows, column)
        if spec is None:
            return None
        specs.append(spec)
    built: list[Event] = rows.build(cls, batch.num_rows, tuple(specs))
    return built


def batch_rows(cls: type, batch: pa.RecordBatch) -> Iterable[Event]:
    """The batch's rows as `cls` events: `c_rows` when it takes the batch, else `python_rows`."""
    built = c_rows(cls, batch)
    return built if built is not None else python_rows(cls, batch)
