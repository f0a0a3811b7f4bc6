"""Reading a segment written before some event type's schema changed, at the fast decoder's speed.

A segment's header holds the union of every event type as it was when the segment was written,
and their fingerprints in union order (`ticktape.fingerprints`). When a type gains a version, every
segment written before holds its old version in that union. Resolving the whole segment through
fastavro for it reads ~37x slower (25k trades/s instead of 940k/s here), although the segment's
trades never changed shape.

So such a segment decodes with the writer's own union, compiled with today's classes for every type
whose version is still current (or writes the same body, see `SchemaRegistry.same_body`), and a
marker class for each type that changed. Only records of a changed type are resolved, one at a time:
when the new version only appended fields with plain defaults (the usual evolution), at the top level
or inside nested records (MarketBook v2 appended to the RunnerBook of its `runners` array), by adding
those defaults to the old tuples (`upgrader`: nested records the writer's union decodes as plain
tuples become today's classes on the way); otherwise through Avro schema resolution
(`TypeCodec.decode_body` of their old version; nested records that only changed types use decode to
plain tuples and are re-encoded with the old schema for that step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ticktape import avro_program as ap
from ticktape.codec import Codec
from ticktape.events import RECORD_TYPES, Event
from ticktape.schemas import fingerprint_of

Resolver = Callable[[tuple[Any, ...]], Event]


def _full_name(node: dict[str, Any], ns: str) -> tuple[str, str]:
    name = str(node["name"])
    if "." in name:
        return name, name.rsplit(".", 1)[0]
    ns = str(node.get("namespace", ns))
    return (f"{ns}.{name}" if ns else name), ns


def _definitions(node: Any, ns: str, out: dict[str, tuple[dict[str, Any], str]]) -> None:
    """Every named type defined inside `node`: full name -> (definition, its namespace)."""
    if isinstance(node, list):
        for n in node:
            _definitions(n, ns, out)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            full, inner = _full_name(node, ns)
            out[full] = (node, inner)
            for field in node.get("fields", ()):
                _definitions(field["type"], inner, out)
        elif kind == "array":
            _definitions(node["items"], ns, out)
        elif kind == "map":
            _definitions(node["values"], ns, out)
        elif isinstance(kind, dict | list):
            _definitions(kind, ns, out)


def _records_used(node: Any, ns: str, defs: dict[str, tuple[dict[str, Any], str]], seen: set[str]) -> Iterator[str]:
    """Full names of the records `node` uses, following references to where they are defined."""
    if isinstance(node, str):
        full = node if "." in node or not ns else f"{ns}.{node}"
        if full not in defs:
            full = node
        if full in defs and full not in seen:
            seen.add(full)
            definition, inner = defs[full]
            if definition.get("type") in ("record", "error"):
                yield full
            for field in definition.get("fields", ()):
                yield from _records_used(field["type"], inner, defs, seen)
    elif isinstance(node, list):
        for n in node:
            yield from _records_used(n, ns, defs, seen)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            full, inner = _full_name(node, ns)
            if full not in seen:
                seen.add(full)
                if kind in ("record", "error"):
                    yield full
                for field in node.get("fields", ()):
                    yield from _records_used(field["type"], inner, defs, seen)
        elif kind == "array":
            yield from _records_used(node["items"], ns, defs, seen)
        elif kind == "map":
            yield from _records_used(node["values"], ns, defs, seen)
        elif isinstance(kind, dict | list | str):
            yield from _records_used(kind, ns, defs, seen)


def legacy_plan(codec: Codec, entry_schema: dict[str, Any],
                fingerprints: list[str]) -> tuple[ap.Program, dict[type, Resolver]] | None:
    """The program for a segment whose union holds changed types, and marker class -> resolver.

    None when the header cannot be planned for (no fingerprints, a count that does not match the
    union, or a version the registry does not know): the caller resolves the whole segment then.
    """
    union = entry_schema["fields"][1]["type"]
    if not isinstance(union, list) or len(union) != len(fingerprints) or fingerprints == [""]:
        return None
    registry = codec.registry
    writable = {fp.hex() for fp in registry.by_fingerprint if codec.by_fingerprint[fp].writable}
    defs: dict[str, tuple[dict[str, Any], str]] = {}
    _definitions(entry_schema, "", defs)
    current_records: set[str] = set()
    seen: set[str] = set()
    changed: list[tuple[int, str, bytes]] = []
    for i, (branch, fp_hex) in enumerate(zip(union, fingerprints, strict=True)):
        if fp_hex in writable:
            # Its fingerprint covers every record it nests: all of them have today's shape.
            current_records.update(_records_used(branch, "ticktape", defs, seen))
            continue
        fp = bytes.fromhex(fp_hex)
        if fp not in registry.by_fingerprint or not isinstance(branch, dict):
            return None
        changed.append((i, _full_name(branch, "ticktape")[0], fp))
    classes: dict[str, type] = {name: RECORD_TYPES[name] for name in current_records if name in RECORD_TYPES}
    resolvers: dict[type, Resolver] = {}
    for _, name, fp in changed:
        marker = type(f"Old{name.rsplit('.', 1)[-1]}", (tuple,), {"__slots__": ()})
        classes[name] = marker
        resolvers[marker] = _resolver(codec, fp, frozenset(current_records))
        old = registry.by_fingerprint[fp]
        defaults = appended_defaults(old.schema, registry.current[old.name].schema)
        if defaults is not None:
            # Only top-level fields were appended (Trade v1 -> v2): a block of these records can still be
            # decoded into Arrow columns, the appended ones filled with their defaults (columnar.decode_block_table).
            marker.ticktape_current = RECORD_TYPES[name]  # type: ignore[attr-defined]
            marker.ticktape_defaults = defaults  # type: ignore[attr-defined]
    return ap.compile_schema(entry_schema, classes), resolvers


def appended_defaults(old: dict[str, Any], new: dict[str, Any]) -> tuple[Any, ...] | None:
    """The defaults of the fields `new` appends to `old`'s, when that is the only difference and each
    default is a plain value (null, boolean, number, string); else None."""
    old_fields, new_fields = old["fields"], new["fields"]
    if len(new_fields) <= len(old_fields) or not all("default" in f for f in new_fields[len(old_fields):]):
        return None
    appended = new_fields[len(old_fields):]
    defaults = tuple(f["default"] for f in appended)
    if not all(d is None or isinstance(d, bool | int | float | str) for d in defaults):
        return None
    for f in appended:  # a default's JSON is the value only for these (bytes and fixed defaults are text)
        kind = f["type"][0] if isinstance(f["type"], list) else f["type"]
        kind = kind.get("type") if isinstance(kind, dict) else kind
        if kind not in ("null", "boolean", "int", "long", "float", "double", "string", "enum"):
            return None
    head = {**new, "fields": new_fields[:len(old_fields)]}
    if fingerprint_of(head)[1] != fingerprint_of(old)[1]:
        return None  # a field before them changed too
    return defaults


Convert = Callable[[Any], Any]
_PLAIN_DEFAULT_TYPES = ("null", "boolean", "int", "long", "float", "double", "string", "enum")


class _Unsupported(Exception):
    """A difference `upgrader` does not turn into defaults (Avro resolution handles it)."""


class _Upgrade:
    """Builds the converter of old decoded values to today's, walking the old and new schemas together."""

    def __init__(self, old: dict[str, Any], new: dict[str, Any], as_today: frozenset[str]) -> None:
        self.old_defs: dict[str, tuple[dict[str, Any], str]] = {}
        self.new_defs: dict[str, tuple[dict[str, Any], str]] = {}
        _definitions(old, "", self.old_defs)
        _definitions(new, "", self.new_defs)
        self.as_today = as_today
        self.visiting: set[str] = set()

    def _named(self, node: Any, ns: str, defs: dict[str, tuple[dict[str, Any], str]]) -> tuple[Any, str]:
        """A type reference resolved to its definition (and that definition's namespace)."""
        if isinstance(node, str) and node not in ap_primitives:
            full = node if "." in node or not ns else f"{ns}.{node}"
            if full not in defs:
                full = node
            if full not in defs:
                raise _Unsupported(f"unknown type {node!r}")
            return defs[full]
        if isinstance(node, dict) and isinstance(node.get("type"), str) and node["type"] in ap_primitives:
            return node["type"], ns  # {"type": "long"}
        return node, ns

    def convert(self, old: Any, old_ns: str, new: Any, new_ns: str) -> Convert | None:
        """Old decoded value -> today's, or None when it is already today's (raises _Unsupported)."""
        old, old_ns = self._named(old, old_ns, self.old_defs)
        new, new_ns = self._named(new, new_ns, self.new_defs)
        if isinstance(old, str) or isinstance(new, str):
            if old != new:
                raise _Unsupported(f"{old!r} became {new!r}")
            return None
        if isinstance(old, list) or isinstance(new, list):
            if not (isinstance(old, list) and isinstance(new, list)) or len(old) != len(new):
                raise _Unsupported("a union changed")
            convs = [self.convert(o, old_ns, n, new_ns) for o, n in zip(old, new, strict=True)]
            changed = [c for c in convs if c is not None]
            if not changed:
                return None
            if len(changed) == 1 and all(b == "null" for b, c in zip(old, convs, strict=True) if c is None):
                inner = changed[0]
                return lambda v: None if v is None else inner(v)
            raise _Unsupported("a union of several changed branches")  # which branch a value is: unknown
        kind = old.get("type")
        if kind != new.get("type"):
            raise _Unsupported(f"{kind!r} became {new.get('type')!r}")
        if kind == "array":
            item = self.convert(old["items"], old_ns, new["items"], new_ns)
            return None if item is None else (lambda v: tuple(map(item, v)))
        if kind == "map":
            value = self.convert(old["values"], old_ns, new["values"], new_ns)
            return None if value is None else (lambda v: {k: value(x) for k, x in v.items()})
        if kind in ("enum", "fixed"):
            keys = ("name", "symbols", "size")
            if {k: old.get(k) for k in keys} != {k: new.get(k) for k in keys}:
                raise _Unsupported(f"{kind} {old.get('name')} changed")
            return None
        if kind in ("record", "error"):
            return self.record(old, old_ns, new, new_ns)
        raise _Unsupported(f"schema node {kind!r}")

    def record(self, old: dict[str, Any], old_ns: str, new: dict[str, Any], new_ns: str) -> Convert | None:
        name, old_inner = _full_name(old, old_ns)
        new_name, new_inner = _full_name(new, new_ns)
        if name != new_name or name not in RECORD_TYPES or name in self.visiting:
            raise _Unsupported(f"record {name} became {new_name} (or is recursive)")
        self.visiting.add(name)
        try:
            return self._record(name, old, old_inner, new, new_inner)
        finally:
            self.visiting.discard(name)

    def _record(self, name: str, old: dict[str, Any], old_inner: str, new: dict[str, Any],
                new_inner: str) -> Convert | None:
        old_fields, new_fields = old["fields"], new["fields"]
        if [f["name"] for f in old_fields] != [f["name"] for f in new_fields[:len(old_fields)]]:
            raise _Unsupported(f"{name}: fields before the appended ones changed")
        convs = [(i, c) for i, (o, n) in enumerate(zip(old_fields, new_fields, strict=False))
                 if (c := self.convert(o["type"], old_inner, n["type"], new_inner)) is not None]
        defaults = tuple(_plain_default(f, name) for f in new_fields[len(old_fields):])
        if name in self.as_today:  # decoded with today's class: it must be today's shape already
            if convs or defaults:
                raise _Unsupported(f"{name} decodes as today's class but changed")
            return None
        cls, make = RECORD_TYPES[name], tuple.__new__
        if not convs:
            if not defaults:
                return lambda v: make(cls, v)
            return lambda v: make(cls, (*v, *defaults))

        def upgrade(v: tuple[Any, ...]) -> Any:
            values = list(v)
            for i, conv in convs:
                values[i] = conv(values[i])
            values.extend(defaults)
            return make(cls, values)
        return upgrade


