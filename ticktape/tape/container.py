"""Avro object container files, written block by block, read block by block.

A segment is a standard Avro container file (readable by any Avro tool) whose schema is
`TapeEntry {key, event: union of every event type}`. We write it ourselves rather than
through fastavro's writer so that one `append` is exactly one block (one `write()`), which
is what makes crash recovery simple: a block is complete iff its sync marker is there.

A segment's blocks may be compressed with one of Avro's standard codecs (`avro.codec` in the
header: `null`, `deflate` or `zstandard`); the framing — record count, byte size, data, sync
marker — is the same either way, so crash recovery does not care.

Checksums. The header carries a CRC32C of itself (`ticktape.header_crc32c`, the last metadata
entry: over every byte before that entry, plus the sync marker), so a damaged header is told
from a good one; each block's CRC32C is kept in the segment's index (`index.py`). Both are
extra metadata for other Avro tools: the files stay standard container files.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO, NamedTuple

import crc32c
import zstandard

from ticktape import avro_program as ap
from ticktape.errors import DecodeError

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
HEADER_CRC_KEY = "ticktape.header_crc32c"

COMPRESSIONS = {"none": "null", "zstd": "zstandard", "deflate": "deflate"}
"""A file tape's `compression` option -> the Avro codec its new segments are written with."""

Compress = Callable[[bytes], bytes]
_ZSTD_LEVEL = 1  # ~20x on Betfair ladders; level 3 gains ~1% at half the speed


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)  # Avro's deflate is raw RFC 1951: no zlib header
    return c.compress(data) + c.flush()


def _zstd(data: bytes) -> bytes:
    # One frame with its content size in the header (zstandard's default), which `_unzstd`
    # needs; any Avro tool with zstandard support reads it.
    return zstandard.compress(data, _ZSTD_LEVEL)


def _unzstd(data: bytes) -> bytes:
    try:
        return zstandard.decompress(data)  # a frame that does not declare its size is refused
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd: {exc}") from exc


def _inflate(data: bytes) -> bytes:
    try:
        d = zlib.decompressobj(-15)
        out = d.decompress(data)
    except zlib.error as exc:
        raise ValueError(str(exc)) from exc
    if not d.eof:
        raise ValueError("deflate stream is truncated")
    return out


def compressor(avro_codec: str) -> Compress | None:
    """How blocks of a segment with this `avro.codec` are compressed (None: stored as they are)."""
    return {"null": None, "deflate": _deflate, "zstandard": _zstd}[avro_codec]


def decompressor(avro_codec: str) -> Compress | None:
    """How blocks of a segment with this `avro.codec` are read back (None: stored as they are).

    The function raises ValueError on data that is not a valid compressed block.
    """
    return {"null": None, "deflate": _inflate, "zstandard": _unzstd}[avro_codec]


def _long(n: int) -> bytes:
    out = bytearray()
    ap._write_long(n, out)
    return bytes(out)


def encode_header(schema: dict[str, Any], meta: dict[str, str], sync: bytes, avro_codec: str = "null") -> bytes:
    """File header: magic, metadata map (schema, codec, ours, then the header's checksum), sync marker."""
    entries = {"avro.schema": json.dumps(schema, separators=(",", ":")).encode(), "avro.codec": avro_codec.encode()}
    entries.update({k: v.encode() for k, v in meta.items()})
    out = bytearray(MAGIC)
    ap._write_long(len(entries) + 1, out)  # + the checksum entry
    for k, v in entries.items():
        _write_entry(k.encode(), v, out)
    crc = crc32c.crc32c(sync, crc32c.crc32c(out))
    _write_entry(HEADER_CRC_KEY.encode(), f"{crc:08x}".encode(), out)
    out.append(0)
    out += sync
    return bytes(out)


def _write_entry(key: bytes, value: bytes, out: bytearray) -> None:
    ap._write_long(len(key), out)
    out += key
    ap._write_long(len(value), out)
    out += value


class Header(NamedTuple):
    schema: dict[str, Any]
    meta: dict[str, str]
    sync: bytes
    size: int  # bytes up to and including the sync marker
    codec: str = "null"  # avro.codec: how the blocks' data is compressed
    checksummed: bool = False  # the header carried its CRC32C (and it matched); older segments have none


