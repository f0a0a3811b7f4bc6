"""The one codec: Avro single-object encoding of events, and record bodies for the tape.

Single-object encoding (Avro spec): `C3 01` + 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema + the binary body. The fingerprint finds the writer
schema among every version in `schemas/`; the body is then read through the *current*
schema (Avro schema resolution), so old events still decode into today's types.

Fast path: writer == current schema, decoded by the compiled program (C extension when
built, pure Python otherwise) straight into NamedTuples. Old versions go through fastavro's
schema resolution and are converted to the current NamedTuple.
"""

from __future__ import annotations

import copy
import io
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import fastavro

from ticktape import avro_program as ap
from ticktape.cext import optional_extension
from ticktape.errors import DecodeError, EncodeError, ValidationError
from ticktape.events import EVENT_TYPES, RECORD_TYPES, Event
from ticktape.schemas import NAMESPACE, SchemaRegistry, SchemaVersion, enum_symbols, fingerprint_of, registry

MARKER = b"\xc3\x01"
HEADER_SIZE = 10




VM = optional_extension("ticktape._avrovm")
"""The C engine when built (`ticktape._avrovm`), else None and the pure-Python engine runs."""

BodyDecoder = Callable[[bytes, int], tuple[Any, int]]
BodyEncoder = Callable[[Any, bytearray], None]


ENGINES = ("c", "python")
"""The two engines that run a program: `c` (`ticktape._avrovm`) and `python` (`avro_program`)."""


def _vm(engine: str | None) -> Any:
    """The C module for `engine` ("c", or None when it is built), None for the Python engine."""
    if engine is None or engine == "python":
        return VM if engine is None else None
    if engine != "c":
        raise ValueError(f"unknown codec engine {engine!r}; known: {', '.join(ENGINES)}")
    if VM is None:
        raise ValueError("the C codec engine is not available (not built, or TICKTAPE_NO_CEXT=1)")
    return VM


def body_decoder(prog: ap.Program, engine: str | None = None) -> BodyDecoder:
    """`(buf, pos) -> (value, new_pos)` for a program, on `engine` (None: the fastest available)."""
    vm = _vm(engine)
    if vm is not None:
        vm_decode = vm.decode
        return lambda buf, pos: vm_decode(prog, buf, pos)  # type: ignore[no-any-return,unused-ignore]
    return ap.make_decoder(prog)


def body_encoder(prog: ap.Program, engine: str | None = None) -> BodyEncoder:
    """`(value, out: bytearray) -> None` for a program, on `engine` (None: the fastest available)."""
    vm = _vm(engine)
    if vm is not None:
        vm_encode_into = vm.encode_into
        return lambda value, out: vm_encode_into(prog, value, out)  # type: ignore[no-any-return,unused-ignore]
    return ap.make_encoder(prog)


# --- converting plain Python data (fastavro dicts, JSON) into event tuples ------------------

Converter = Callable[[Any, str], Any]

NONFINITE = "ticktape.nonfinite"
"""The field property that lets a float or double field hold NaN and ±Infinity from outside:
`{"name": "x", "type": "double", "ticktape.nonfinite": true}` in its .avsc (Avro keeps unknown
field attributes as metadata; they are not part of the fingerprint). MarketBook v2 sets it on the runners'
`sp_near`/`sp_far`: Betfair sends "NaN"/"Infinity" for a starting price it cannot compute yet."""
_RANGES = {"int": (-(1 << 31), (1 << 31) - 1), "long": (-(1 << 63), (1 << 63) - 1)}
_FLOAT_MAX = 3.4028234663852886e38


