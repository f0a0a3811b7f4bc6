"""A segment's block index (`<base>.idx`): one entry per block, written just after the block.

The index makes seeking by offset or time cheap and carries each block's checksum. It is
never the only record of anything: a block the index lacks (the writer died between the
two writes, or the index was lost) is found by scanning the segment for complete blocks,
and every entry is checked against the data before it is believed.

Two formats, told apart by the first 8 bytes:

- **v2** (`INDEX_MAGIC`, then 64-byte entries): first offset, file position, record count,
  first/last ts_event, running max ts_event, the block's size in bytes (q each), the CRC32C of
  the block's bytes (count, size, data and sync marker), and the CRC32C of the entry's own 60
  bytes before it, so a damaged entry is told from a good one.
- **v1** (segments written before checksums; no magic): 48-byte entries without size and CRCs.
  Still read; a writer opening such a segment last rewrites its index as v2.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import crc32c

INDEX_MAGIC = b"\xffTTIDX2\xff"
"""Starts a v2 index. As a v1 entry's first offset it would be negative: no v1 index starts so."""
V1_ENTRY = struct.Struct("<qqqqqq")  # first_offset, pos, count, ts_first, ts_last, ts_max
_V2_BODY = struct.Struct("<qqqqqqqI")  # ... + size, block CRC32C
V2_ENTRY = struct.Struct("<qqqqqqqII")  # ... + the entry's own CRC32C
V1, V2 = 1, 2


class BlockInfo(NamedTuple):
    """Where a block is and what it holds."""

    first_offset: int
    pos: int  # file position of the block's first byte
    records: int
    ts_first: int
    ts_last: int
    ts_max: int  # the max ts_event of this and every earlier block of the partition
    size: int  # bytes from `pos` to the end of the block's sync marker
    crc: int | None = None  # CRC32C of those bytes; None: not known (a v1 index)

    @property
    def end(self) -> int:
        """File position just after the block."""
        return self.pos + self.size


def pack_entry(info: BlockInfo) -> bytes:
    """The v2 index entry of a block (whose `crc` must be known)."""
    assert info.crc is not None
    body = _V2_BODY.pack(*info)
    return body + crc32c.crc32c(body).to_bytes(4, "little")


def index_bytes(blocks: list[BlockInfo]) -> bytes:
    """A whole v2 index file for these blocks."""
    return INDEX_MAGIC + b"".join(map(pack_entry, blocks))


class ParsedEntries(NamedTuple):
    """What the readable part of some index bytes says."""

    entries: list[BlockInfo]  # v1 entries have size 0: the reader measures them in the data
    consumed: int  # bytes of complete, intact entries
    damaged: bool  # an entry that fails its checksum stopped the parse (v2 only)


def parse_entries(data: bytes, version: int) -> ParsedEntries:
    """Complete entries at the start of `data` (index bytes after the magic, for v2).

    A trailing partial entry is left for later (the writer may be writing it); a v2 entry
    whose own checksum fails stops the parse: nothing after it is believed.
    """
    if version == V1:
        n = len(data) // V1_ENTRY.size
        entries = [_v1_entry(V1_ENTRY.unpack_from(data, i * V1_ENTRY.size)) for i in range(n)]
        return ParsedEntries(entries, n * V1_ENTRY.size, False)
    out: list[BlockInfo] = []
    size = V2_ENTRY.size
    body = _V2_BODY.size
    for i in range(len(data) // size):
        at = i * size
        fields = V2_ENTRY.unpack_from(data, at)
        if crc32c.crc32c(data[at:at + body]) != fields[-1]:
            return ParsedEntries(out, at, True)
        out.append(BlockInfo(*fields[:-1]))
    return ParsedEntries(out, len(out) * size, False)


def _v1_entry(fields: tuple[int, ...]) -> BlockInfo:
    first_offset, pos, records, ts_first, ts_last, ts_max = fields
    return BlockInfo(first_offset, pos, records, ts_first, ts_last, ts_max, 0)


def index_version(head: bytes) -> int | None:
    """The format of an index starting with `head` (None: too short to tell yet)."""
    if len(head) < len(INDEX_MAGIC):
        return None
    return V2 if head.startswith(INDEX_MAGIC) else V1
