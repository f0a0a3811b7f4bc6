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
from ticktape.schemas import NAMESPACE, registry

_PRIMITIVES: dict[str, pa.DataType] = {
    "long": pa.int64(), "int": pa.int32(), "double": pa.float64(), "float": pa.float32(),
    "boolean": pa.bool_(), "string": pa.string(), "bytes": pa.binary(),
}

POSITION_FIELDS = [pa.field("topic", pa.string(), nullable=False), pa.field("partition", pa.int32(), nullable=False),
                   pa.field("offset", pa.int64(), nullable=False), pa.field("key", pa.string())]
"""Columns every event table starts with: where the event sits on the tape, and its key."""


def snake_case(type_name: str) -> str:
    """`MarketBook` -> `market_book`: the DuckDB table of an event type."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", type_name).lower()


def is_time_field(name: str) -> bool:
    """Integer-ns timestamp fields by the schemas' naming convention (`ts_*`, `*_time`, `*_date`)."""
    return name.startswith("ts_") or name.endswith(("_time", "_date"))


def _arrow_type(schema: Any, named: dict[str, pa.DataType], ns: str) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) of an Avro schema node; `named` collects named types by full name."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema], False
        full = schema if "." in schema else f"{ns}.{schema}"
        return named[full], False
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) != 1:
            raise ValueError(f"only [null, X] unions map to a column, not {schema!r}")
        typ, _ = _arrow_type(branches[0], named, ns)
        return typ, "null" in schema
    kind = schema["type"]
    if kind == "enum":
        named[f"{schema.get('namespace', ns)}.{schema['name']}"] = pa.string()
        return pa.string(), False
    if kind == "array":
        item, item_null = _arrow_type(schema["items"], named, ns)
        return pa.list_(pa.field("item", item, nullable=item_null)), False
    if kind == "map":
        value, _ = _arrow_type(schema["values"], named, ns)
        return pa.map_(pa.string(), value), False
    if kind == "record":
        rns = schema.get("namespace", ns)
        fields = []
        for f in schema["fields"]:
            typ, nullable = _arrow_type(f["type"], named, rns)
            fields.append(pa.field(f["name"], typ, nullable=nullable))
        struct = pa.struct(fields)
        named[f"{rns}.{schema['name']}"] = struct
        return struct, False
    if isinstance(kind, dict | list | str):
        return _arrow_type(kind, named, ns)
    raise ValueError(f"unsupported Avro schema {schema!r}")


@cache
def event_schema(type_name: str) -> pa.Schema:
    """The Arrow schema of an event type's fields (current schema version), in schema order."""
    avro = registry().current[type_name].schema
    struct, _ = _arrow_type(avro, {}, NAMESPACE)
    return pa.schema(list(struct))


@cache
def table_schema(type_name: str) -> pa.Schema:
    """Position columns + the event's fields: the layout of the type's DuckDB table."""
    return pa.schema(POSITION_FIELDS + list(event_schema(type_name)))


def duckdb_type(typ: pa.DataType) -> str:
    """The DuckDB type spelling of an Arrow type (as produced by `_arrow_type`)."""
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

def _to_plain(value: Any, typ: pa.DataType) -> Any:
    """Nested NamedTuples -> what pyarrow accepts for the type (it takes tuples for structs)."""
    if value is None:
        return None
    if pa.types.is_map(typ):
        return list(value.items())
    return value


def _needs_plain(typ: pa.DataType) -> bool:
    if pa.types.is_map(typ):
        return True
    if pa.types.is_list(typ):
        return _needs_plain(typ.value_type)
    if pa.types.is_struct(typ):
        return any(_needs_plain(f.type) for f in typ)
    return False


def events_to_table(type_name: str, events: Sequence[Any], offsets: Sequence[int] | np.ndarray[Any, Any],
                    keys: Sequence[str | None]) -> pa.Table:
    """`_offset`, `_key` + the event's fields, from events of ONE type (the columnar reader's layout).

    The generic (row to column) path, used where no columnar reader applies: one
    `zip(*events)` transposes the batch in C, then one `pa.array` per column.
    """
    fields = list(event_schema(type_name))
    columns: list[pa.Array] = [pa.array(offsets, pa.int64()), pa.array(keys, pa.string())]
    transposed = list(zip(*events, strict=True)) if events else [() for _ in fields]
    for field, col in zip(fields, transposed, strict=True):
        values = [_to_plain(v, field.type) for v in col] if _needs_plain(field.type) else col
        columns.append(pa.array(values, field.type))
    names = ["_offset", "_key", *(f.name for f in fields)]
    return pa.Table.from_arrays(columns, names=names)
