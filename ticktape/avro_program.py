"""Avro schemas compiled into "programs" and a pure-Python interpreter for them.

A program is a nested tuple `(opcode, ...)` built once per schema. Two engines run it:
the C extension `ticktape._avrovm` (fast path) and the closures compiled here (the
reference implementation, used when the extension is not built). Both must produce the
same bytes; a unit test holds them to it.

Values: records are NamedTuples (or tuples) in field order, arrays are tuples, maps are
dicts, enums are their symbol strings, unions are their branch's value.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

NULL, BOOLEAN, INT, LONG, FLOAT, DOUBLE, BYTES, STRING, ENUM, FIXED, ARRAY, MAP, UNION, RECORD = range(14)
_PRIMITIVE_OPS = {"null": NULL, "boolean": BOOLEAN, "int": INT, "long": LONG, "float": FLOAT,
                  "double": DOUBLE, "bytes": BYTES, "string": STRING}

Program = tuple[Any, ...]


def compile_schema(schema: Any, classes: Mapping[str, type] | None = None, namespace: str = "") -> Program:
    """Turn an Avro schema (JSON form, named types inline once) into a program.

    `classes` maps full record names to the NamedTuple class to build for them; records
    without a class decode to plain tuples.
    """
    named: dict[str, Program] = {}
    classes = classes or {}

    def full_name(node: dict[str, Any], ns: str) -> tuple[str, str]:
        name = node["name"]
        if "." in name:
            return name, name.rsplit(".", 1)[0]
        ns = node.get("namespace", ns)
        return (f"{ns}.{name}" if ns else name), ns

    def build(node: Any, ns: str) -> Program:
        if isinstance(node, str):
            if node in _PRIMITIVE_OPS:
                return (_PRIMITIVE_OPS[node],)
            key = node if "." in node or not ns else f"{ns}.{node}"
            if key in named:
                return named[key]
            if node in named:
                return named[node]
            raise ValueError(f"unknown named type {node!r}")
        if isinstance(node, list):
            branches = tuple(build(b, ns) for b in node)
            non_null = [i for i, b in enumerate(branches) if b[0] != NULL]
            selector: dict[type, int] | None = None
            if len(non_null) > 1:
                selector = {}
                for i in non_null:
                    if branches[i][0] != RECORD or branches[i][1] is None:
                        raise ValueError("unions of several non-null branches must be unions of records")
                    selector[branches[i][1]] = i
            return (UNION, branches, selector)
        kind = node["type"]
        if kind in _PRIMITIVE_OPS:
            return (_PRIMITIVE_OPS[kind],)
        if kind == "enum":
            name, _ = full_name(node, ns)
            symbols = tuple(node["symbols"])
            prog: Program = (ENUM, symbols, {s: i for i, s in enumerate(symbols)})
            named[name] = prog
            return prog
        if kind == "fixed":
            name, _ = full_name(node, ns)
            named[name] = (FIXED, int(node["size"]))
            return named[name]
        if kind == "array":
            return (ARRAY, build(node["items"], ns))
        if kind == "map":
            return (MAP, build(node["values"], ns))
        if kind in ("record", "error"):
            name, inner_ns = full_name(node, ns)
            fields = tuple(build(f["type"], inner_ns) for f in node["fields"])
            named[name] = (RECORD, classes.get(name), fields)
            return named[name]
        if isinstance(kind, dict | list):
            return build(kind, ns)
        raise ValueError(f"unsupported Avro type {kind!r}")

    return build(schema, namespace)


# --- pure-Python engine -------------------------------------------------------------------

Decoder = Callable[[bytes, int], tuple[Any, int]]
Encoder = Callable[[Any, bytearray], None]

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint of at most 10 bytes (64 bits), as the C engine reads it."""
    start = pos
    try:
        b = buf[pos]
        pos += 1
        if b < 0x80:
            return (b >> 1) ^ -(b & 1), pos
        n = b & 0x7F
        shift = 7
        while True:
            b = buf[pos]
            pos += 1
            if shift == 63 and b > 1:  # the 10th byte holds the 64th bit only
                raise ValueError(f"malformed varint at byte {start}: more than 64 bits")
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return (n >> 1) ^ -(n & 1), pos
            shift += 7
    except IndexError:
        raise ValueError(f"truncated data: unterminated varint at byte {start}") from None


def _read_int(buf: bytes, pos: int) -> tuple[int, int]:
    """An Avro int: a varint whose value fits in 32 bits."""
    n, end = _read_long(buf, pos)
    if not -(1 << 31) <= n < (1 << 31):
        raise ValueError(f"int value {n} at byte {pos} does not fit in 32 bits")
    return n, end


MAX_ZERO_WIDTH_ITEMS = 1 << 20
"""Items that encode in zero bytes (array<null>) cannot be bounded by the input left: a block
count beyond the input is allowed for them up to this many items (the C engine's limit)."""