ap_primitives = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))


def _plain_default(field: dict[str, Any], record: str) -> Any:
    """An appended field's default as the decoder would give it: a plain value, or () for an empty
    array default (arrays decode to tuples); anything else (bytes/fixed text, records, maps,
    non-empty arrays) raises _Unsupported."""
    if "default" not in field:
        raise _Unsupported(f"{record}.{field['name']} was appended without a default")
    default, kind = field["default"], field["type"]
    kind = kind[0] if isinstance(kind, list) else kind  # a union's default is of its first branch
    kind = kind.get("type") if isinstance(kind, dict) else kind
    if kind == "array" and default == []:
        return ()
    if kind not in _PLAIN_DEFAULT_TYPES or not (default is None or isinstance(default, bool | int | float | str)):
        raise _Unsupported(f"{record}.{field['name']}: default {default!r} of type {kind!r}")
    if kind in ("float", "double") and isinstance(default, int) and not isinstance(default, bool):
        return float(default)  # the decoder gives a float
    return default


def upgrader(old: dict[str, Any], new: dict[str, Any], as_today: frozenset[str] = frozenset()) -> Convert | None:
    """Old-version record (a tuple, nested records as plain tuples unless named in `as_today`) ->
    today's event, when the new version only appended fields with plain or empty-array defaults, at
    any depth (inside nested records, arrays and maps of them, nullable unions of them); else None."""
    try:
        return _Upgrade(old, new, as_today).record(old, "", new, "") or (lambda v: v)
    except _Unsupported:
        return None


