"""The schema registry: every `.avsc` under `schemas/`, parsed once.

Files are named `<Type>.v<N>.avsc`. The highest version of a type is its *current*
(reader) schema; every older version stays so that events written years ago can still be
found by fingerprint and read through the current schema (Avro schema resolution).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from ticktape.errors import SchemaError

NAMESPACE = "ticktape"
RESERVED_PREFIX = "_"
"""Top-level field names may not start with this: ticktape's own columns beside an event's fields
(the analyzer's `_topic`, `_partition`, `_offset`, `_key`; the columnar tables' `_offset`, `_key`)
use it, so they never collide with a field."""
_FILE_RE = re.compile(r"^(?P<name>[A-Z][A-Za-z0-9]*)\.v(?P<version>[0-9]+)\.avsc$")

Schema = dict[str, Any]


def default_schema_dir() -> Path:
    """`$TICKTAPE_SCHEMAS`, else the repository's `schemas/` beside the package (a checkout),
    else the copy an installed wheel carries (`ticktape/_schemas`, made by setup.py)."""
    env = os.environ.get("TICKTAPE_SCHEMAS")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    checkout = package.parent / "schemas"
    return checkout if checkout.is_dir() else package / "_schemas"


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one event type, as read from its file."""

    name: str  # short name, e.g. "Trade"
    version: int
    path: Path
    schema: Schema  # as written in the file (named types inline)
    canonical: str  # Avro Parsing Canonical Form
    fingerprint: bytes  # CRC-64-AVRO of the canonical form, 8 bytes little-endian

    @property
    def full_name(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    @property
    def key_field(self) -> str | None:
        """The field whose value keys the event (partition, Kafka key), from `ticktape.key`."""
        key = self.schema.get("ticktape.key")
        return str(key) if key else None


_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro specification's CRC-64-AVRO (Rabin) fingerprint of `data`, as a number (`"int"` ->
    0x7275D51A3F395C8F). fastavro's `fingerprint` computes the same but rebuilds its 256-entry table
    on every call: ~0.3 ms each, ~12 ms of every start for the 43 schema versions."""
    table = _CRC64_TABLE
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def fingerprint_of(schema: Schema) -> tuple[str, bytes]:
    """Parsing Canonical Form and its CRC-64-AVRO fingerprint (8 bytes, as every tape holds them)."""
    canonical = to_parsing_canonical_form(fastavro.parse_schema(copy.deepcopy(schema), _write_hint=False))
    # Big-endian: what ticktape has always written (fastavro's little-endian hex read as a number, then
    # written little-endian). The specification's single-object encoding has the number little-endian.
    return canonical, crc64_avro(canonical.encode()).to_bytes(8, "big")


class SchemaRegistry:
    """All versions of all event types; lookup by name or by fingerprint."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self.versions = sorted(versions, key=lambda v: (v.name, v.version))
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        self.current: dict[str, SchemaVersion] = {}
        for v in self.versions:
            other = self.by_fingerprint.get(v.fingerprint)
            if other is not None:
                raise SchemaError(f"{v.path} has the same fingerprint as {other.path}: duplicate schema")
            self.by_fingerprint[v.fingerprint] = v
            self.current[v.name] = v  # sorted by version: the last one wins
        self._current_entry: Schema | None = None
        self.same_body: dict[bytes, SchemaVersion] = {
            v.fingerprint: self.current[v.name] for v in self.versions
            if v is not self.current[v.name] and same_body(v.canonical, self.current[v.name].canonical)}
        """Older versions whose bodies the current version writes byte for byte (fingerprint -> the
        current version): they differ only by enum symbols appended at the end (see `same_body`)."""

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaRegistry:
        """Parse every `<Type>.v<N>.avsc` file in `directory`."""
        directory = directory or default_schema_dir()
        if not directory.is_dir():
            raise SchemaError(f"schema directory {directory} does not exist")
        versions = []
        for path in sorted(directory.glob("*.avsc")):
            m = _FILE_RE.match(path.name)
            if not m:
                raise SchemaError(f"{path}: schema files must be named <Type>.v<N>.avsc")
            try:
                schema = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise SchemaError(f"{path}: invalid JSON: {exc}") from exc
            if schema.get("name") != m["name"] or schema.get("namespace", NAMESPACE) != NAMESPACE:
                raise SchemaError(f"{path}: record name must be {NAMESPACE}.{m['name']}")
            names = [str(f.get("name", "")) for f in schema.get("fields", ()) if isinstance(f, dict)]
            reserved = [n for n in names if n.startswith(RESERVED_PREFIX)]
            if reserved:
                raise SchemaError(f"{path}: field {reserved[0]!r}: names starting with {RESERVED_PREFIX!r} are "
                                  "reserved for ticktape's own columns (_topic, _partition, _offset, _key)")
            try:
                canonical, fp = fingerprint_of(schema)
            except Exception as exc:
                raise SchemaError(f"{path}: invalid Avro schema: {exc}") from exc
            versions.append(SchemaVersion(m["name"], int(m["version"]), path, schema, canonical, fp))
        if not versions:
            raise SchemaError(f"no schemas found in {directory}")
        return cls(versions)

    def history(self, name: str) -> list[SchemaVersion]:
        """Every version of one type, oldest first."""
        return [v for v in self.versions if v.name == name]

    def names(self) -> list[str]:
        return sorted(self.current)

    def entry_schema(self, versions: list[SchemaVersion] | None = None) -> Schema:
        """The record stored in a file-tape segment: `{key, event: union of every type}`.

        With the current versions (no argument) the answer is built once and shared: every new
        segment and every segment reader asks for it (~4 ms each to build). Do not mutate it.
        """
        if versions is None:
            if self._current_entry is None:
                self._current_entry = self._entry_schema([self.current[n] for n in self.names()])
            return self._current_entry
        return self._entry_schema(versions)

    @staticmethod
    def _entry_schema(chosen: list[SchemaVersion]) -> Schema:
        return {
            "type": "record",
            "name": "TapeEntry",
            "namespace": NAMESPACE,
            "fields": [
                {"name": "key", "type": ["null", "string"]},
                {"name": "event", "type": inline_once([v.schema for v in chosen])},
            ],
        }

    def check_compatibility(self) -> list[str]:
        """Problems where a version cannot read data written with the version before it."""
        problems = []
        for name in self.names():
            history = self.history(name)
            for old, new in itertools.pairwise(history):
                problems.extend(compatibility_problems(old, new))
        return problems