def finite(value: float) -> float:
    """The rule for every number that enters the tape from outside (`put`, imports, venue feeds):
    it is finite. NaN, ±Infinity and literals such as 1e400 (which overflow to Infinity) raise
    ValueError, unless the field is marked `NONFINITE` (then its converter does not call this)."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number (NaN, ±Infinity and numbers beyond ±1.8e308 "
                         "are refused)")
    return value


def _short(value: Any) -> str:
    """A value for an error line: a 400-digit number is named by its length, long text is cut."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def make_converter(schema: Any, named: dict[str, Converter] | None = None, ns: str = NAMESPACE, *,
                   check: bool = False, nonfinite: bool = False) -> Converter:
    """Compile a schema into `convert(value, path) -> typed value`.

    Accepts what JSON or fastavro produce: dicts for records, lists for arrays, any number
    for numeric fields. Raises ValidationError naming the field path on a mismatch.

    With `check` (data from outside, e.g. `put`'s JSON) it also refuses what would only fail, or
    silently change, when encoded: integers outside the Avro int/long range, numbers that are not
    `finite` (unless the field is marked `NONFINITE`), strings that are not valid Unicode, and
    `bytes` text with characters above U+00FF. Decoding stored events does not check (it reads
    whatever was written). `nonfinite` is the enclosing field's `NONFINITE` mark.
    """
    named = {} if named is None else named

    if isinstance(schema, str):
        if schema in ("int", "long"):
            low, high = _RANGES[schema]

            def conv_int(v: Any, path: str) -> Any:
                if isinstance(v, bool) or not isinstance(v, int | float) or (
                        isinstance(v, float) and not v.is_integer()):
                    raise ValidationError(f"expected an integer, got {_short(v)}", field=path)
                if check and not low <= v <= high:
                    raise ValidationError(f"{_short(v)} is out of range for an Avro {schema} ({low}..{high})",
                                          field=path)
                return int(v)
            return conv_int
        if schema in ("float", "double"):
            largest = _FLOAT_MAX if schema == "float" else math.inf

            def conv_float(v: Any, path: str) -> Any:
                if isinstance(v, bool) or not isinstance(v, int | float | str):
                    raise ValidationError(f"expected a number, got {_short(v)}", field=path)
                try:
                    x = float(v)
                except ValueError:
                    raise ValidationError(f"expected a number, got {_short(v)}", field=path) from None
                except OverflowError:  # an int of hundreds of digits
                    raise ValidationError(f"{_short(v)} is too large for an Avro {schema}", field=path) from None
                if check:
                    try:
                        if not nonfinite:
                            finite(x)
                        if math.isfinite(x) and abs(x) > largest:
                            raise ValueError(f"{_short(v)} is too large for an Avro {schema}")
                    except ValueError as exc:
                        raise ValidationError(str(exc), field=path) from None
                return x
            return conv_float
        if schema == "string":
            def conv_str(v: Any, path: str) -> Any:
                if not isinstance(v, str):
                    raise ValidationError(f"expected a string, got {_short(v)}", field=path)
                if check:
                    try:
                        v.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        raise ValidationError(f"not valid Unicode text: {exc.reason} at character {exc.start}",
                                              field=path) from None
                return v
            return conv_str
        if schema == "boolean":
            def conv_bool(v: Any, path: str) -> Any:
                if not isinstance(v, bool):
                    raise ValidationError(f"expected true or false, got {v!r}", field=path)
                return v
            return conv_bool
        if schema == "null":
            def conv_null(v: Any, path: str) -> Any:
                if v is not None:
                    raise ValidationError(f"expected null, got {v!r}", field=path)
            return conv_null
        if schema == "bytes":
            def conv_bytes(v: Any, path: str) -> Any:
                if isinstance(v, str):
                    try:
                        return v.encode("latin-1")  # Avro's JSON form of bytes: one character per byte
                    except UnicodeEncodeError as exc:
                        raise ValidationError(
                            f"character {v[exc.start]!r} at {exc.start} is not a byte: bytes are given as text "
                            "with one character per byte (U+0000..U+00FF), as `ticktape cat` prints them",
                            field=path) from None
                if not isinstance(v, bytes):
                    raise ValidationError(f"expected bytes, got {_short(v)}", field=path)
                return v
            return conv_bytes
        full = schema if "." in schema else f"{ns}.{schema}"
        if full in named:
            return lambda v, path: named[full](v, path)
        raise ValueError(f"unknown type {schema!r}")
    if isinstance(schema, list):
        branches = [make_converter(b, named, ns, check=check, nonfinite=nonfinite) for b in schema if b != "null"]
        nullable = "null" in schema

        def conv_union(v: Any, path: str) -> Any:
            if v is None:
                if nullable:
                    return None
                raise ValidationError("must not be null", field=path)
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], dict):
                v = v[1]  # fastavro's (record_name, value) form
            errors = []
            for b in branches:
                try:
                    return b(v, path)
                except ValidationError as exc:
                    errors.append(str(exc))
            raise ValidationError(f"matches no branch of the union ({'; '.join(errors)})", field=path)
        return conv_union
    kind = schema["type"]
    if kind == "enum":
        symbols = frozenset(schema["symbols"])

        def conv_enum(v: Any, path: str) -> Any:
            if v not in symbols:
                raise ValidationError(f"{v!r} is not one of {sorted(symbols)}", field=path)
            return v
        named[f"{schema.get('namespace', ns)}.{schema['name']}"] = conv_enum
        return conv_enum
    if kind == "array":
        item = make_converter(schema["items"], named, ns, check=check, nonfinite=nonfinite)

        def conv_array(v: Any, path: str) -> Any:
            if not isinstance(v, list | tuple):
                raise ValidationError(f"expected a list, got {v!r}", field=path)
            return tuple(item(x, f"{path}[{i}]") for i, x in enumerate(v))
        return conv_array
    if kind == "map":
        value = make_converter(schema["values"], named, ns, check=check, nonfinite=nonfinite)
        return lambda v, path: {k: value(x, f"{path}.{k}") for k, x in v.items()}
    if kind == "record":
        rns = schema.get("namespace", ns)
        full = f"{rns}.{schema['name']}"
        cls = RECORD_TYPES.get(full)
        fields = []
        for f in schema["fields"]:
            conv = make_converter(f["type"], named, rns, check=check, nonfinite=f.get(NONFINITE) is True)
            fields.append((f["name"], conv, "default" in f, f.get("default")))
        names = {f[0] for f in fields}

        def conv_record(v: Any, path: str) -> Any:
            if hasattr(v, "_asdict"):
                v = v._asdict()
            if not isinstance(v, Mapping):
                raise ValidationError(f"expected an object, got {v!r}", field=path or None)
            unknown = set(v) - names
            if unknown:
                raise ValidationError(f"unknown field(s) {sorted(unknown)}", field=path or None)
            values = []
            for name, conv, has_default, default in fields:
                sub = f"{path}.{name}" if path else name
                if name in v:
                    values.append(conv(v[name], sub))
                elif has_default:
                    values.append(conv(copy.deepcopy(default), sub))
                else:
                    raise ValidationError("missing", field=sub)
            return cls(*values) if cls is not None else tuple(values)
        named[full] = conv_record
        return conv_record
    if isinstance(kind, dict | list | str):
        return make_converter(kind, named, ns, check=check, nonfinite=nonfinite)
    raise ValueError(f"unsupported schema {schema!r}")


