"""Reading a segment written before some event type's schema changed, at the fast decoder's speed.

A segment's header holds the union of every event type as it was when the segment was written,
and their fingerprints in union order (`ticktape.fingerprints`). When a type gains a version, every
segment written before holds its old version in that union. Resolving the whole segment through
fastavro for it reads ~37x slower (25k trades/s instead of 940k/s here), although the segment's
trades never changed shape.

So such a segment decodes with the writer's own union, compiled with today's classes for every type
whose version is still current (or writes the same body, see `SchemaRegistry.same_body`), and a
marker class for each type that changed. Only records of a changed type are resolved, one at a time:
when the new version only appended top-level fields with plain defaults (the usual evolution), by
adding those defaults to the old tuple; otherwise through Avro schema resolution (`TypeCodec.decode_body`
of their old version; nested records that only changed types use decode to plain tuples and are
re-encoded with the old schema for that step).
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
    for i, name, fp in changed:
        marker = type(f"Old{name.rsplit('.', 1)[-1]}", (tuple,), {"__slots__": ()})
        classes[name] = marker
        nested = set(_records_used(union[i], "ticktape", defs, set())) - {name}
        resolvers[marker] = _resolver(codec, fp, nested_as_today=nested <= current_records)
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


def _resolver(codec: Codec, fingerprint: bytes, *, nested_as_today: bool) -> Resolver:
    """Old-version record (a tuple) -> today's event: today's class with the appended fields' defaults
    when only that changed and every nested record decodes as today's; else by Avro resolution."""
    old = codec.registry.by_fingerprint[fingerprint]
    current = codec.registry.current[old.name]
    defaults = appended_defaults(old.schema, current.schema) if nested_as_today else None
    if defaults is not None:
        make = tuple.__new__
        cls = codec.by_fingerprint[current.fingerprint].cls

        def extend(record: tuple[Any, ...]) -> Event:
            return make(cls, (*record, *defaults))
        return extend
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
