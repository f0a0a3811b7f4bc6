"""Avro event schemas -> Arrow schemas, DuckDB table names/DDL, and events -> Arrow tables.

The schemas in `schemas/` stay the single source of truth: every table the analyzer
creates is derived from the *current* version of its event type, so a new field (new
schema version) becomes a new column (`ALTER TABLE ... ADD COLUMN`) on the next load.

Mapping: long -> int64, int -> int32, double -> float64, float -> float32, boolean -> bool,
string and enum -> string, bytes -> binary, ["null", X] -> nullable X, array -> list,
record -> struct, map -> map<string, X>. Nested ladders (`bids`, `runners`) therefore arrive
in DuckDB as `STRUCT(price DOUBLE, size DOUBLE)[]` and friends.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa

from ticktape.events import ENUM_SYMBOLS
from ticktape.schemas import registry
from ticktape.tape import columnar

POSITION_FIELDS = [pa.field("_topic", pa.string(), nullable=False), pa.field("_partition", pa.int32(), nullable=False),
                   pa.field("_offset", pa.int64(), nullable=False), pa.field("_key", pa.string())]
"""Columns every event table starts with: where the event sits on the tape, and its key.

Named with the prefix the schema registry refuses for fields (`ticktape.schemas.RESERVED_PREFIX`), so they never
collide with an event's own fields (`CustomData.key`), and `_offset` needs no quoting in SQL
(OFFSET is a keyword). The columnar reader's tables use the same `_offset` and `_key`."""

OLD_POSITION_NAMES = {"topic": "_topic", "partition": "_partition", "offset": "_offset", "key": "_key"}
"""What tables made before that rule called the position columns (`ensure_table` renames them)."""


def snake_case(type_name: str) -> str:
    """`MarketBook` -> `market_book`: the DuckDB table of an event type."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", type_name).lower()


def is_time_field(name: str) -> bool:
    """Integer-ns timestamp fields by the schemas' naming convention (`ts_*`, `*_time`, `*_date`)."""
    return name.startswith("ts_") or name.endswith(("_time", "_date"))


@cache
def event_schema(type_name: str) -> pa.Schema:
    """The Arrow schema of an event type's fields (current schema version), in schema order.

    The mapping is the columnar reader's (`ticktape.tape.columnar.arrow_schema`, minus its
    `_offset`/`_key` columns), so tables from either path concatenate.
    """
    return pa.schema(list(columnar.arrow_schema(type_name))[2:])


@cache
def table_schema(type_name: str) -> pa.Schema:
    """Position columns + the event's fields: the layout of the type's DuckDB table."""
    return pa.schema(POSITION_FIELDS + list(event_schema(type_name)))


def duckdb_type(typ: pa.DataType) -> str:
    """The DuckDB type spelling of an Arrow type (as produced by `event_schema`)."""
    if pa.types.is_int64(typ):
        return "BIGINT"
    if pa.types.is_int32(typ):
        return "INTEGER"
    if pa.types.is_float64(typ):
        return "DOUBLE"
    if pa.types.is_float32(typ):
        return "FLOAT"
    if pa.types.is_boolean(typ):
        return "BOOLEAN"
    if pa.types.is_string(typ):
        return "VARCHAR"
    if pa.types.is_binary(typ):
        return "BLOB"
    if pa.types.is_list(typ):
        return f"{duckdb_type(typ.value_type)}[]"
    if pa.types.is_map(typ):
        return f"MAP(VARCHAR, {duckdb_type(typ.item_type)})"
    if pa.types.is_struct(typ):
        inner = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in typ)
        return f"STRUCT({inner})"
    raise ValueError(f"no DuckDB type for {typ}")


def create_table_sql(type_name: str) -> str:
    """`CREATE TABLE IF NOT EXISTS` for an event type's table."""
    cols = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' + ("" if f.nullable else " NOT NULL")
                     for f in table_schema(type_name))
    return f'CREATE TABLE IF NOT EXISTS "{snake_case(type_name)}" ({cols})'


def timestamp_view_sql(type_name: str) -> str:
    """`<table>_v`: the same rows with every integer-ns time field as TIMESTAMP_NS (UTC)."""
    table = snake_case(type_name)
    times = [f.name for f in event_schema(type_name) if is_time_field(f.name) and pa.types.is_int64(f.type)]
    replace = ", ".join(f'make_timestamp_ns("{n}") AS "{n}"' for n in times)
    body = f"* REPLACE ({replace})" if replace else "*"
    return f'CREATE OR REPLACE VIEW "{table}_v" AS SELECT {body} FROM "{table}"'


@cache
def low_cardinality_columns(type_name: str) -> frozenset[str]:
    """String columns with few distinct values (enums, venue, the key field, ids of robots/markets).

    DuckDB ingests dictionary-encoded Arrow strings markedly faster (measured ~1.5x on Trade),
    and encoding these columns costs less than it saves; unique ids (trade_id) are left alone.
    """
    avro = registry().current[type_name]
    names = {"_key", "venue", "instrument", "market_id", "robot", "status", "account", "asset"}
    if avro.key_field:
        names.add(avro.key_field)
    for f in avro.schema["fields"]:
        t = f["type"]
        is_enum = t.get("type") == "enum" if isinstance(t, dict) else str(t).rpartition(".")[2] in ENUM_SYMBOLS
        if is_enum:
            names.add(f["name"])
    return frozenset(names)


# --- events -> Arrow -------------------------------------------------------------------------

def events_to_table(type_name: str, events: Sequence[Any], offsets: Sequence[int] | np.ndarray[Any, Any],
                    keys: Sequence[str | None]) -> pa.Table:
    """`_offset`, `_key` + the event's fields, from events of ONE type (the columnar reader's layout).

    The generic (row to column) path, used where no columnar reader applies. Built by
    `ticktape.tape.columnar.events_to_table`, then normalised like the loader's block tables
    (all columns nullable, no schema metadata) so the two kinds concatenate in one batch.
    """
    table = columnar.events_to_table(type_name, offsets, keys, events)
    return pa.Table.from_arrays(table.columns, names=table.column_names)