def to_python(value: Any) -> Any:
    """An event (or any part of one) as plain JSON-able data: records become dicts."""
    if isinstance(value, tuple):
        if hasattr(value, "_fields"):
            return {k: to_python(v) for k, v in zip(value._fields, value, strict=True)}
        return [to_python(v) for v in value]
    if isinstance(value, list):
        return [to_python(v) for v in value]
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    return value


# --- the codec ------------------------------------------------------------------------------

class TypeCodec:
    """Encoder/decoder of one schema version of one event type.

    An older version whose bodies the current one writes byte for byte (`SchemaRegistry.same_body`:
    only enum symbols were appended) shares the current version's fast program and is *writable*:
    the codec writes an event under that older header when the event's values fit it.
    """

    def __init__(self, version: SchemaVersion, current: SchemaVersion, engine: str | None = None,
                 same_body: bool = False) -> None:
        self.version = version
        self.current = current
        self.cls = EVENT_TYPES[current.name]
        self.is_current = version is current
        self.writable = self.is_current or same_body
        self.header = MARKER + version.fingerprint
        self.choose_header: Callable[[Any], bytes] | None = None  # set by Codec for a current version
        if self.writable:
            self.program = ap.compile_schema(current.schema, RECORD_TYPES)
            self.decode_body: BodyDecoder = body_decoder(self.program, engine)
            self.encode_body: BodyEncoder = body_encoder(self.program, engine)
        elif (decode_upgraded := _upgraded_decoder(version, current, engine)) is not None:
            self.decode_body = decode_upgraded
        else:
            writer = fastavro.parse_schema(copy.deepcopy(version.schema))
            reader = fastavro.parse_schema(copy.deepcopy(current.schema))
            convert = make_converter(current.schema)

            def decode_old(buf: bytes, pos: int) -> tuple[Any, int]:
                stream = io.BytesIO(buf)
                stream.seek(pos)
                record = fastavro.schemaless_reader(stream, writer, reader)
                return convert(record, ""), stream.tell()
            self.decode_body = decode_old