def same_body(old_canonical: str, new_canonical: str) -> bool:
    """Whether every body written with `old` is, byte for byte, `new`'s body of the same value.

    True when the two Parsing Canonical Forms differ only in enums that gained symbols at the
    end: an enum is written as its symbol's index, so the old symbols keep their indices. Such a
    version is how ticktape adds an order type without changing the bytes (and digests) of
    every intent that does not use it: the codec writes an event in the oldest such version
    that holds its values.
    """
    def walk(old: Any, new: Any) -> bool:
        if isinstance(old, dict) and isinstance(new, dict):
            if old.keys() != new.keys():
                return False
            if old.get("type") == "enum":
                symbols, more = old["symbols"], new["symbols"]
                return bool(more[:len(symbols)] == symbols and old.get("name") == new.get("name"))
            return all(walk(old[k], new[k]) for k in old)
        if isinstance(old, list) and isinstance(new, list):
            return len(old) == len(new) and all(walk(a, b) for a, b in zip(old, new, strict=True))
        return bool(old == new)

    return walk(json.loads(old_canonical), json.loads(new_canonical))


def enum_symbols(schema: Schema) -> dict[str, tuple[str, ...]]:
    """Top-level field name -> symbols, for the record's fields whose type is an enum."""
    out = {}
    for field in schema["fields"]:
        kind = field["type"]
        if isinstance(kind, dict) and kind.get("type") == "enum":
            out[field["name"]] = tuple(kind["symbols"])
    return out


def inline_once(schemas: list[Schema]) -> list[Schema]:
    """Deep-copy schemas so each named type is defined once and referenced by name after.

    Each schema file is self-contained (it defines `Side`, `PriceSize`, ... inline); a union
    of several of them would define those names twice, which Avro forbids.
    """
    seen: set[str] = set()

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, list):
            return [walk(n, namespace) for n in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind in ("record", "enum", "fixed", "error"):
            ns = node.get("namespace", namespace)
            full = node["name"] if "." in node["name"] else f"{ns}.{node['name']}"
            if full in seen:
                return full
            seen.add(full)
            node = dict(node)
            if kind in ("record", "error"):
                node["fields"] = [{**f, "type": walk(f["type"], ns)} for f in node["fields"]]
            return node
        if kind == "array":
            return {**node, "items": walk(node["items"], namespace)}
        if kind == "map":
            return {**node, "values": walk(node["values"], namespace)}
        return node

    return [walk(copy.deepcopy(s), NAMESPACE) for s in schemas]


def compatibility_problems(old: SchemaVersion, new: SchemaVersion) -> list[str]:
    """Why `new` (reader) cannot read data written with `old` (writer), if it cannot.

    Round-trips generated records written with the old schema through the new one, which
    exercises the full Avro resolution rules as fastavro implements them.
    """
    import io

    from fastavro.utils import generate_many

    where = f"{new.path.name} reading {old.path.name}"
    problems = []
    old_parsed = fastavro.parse_schema(copy.deepcopy(old.schema))
    new_parsed = fastavro.parse_schema(copy.deepcopy(new.schema))
    old_fields = {f["name"] for f in old.schema["fields"]}
    for field in new.schema["fields"]:
        if field["name"] not in old_fields and "default" not in field:
            problems.append(f"{where}: new field {field['name']!r} has no default")
    if problems:
        return problems
    try:
        for record in generate_many(old_parsed, 20):
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, old_parsed, record)
            buf.seek(0)
            fastavro.schemaless_reader(buf, old_parsed, new_parsed)
    except Exception as exc:
        problems.append(f"{where}: {type(exc).__name__}: {exc}")
    return problems


@cache
def registry() -> SchemaRegistry:
    """The process-wide registry of the default schema directory (parsed once)."""
    return SchemaRegistry.load()


def iter_named_records(schema: Schema) -> Iterator[Schema]:
    """Every record definition inside a schema, outermost first."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop(0)
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind == "record":
                yield node
                stack.extend(f["type"] for f in node["fields"])
            elif kind == "array":
                stack.append(node["items"])
            elif kind == "map":
                stack.append(node["values"])
            elif isinstance(kind, dict | list):
                stack.append(kind)