def read_header(f: BinaryIO, where: str) -> Header:
    """Parse a container header; DecodeError naming the file if it is not one, or is damaged."""
    f.seek(0)
    head = f.read(64 * 1024)
    if not head.startswith(MAGIC):
        raise DecodeError("not an Avro container file (bad magic): the segment header is damaged", where=where)
    pos = 4
    meta: dict[str, str] = {}
    crc_at = -1  # where the checksum entry starts: the checksum covers every byte before it
    try:
        while True:
            count, pos = ap._read_long(head, pos)
            if count == 0:
                break
            if count < 0:
                count = -count
                _, pos = ap._read_long(head, pos)
            for _ in range(count):
                start = pos
                n, pos = ap._read_long(head, pos)
                key = _exactly(head, pos, n).decode()
                pos += n
                n, pos = ap._read_long(head, pos)
                value = _exactly(head, pos, n)
                pos += n
                if key == HEADER_CRC_KEY:
                    crc_at = start
                meta[key] = value.decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"corrupt container header: {exc}", where=where) from exc
    sync = head[pos:pos + SYNC_SIZE]
    if len(sync) != SYNC_SIZE:
        raise DecodeError("container header is truncated", where=where)
    stored = meta.pop(HEADER_CRC_KEY, None)
    if stored is not None and stored != f"{crc32c.crc32c(sync, crc32c.crc32c(head[:crc_at])):08x}":
        raise DecodeError("the segment header fails its checksum: it is damaged", where=where)
    codec = meta.pop("avro.codec", "null")
    if codec not in COMPRESSIONS.values():
        raise DecodeError(f"unsupported codec {codec!r} (readable: {', '.join(COMPRESSIONS.values())})",
                          where=where)
    try:
        schema = json.loads(meta.pop("avro.schema"))
    except (KeyError, ValueError) as exc:
        raise DecodeError(f"corrupt container header: no readable avro.schema ({exc})", where=where) from exc
    return Header(schema, meta, sync, pos + SYNC_SIZE, codec, stored is not None)


def _exactly(buf: bytes, pos: int, n: int) -> bytes:
    """`buf[pos:pos + n]`, or ValueError if the buffer ends first (or n is negative)."""
    value = buf[pos:pos + n]
    if n < 0 or len(value) != n:
        raise ValueError("metadata runs past the header")
    return value


Body = bytes | bytearray | list[bytes | memoryview]
"""A block's encoded records: one buffer, or the pieces to join (joined once, with the framing)."""


def encode_block(count: int, body: Body, sync: bytes, compress: Compress | None = None) -> bytes:
    """One data block: record count, byte size, the records (compressed if `compress`), the sync marker.

    Uncompressed records are copied once, straight into the block (blocks run to megabytes).
    """
    if compress is not None:
        data = compress(b"".join(body) if isinstance(body, list) else bytes(body))
        return b"".join((_long(count), _long(len(data)), data, sync))
    if isinstance(body, list):
        return b"".join([_long(count), _long(sum(map(len, body))), *body, sync])
    return b"".join((_long(count), _long(len(body)), body, sync))


class BlockHeader(NamedTuple):
    records: int
    data_pos: int  # where the records start
    data_size: int
    end: int  # position after the sync marker


def probe_block(buf: bytes, pos: int, sync: bytes) -> BlockHeader | None:
    """The block starting at `pos` of `buf` if it is complete and intact, else None.

    `buf` holds the file from `pos` on (or the whole file): anything short, with a bad
    count/size or a wrong sync marker is an incomplete (torn, or still being written) block.
    """
    try:
        count, p = ap._read_long(buf, pos)
        size, p = ap._read_long(buf, p)
    except ValueError:
        return None
    if count <= 0 or size < 0:
        return None
    end = p + size + SYNC_SIZE
    if end > len(buf) or buf[p + size:end] != sync:
        return None
    return BlockHeader(count, p, size, end)


def contains_sync(buf: bytes, sync: bytes) -> bool:
    """Whether `buf` holds the segment's sync marker: bytes after the last complete block that do
    are not a torn write (a torn block never ends, so never carries its marker) but damage."""
    return buf.find(sync) >= 0


def fsync_dir(path: str) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