def _resolver(codec: Codec, fingerprint: bytes, as_today: frozenset[str]) -> Resolver:
    """Old-version record (a tuple) -> today's event: by adding appended fields' defaults (`upgrader`)
    when only that changed; else by Avro resolution (`_avro_resolver`)."""
    old = codec.registry.by_fingerprint[fingerprint]
    current = codec.registry.current[old.name]
    upgrade = upgrader(old.schema, current.schema, as_today)
    if upgrade is not None:
        return upgrade
    return _avro_resolver(codec, fingerprint)


def _avro_resolver(codec: Codec, fingerprint: bytes) -> Resolver:
    """Old-version record -> today's event through Avro schema resolution (re-encoded with its old
    schema, decoded through today's)."""
    old = codec.registry.by_fingerprint[fingerprint]
    encode = ap.make_encoder(ap.compile_schema(old.schema))
    decode_old = codec.by_fingerprint[fingerprint].decode_body

    def resolve(record: tuple[Any, ...]) -> Event:
        out = bytearray()
        encode(tuple(record), out)
        event, _ = decode_old(bytes(out), 0)
        return event  # type: ignore[no-any-return]
    return resolve


def resolve_entries(entries: list[Any], resolvers: dict[type, Resolver]) -> list[Any]:
    """(key, event) entries with each old-version event replaced by today's (in place; returned)."""
    for i, (key, event) in enumerate(entries):
        resolve = resolvers.get(type(event))
        if resolve is not None:
            entries[i] = (key, resolve(event))
    return entries
