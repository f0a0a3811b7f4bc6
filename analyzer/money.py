"""Money for people: one way to print an exact decimal, one way to hand money to pandas.

DuckDB returns DECIMAL(38, 9) zero as `Decimal("0E-9")` and one as `Decimal("1.000000000")`;
`money_text` prints them `0` and `1`, everywhere the analyzer prints money (report, `ticktape sql`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow only where frames are made: `ticktape --help` and `sql` printing stay light
    import pyarrow as pa


def money_text(value: Decimal) -> str:
    """An exact decimal in plain notation without trailing zeros: `0`, `-20.2`, `1500` (never `0E-9`, `1.5E+3`)."""
    if value.is_nan() or value.is_infinite():
        return str(value)
    if value == 0:
        return "0"  # also -0 and 0E-9
    return format(value.normalize(), "f")


def decimals_to_float(table: pa.Table) -> pa.Table:
    """`table` with every top-level DECIMAL column as float64 (the nearest double), others untouched.

    pandas has no exact decimal dtype: DECIMAL columns arrive as object columns of `Decimal`,
    which do not plot or aggregate like numbers. Callers wanting exact money skip this."""
    import pyarrow as pa

    fields = [pa.field(f.name, pa.float64(), f.nullable, f.metadata) if pa.types.is_decimal(f.type) else f
              for f in table.schema]
    if all(a is b for a, b in zip(fields, table.schema, strict=True)):
        return table
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))