def _upgraded_decoder(version: SchemaVersion, current: SchemaVersion, engine: str | None) -> BodyDecoder | None:
    """A body decoder for an older version whose successor only appended fields with plain defaults (Trade,
    Bar, MarketDefinition v1; MarketBook v1's RunnerBook at any depth): the body decodes on the fast engine
    with the old version's own program (records as plain tuples), then `legacy.upgrader` adds the defaults
    and makes today's classes. None when the change is more than that (Avro resolution then). A single
    message (Kafka, raw, `Codec.decode`) so reads an old Trade ~7x faster than through fastavro."""
    from ticktape.tape.legacy import upgrader  # imported here: legacy imports this module

    upgrade = upgrader(version.schema, current.schema)
    if upgrade is None:
        return None
    decode = body_decoder(ap.compile_schema(version.schema, {}), engine)

    def decode_upgraded(buf: bytes, pos: int) -> tuple[Any, int]:
        record, end = decode(buf, pos)
        return upgrade(record), end
    return decode_upgraded


def header_choice(current: SchemaVersion, older: list[SchemaVersion]) -> Callable[[Any], bytes] | None:
    """`event -> header`: the oldest same-body version whose enum symbols hold the event's values.

    Only versions that differ from the current one in top-level enum fields are candidates (checked
    by rebuilding the old fingerprint from the current schema with the old symbols); None when there
    is none, so types that never gained a symbol keep the plain, constant header.
    """
    fields = [f["name"] for f in current.schema["fields"]]
    now = enum_symbols(current.schema)
    options: list[tuple[bytes, list[tuple[int, frozenset[str]]]]] = []
    for old in older:
        then = enum_symbols(old.schema)
        if then.keys() != now.keys():
            continue
        rebuilt = copy.deepcopy(current.schema)
        for field in rebuilt["fields"]:
            if field["name"] in then:
                field["type"]["symbols"] = list(then[field["name"]])
        if fingerprint_of(rebuilt)[1] != old.fingerprint:
            continue
        checks = [(fields.index(name), frozenset(then[name])) for name in then if then[name] != now[name]]
        options.append((MARKER + old.fingerprint, checks))
    if not options:
        return None
    newest = MARKER + current.fingerprint

    def choose(event: Any) -> bytes:
        for header, checks in options:
            if all(event[i] in allowed for i, allowed in checks):
                return header
        return newest
    return choose