def min_width(prog: Program) -> int:
    """The fewest bytes any value of a program encodes to (records saturate at 2**40)."""
    op = prog[0]
    if op == NULL:
        return 0
    if op in (FLOAT, DOUBLE):
        return 4 if op == FLOAT else 8
    if op == FIXED:
        return int(prog[1])
    if op == RECORD:
        return min(sum(min_width(f) for f in prog[2]), 1 << 40)
    return 1


def _write_long(n: int, out: bytearray) -> None:
    if not -(1 << 63) <= n < (1 << 63):
        raise OverflowError(f"{n} does not fit in an Avro long")
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _take(buf: bytes, pos: int, n: int) -> tuple[bytes, int]:
    end = pos + n
    if n < 0:
        raise ValueError(f"negative length {n} at byte {pos}")
    if end > len(buf):
        raise ValueError(f"truncated data: length {n} at byte {pos} runs past the end ({len(buf)} bytes)")
    return bytes(buf[pos:end]), end


def make_decoder(prog: Program) -> Decoder:
    """Compile a program into a function `(buf, pos) -> (value, new_pos)`."""
    op = prog[0]
    if op == NULL:
        return lambda buf, pos: (None, pos)
    if op == BOOLEAN:
        def dec_bool(buf: bytes, pos: int) -> tuple[Any, int]:
            if pos >= len(buf):
                raise ValueError(f"truncated data: boolean needs 1 byte at byte {pos}")
            b = buf[pos]
            if b > 1:
                raise ValueError(f"invalid boolean byte 0x{b:02x} at byte {pos}")
            return b == 1, pos + 1
        return dec_bool
    if op == INT:
        return _read_int
    if op == LONG:
        return _read_long
    if op in (FLOAT, DOUBLE):
        st = _DOUBLE if op == DOUBLE else _FLOAT

        def dec_real(buf: bytes, pos: int) -> tuple[Any, int]:
            if pos + st.size > len(buf):
                raise ValueError(f"truncated number at byte {pos}")
            return st.unpack_from(buf, pos)[0], pos + st.size
        return dec_real
    if op in (BYTES, STRING):
        def dec_bytes(buf: bytes, pos: int) -> tuple[Any, int]:
            n, pos = _read_long(buf, pos)
            raw, pos = _take(buf, pos, n)
            if op == BYTES:
                return raw, pos
            try:
                return raw.decode("utf-8"), pos
            except UnicodeDecodeError as exc:
                raise ValueError(f"invalid UTF-8 at byte {pos - n}") from exc
        return dec_bytes
    if op == ENUM:
        symbols = prog[1]

        def dec_enum(buf: bytes, pos: int) -> tuple[Any, int]:
            i, new = _read_long(buf, pos)
            if not 0 <= i < len(symbols):
                raise ValueError(f"enum index {i} out of range at byte {pos}")
            return symbols[i], new
        return dec_enum
    if op == FIXED:
        size = prog[1]
        return lambda buf, pos: _take(buf, pos, size)
    if op in (ARRAY, MAP):
        item = make_decoder(prog[1])
        is_map = op == MAP
        width = 1 if is_map else min_width(prog[1])  # a map entry has at least its key's length

        def dec_blocks(buf: bytes, pos: int) -> tuple[Any, int]:
            items: list[Any] = []
            while True:
                at = pos
                count, pos = _read_long(buf, pos)
                if count == 0:
                    break
                if count < 0:
                    if count == -(1 << 63):
                        raise ValueError(f"invalid block count at byte {at}")
                    count = -count
                    size, end = _read_long(buf, pos)  # block size in bytes: only checked
                    if size < 0:
                        raise ValueError(f"negative block byte size {size} at byte {pos}")
                    pos = end
                if count > len(buf) - pos:  # the checks of the C engine, in its order
                    if width > 0:
                        raise ValueError(f"truncated data: block count {count} at byte {at} exceeds the "
                                         f"{len(buf) - pos} remaining byte(s)")
                    if count > MAX_ZERO_WIDTH_ITEMS - len(items):
                        raise ValueError(f"block count {count} at byte {at} is too large for zero-width items "
                                         f"(limit {MAX_ZERO_WIDTH_ITEMS})")
                for _ in range(count):
                    if is_map:
                        k, pos = dec_key(buf, pos)
                        v, pos = item(buf, pos)
                        items.append((k, v))
                    else:
                        v, pos = item(buf, pos)
                        items.append(v)
            return (dict(items) if is_map else tuple(items)), pos
        dec_key = make_decoder((STRING,))
        return dec_blocks
    if op == UNION:
        branches = [make_decoder(b) for b in prog[1]]

        def dec_union(buf: bytes, pos: int) -> tuple[Any, int]:
            i, new = _read_long(buf, pos)
            if not 0 <= i < len(branches):
                raise ValueError(f"union branch {i} out of range at byte {pos}")
            return branches[i](buf, new)
        return dec_union
    if op == RECORD:
        cls = prog[1]
        fields = [make_decoder(f) for f in prog[2]]
        make = tuple.__new__

        def dec_record(buf: bytes, pos: int) -> tuple[Any, int]:
            values = []
            for f in fields:
                v, pos = f(buf, pos)
                values.append(v)
            return (make(cls, values) if cls is not None else tuple(values)), pos
        return dec_record
    raise ValueError(f"bad opcode {op}")