class Codec:
    """Single-object encoding of every event type, by class and by fingerprint.

    `engine` picks the engine of current-schema bodies: "c", "python", or None for the fastest
    available (the C one when built). Both accept and refuse the same bytes (a test holds them to it).
    """

    def __init__(self, reg: SchemaRegistry | None = None, *, engine: str | None = None) -> None:
        self.registry = reg or registry()
        self.by_fingerprint: dict[bytes, TypeCodec] = {}
        self.by_class: dict[type, TypeCodec] = {}
        for name in self.registry.names():
            if name not in EVENT_TYPES:
                raise DecodeError(f"schema {name} has no event class: run python -m ticktape.gen_events")
            current = self.registry.current[name]
            history = self.registry.history(name)
            for version in history:
                tc = TypeCodec(version, current, engine, same_body=version.fingerprint in self.registry.same_body)
                self.by_fingerprint[version.fingerprint] = tc
                if tc.is_current:
                    self.by_class[tc.cls] = tc
                    same = [v for v in history if v.fingerprint in self.registry.same_body]
                    tc.choose_header = header_choice(current, same) if same else None
        self.writable: dict[bytes, TypeCodec] = {tc.header: tc for tc in self.by_fingerprint.values() if tc.writable}
        """Single-object header -> codec, for every header `encode` may write (appended bytes may carry any)."""
        self._key_getters: dict[type, Callable[[Any], str | None]] = {}
        self.converters = {name: make_converter(self.registry.current[name].schema, check=True)
                           for name in self.registry.names()}

    def encode(self, event: Event) -> bytes:
        """The single-object encoding of an event: its current schema's body, under the oldest
        header that writes the same bytes for it (see `header_choice`), else the current one."""
        try:
            tc = self.by_class[type(event)]
        except KeyError:
            raise EncodeError(f"{type(event).__name__} is not an event type") from None
        out = bytearray(tc.header if tc.choose_header is None else tc.choose_header(event))
        try:
            tc.encode_body(event, out)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"{type(event).__name__}: {_field_message(exc, event)}") from exc
        return bytes(out)

    def decode(self, data: bytes | bytearray | memoryview, where: str = "") -> Event:
        """Decode single-object bytes into the current event type; `where` names the source."""
        if len(data) < HEADER_SIZE or data[0] != 0xC3 or data[1] != 0x01:
            raise DecodeError("not Avro single-object encoding (no C3 01 marker)", where=where)
        fp = bytes(data[2:HEADER_SIZE])
        tc = self.by_fingerprint.get(fp)
        if tc is None:
            raise DecodeError(f"unknown schema fingerprint {fp.hex()}: no schema in schemas/ has it",
                              where=where)
        try:
            value, end = tc.decode_body(bytes(data) if not isinstance(data, bytes) else data, HEADER_SIZE)
        except (ValueError, TypeError, EOFError, IndexError, StopIteration) as exc:
            raise DecodeError(f"corrupt {tc.version.name} v{tc.version.version} body: {exc}",
                              where=where) from exc
        if end != len(data):
            raise DecodeError(f"{len(data) - end} trailing bytes after a {tc.version.name} body", where=where)
        return value  # type: ignore[no-any-return]

    def type_name(self, data: bytes) -> str | None:
        """The event type named by single-object bytes' fingerprint, without decoding."""
        tc = self.by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        return tc.version.name if tc else None

    def fingerprint(self, event_type: type | str) -> bytes:
        """The current fingerprint of an event type (class or short name)."""
        name = event_type if isinstance(event_type, str) else event_type.__name__
        return self.registry.current[name].fingerprint

    def from_dict(self, type_name: str, data: Mapping[str, Any], where: str = "") -> Event:
        """Validate plain data (e.g. a JSON object) against a type's schema and build the event."""
        try:
            conv = self.converters[type_name]
        except KeyError:
            raise ValidationError(f"unknown event type {type_name!r}; known: {', '.join(self.converters)}",
                                  where=where) from None
        try:
            return conv(data, "")  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise ValidationError(str(exc).split(": ", 1)[-1] if exc.field else str(exc),
                                  where=where, field=exc.field) from None

    def key_of(self, event: Event) -> str | None:
        """The event's key (instrument, market id, ...) as its schema names it."""
        return self._key_getter(type(event))(event)

    def keys_of(self, events: Sequence[Event]) -> list[str | None]:
        """The keys of a batch (fast when the batch has one type, the usual case)."""
        first = type(events[0])
        if all(type(e) is first for e in events):
            return list(map(self._key_getter(first), events))
        return [self._key_getter(type(e))(e) for e in events]

    def _key_getter(self, cls: type) -> Callable[[Any], str | None]:
        getter = self._key_getters.get(cls)
        if getter is None:
            field = self.registry.current[cls.__name__].key_field
            getter = operator.attrgetter(field) if field else (lambda _e: None)
            self._key_getters[cls] = getter
        return getter

    def encode_many(self, events: Iterable[Event]) -> list[bytes]:
        """Encode a batch (a convenience over `encode`)."""
        return [self.encode(e) for e in events]


def _field_message(exc: BaseException, event: Any) -> str:
    """Replace 'field N:' prefixes from the engines with the field's name."""
    msg = str(exc)
    fields = getattr(event, "_fields", ())
    if msg.startswith("field "):
        head, _, rest = msg.partition(":")
        try:
            index = int(head.split()[1])
            return f"field {fields[index]!r}:{rest}"
        except (ValueError, IndexError):
            pass
    return msg


_default: Codec | None = None


def default_codec() -> Codec:
    """The process-wide codec over the default schema directory (built once)."""
    global _default
    if _default is None:
        _default = Codec()
    return _default