def make_encoder(prog: Program) -> Encoder:
    """Compile a program into a function `(value, out: bytearray) -> None`."""
    op = prog[0]
    if op == NULL:
        def enc_null(v: Any, out: bytearray) -> None:
            if v is not None:
                raise TypeError(f"expected None, got {type(v).__name__}")
        return enc_null
    if op == BOOLEAN:
        def enc_bool(v: Any, out: bytearray) -> None:
            if not isinstance(v, bool | int):
                raise TypeError(f"expected bool, got {type(v).__name__}")
            out.append(1 if v else 0)
        return enc_bool
    if op in (INT, LONG):
        limit = 1 << (31 if op == INT else 63)

        def enc_long(v: Any, out: bytearray) -> None:
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"expected int, got {type(v).__name__}")
            if not -limit <= v < limit:
                raise OverflowError(f"{v} out of range for Avro {'int' if op == INT else 'long'}")
            _write_long(v, out)
        return enc_long
    if op in (FLOAT, DOUBLE):
        st = _DOUBLE if op == DOUBLE else _FLOAT

        def enc_real(v: Any, out: bytearray) -> None:
            if not isinstance(v, float | int) or isinstance(v, bool):
                raise TypeError(f"expected float, got {type(v).__name__}")
            out += st.pack(v)
        return enc_real
    if op in (BYTES, STRING):
        def enc_bytes(v: Any, out: bytearray) -> None:
            if op == STRING:
                if not isinstance(v, str):
                    raise TypeError(f"expected str, got {type(v).__name__}")
                raw = v.encode("utf-8")
            else:
                if not isinstance(v, bytes | bytearray | memoryview):
                    raise TypeError(f"expected bytes, got {type(v).__name__}")
                raw = bytes(v)
            _write_long(len(raw), out)
            out += raw
        return enc_bytes
    if op == ENUM:
        index = prog[2]

        def enc_enum(v: Any, out: bytearray) -> None:
            try:
                _write_long(index[v], out)
            except (KeyError, TypeError):
                raise ValueError(f"{v!r} is not one of {list(index)}") from None
        return enc_enum
    if op == FIXED:
        size = prog[1]

        def enc_fixed(v: Any, out: bytearray) -> None:
            if not isinstance(v, bytes) or len(v) != size:
                raise ValueError(f"expected {size} bytes")
            out += v
        return enc_fixed
    if op == ARRAY:
        item = make_encoder(prog[1])

        def enc_array(v: Any, out: bytearray) -> None:
            if not isinstance(v, list | tuple):
                raise TypeError(f"expected a sequence, got {type(v).__name__}")
            if v:
                _write_long(len(v), out)
                for x in v:
                    item(x, out)
            out.append(0)
        return enc_array
    if op == MAP:
        value = make_encoder(prog[1])
        key = make_encoder((STRING,))

        def enc_map(v: Any, out: bytearray) -> None:
            if not isinstance(v, dict):
                raise TypeError(f"expected a dict, got {type(v).__name__}")
            if v:
                _write_long(len(v), out)
                for k, x in v.items():
                    key(k, out)
                    value(x, out)
            out.append(0)
        return enc_map
    if op == UNION:
        branches = [make_encoder(b) for b in prog[1]]
        null_index = next((i for i, b in enumerate(prog[1]) if b[0] == NULL), None)
        selector = prog[2]
        single = next((i for i, b in enumerate(prog[1]) if b[0] != NULL), None)

        def enc_union(v: Any, out: bytearray) -> None:
            if v is None:
                if null_index is None:
                    raise TypeError("None is not allowed here")
                i = null_index
            elif selector is None:
                if single is None:
                    raise TypeError(f"expected None, got {type(v).__name__}")
                i = single
            else:
                try:
                    i = selector[type(v)]
                except KeyError:
                    raise TypeError(f"{type(v).__name__} is not a branch of this union") from None
            _write_long(i, out)
            branches[i](v, out)
        return enc_union
    if op == RECORD:
        fields = [make_encoder(f) for f in prog[2]]
        n = len(fields)

        def enc_record(v: Any, out: bytearray) -> None:
            if not isinstance(v, tuple) or len(v) != n:
                raise ValueError(f"expected a record of {n} fields, got {type(v).__name__}")
            for i, (f, x) in enumerate(zip(fields, v, strict=True)):
                try:
                    f(x, out)
                except (TypeError, ValueError, OverflowError) as exc:
                    raise type(exc)(f"field {i}: {exc}") from None
        return enc_record
    raise ValueError(f"bad opcode {op}")
