"""Reading one topic-partition of the file tape: its segments, their block index, decoding.

A segment is an Avro container file plus an `.idx` file of one 48-byte entry per block
(first offset, file position, record count, first/last ts_event, running max ts_event). The
index is an accelerator only: blocks completed but not yet indexed (a writer between its two
writes, or killed there) are found by scanning for complete blocks, and a block counts only
once its sync marker is there. `PartitionWriter` (in `file.py`) is the only code that writes.
"""

from __future__ import annotations

import bisect
import io
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import fastavro
from fastavro.read import SchemaResolutionError

from ticktape import avro_program as ap
from ticktape.codec import VM, Codec, make_converter
from ticktape.errors import DecodeError
from ticktape.events import RECORD_TYPES, Event
from ticktape.tape.base import PartitionInfo
from ticktape.tape.container import Compress, Header, decompressor, probe_block, read_header

IDX = struct.Struct("<qqqqqq")  # first_offset, block pos, count, ts_first, ts_last, ts_max (running)


class BlockInfo(NamedTuple):
    first_offset: int
    pos: int
    records: int
    ts_first: int
    ts_last: int
    ts_max: int  # the max ts_event of this and every earlier block of the partition


class EntryDecoder:
    """Decodes the records of a block, for one segment's writer schema."""

    def __init__(self, codec: Codec, header: Header, where: str) -> None:
        self.where = where
        current = codec.registry.entry_schema()
        written = header.meta.get("ticktape.fingerprints", "").split(",")
        known = {v.fingerprint.hex() for v in codec.registry.current.values()}
        if header.schema == current or (written != [""] and set(written) <= known):
            # Every type in the segment's union is at its current version: decode with a
            # program compiled from the writer's own union (its branch numbers), no resolution.
            prog = ap.compile_schema(header.schema, RECORD_TYPES)
            self.prog = prog
            self.slow = False
            if VM is None:
                self.py = ap.make_decoder(prog)
        else:
            # Written with older schema versions: resolve each record through today's types.
            self.slow = True
            self.writer = fastavro.parse_schema(header.schema)
            self.reader = fastavro.parse_schema(current)
            self.converters = {f"ticktape.{n}": make_converter(codec.registry.current[n].schema)
                               for n in codec.registry.names()}

    def decode(self, buf: bytes, count: int, first_offset: int) -> list[tuple[str | None, Event]]:
        """Every (key, event) of a block's data."""
        try:
            if self.slow:
                return self._decode_slow(buf, count)
            if VM is not None:
                entries, end = VM.decode_many(self.prog, buf, 0, count)
            else:
                entries = []
                pos = 0
                for _ in range(count):
                    entry, pos = self.py(buf, pos)
                    entries.append(entry)
                end = pos
        except SchemaResolutionError as exc:
            raise DecodeError(f"block at offset {first_offset} holds a record the current schemas cannot read "
                              f"(unknown type or incompatible version): {str(exc)[:200]}", where=self.where) from exc
        except (ValueError, TypeError, EOFError, IndexError, KeyError) as exc:
            raise DecodeError(f"corrupt block at offset {first_offset}: {exc}", where=self.where) from exc
        if end != len(buf):
            raise DecodeError(f"block at offset {first_offset} has {len(buf) - end} stray bytes",
                              where=self.where)
        return entries  # type: ignore[no-any-return]

    def decode_one(self, buf: bytes, pos: int, offset: int) -> tuple[tuple[str | None, Event], int]:
        """The (key, event) starting at `pos` of a block's data, and the position after it.

        Record-by-record access to a block that fails as a whole: the records before a
        corrupt one can still be read (after it, record boundaries are unknown).
        """
        try:
            if self.slow:
                stream = io.BytesIO(buf)
                stream.seek(pos)
                rec: Any = fastavro.schemaless_reader(stream, self.writer, self.reader, return_record_name=True)
                name, body = rec["event"]
                return (rec["key"], self.converters[name](body, "")), stream.tell()
            if VM is not None:
                entries, end = VM.decode_many(self.prog, buf, pos, 1)
                return entries[0], end
            return self.py(buf, pos)
        except SchemaResolutionError as exc:
            raise DecodeError(f"record at offset {offset} cannot be read with the current schemas "
                              f"(unknown type or incompatible version): {str(exc)[:200]}", where=self.where) from exc
        except Exception as exc:  # any library error here means this record cannot be read
            raise DecodeError(f"corrupt record at offset {offset}: {exc}", where=self.where) from exc

    def _decode_slow(self, buf: bytes, count: int) -> list[tuple[str | None, Event]]:
        stream = io.BytesIO(buf)
        out = []
        for _ in range(count):
            rec: Any = fastavro.schemaless_reader(stream, self.writer, self.reader, return_record_name=True)
            name, body = rec["event"]
            out.append((rec["key"], self.converters[name](body, "")))
        return out


class Segment:
    """One container file and its block index, as far as it is complete."""

    def __init__(self, path: Path, base: int, codec: Codec, where: str) -> None:
        self.path = path
        self.idx_path = path.with_suffix(".idx")
        self.base = base
        self.codec = codec
        self.where = where
        self.blocks: list[BlockInfo] = []
        self.idx_entries_read = 0
        self.header: Header | None = None
        self.decoder: EntryDecoder | None = None
        self.decompress: Compress | None = None  # from the header's avro.codec
        self._file: BinaryIO | None = None
        self.scanned_to = 0  # file position up to which complete blocks are known

    @property
    def end_offset(self) -> int:
        last = self.blocks[-1] if self.blocks else None
        return last.first_offset + last.records if last else self.base

    @property
    def valid_end(self) -> int:
        return self.scanned_to

    def file(self) -> BinaryIO:
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open for the segment's life
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def refresh(self, ts_max_before: int) -> list[BlockInfo]:
        """Pick up blocks completed since the last call; return those that had no index entry."""
        f = self.file()
        if self.header is None:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return []
            try:
                self.header = read_header(f, self.where)
            except DecodeError:
                if size < 64 * 1024:
                    return []  # header still being written (or torn): nothing visible yet
                raise
            self.decoder = EntryDecoder(self.codec, self.header, self.where)
            self.decompress = decompressor(self.header.codec)
            self.scanned_to = self.header.size
        # 1. index entries written by the writer since we last looked
        if self.idx_path.exists():
            with open(self.idx_path, "rb") as fi:
                fi.seek(self.idx_entries_read * IDX.size)
                data = fi.read()
            size = os.fstat(f.fileno()).st_size
            for i in range(len(data) // IDX.size):
                info = BlockInfo(*IDX.unpack_from(data, i * IDX.size))
                if info.first_offset < self.end_offset:
                    self.idx_entries_read += 1
                    continue  # found earlier by scanning
                if info.first_offset != self.end_offset or info.pos != self.scanned_to or info.pos >= size:
                    break  # not consistent with the data (a torn index): scanning decides
                self.blocks.append(info)
                self.idx_entries_read += 1
                self.scanned_to = self._block_end(info)
        # 2. complete blocks beyond the index (writer crashed or is between data and index)
        unindexed: list[BlockInfo] = []
        assert self.header is not None
        sync = self.header.sync
        f.seek(self.scanned_to)
        tail = f.read()
        pos = 0
        ts_max = self.blocks[-1].ts_max if self.blocks else ts_max_before
        while True:
            block = probe_block(tail, pos, sync)
            if block is None:
                break
            data = self._inflated(tail[block.data_pos:block.data_pos + block.data_size], self.end_offset)
            entries = self._decoder().decode(data, block.records, self.end_offset)
            ts = [e[1].ts_event for e in entries]
            ts_max = max(ts_max, max(ts))
            info = BlockInfo(self.end_offset, self.scanned_to + pos, block.records, ts[0], ts[-1], ts_max)
            self.blocks.append(info)
            unindexed.append(info)
            pos = block.end
        self.scanned_to += pos
        return unindexed

    def _block_end(self, info: BlockInfo) -> int:
        f = self.file()
        f.seek(info.pos)
        head = f.read(20)
        _, p = ap._read_long(head, 0)
        size, p = ap._read_long(head, p)
        return info.pos + p + size + 16

    def _inflated(self, data: bytes, first_offset: int) -> bytes:
        """A block's record bytes from its stored (possibly compressed) data."""
        if self.decompress is None:
            return data
        try:
            return self.decompress(data)
        except ValueError as exc:
            assert self.header is not None
            raise DecodeError(f"block at offset {first_offset} does not decompress ({self.header.codec}): {exc}",
                              where=self.where) from exc

    def _decoder(self) -> EntryDecoder:
        assert self.decoder is not None
        return self.decoder

    def read_block(self, index: int) -> list[tuple[str | None, Event]]:
        """Decode the records of the `index`-th block."""
        info = self.blocks[index]
        return self._decoder().decode(self.read_block_data(index), info.records, info.first_offset)

    def read_block_data(self, index: int) -> bytes:
        """The record bytes of the `index`-th block, decompressed (e.g. to salvage a corrupt one record by record)."""
        info = self.blocks[index]
        f = self.file()
        f.seek(info.pos)
        head = f.read(20)
        count, p = ap._read_long(head, 0)
        size, p = ap._read_long(head, p)
        f.seek(info.pos + p)
        data = f.read(size)
        if len(data) != size or count != info.records:
            raise DecodeError(f"block at offset {info.first_offset} does not match its index",
                              where=self.where)
        return self._inflated(data, info.first_offset)


class PartitionLog:
    """The segments of one topic-partition (a reader's view; the writer extends it)."""

    def __init__(self, directory: Path, topic: str, partition: int, codec: Codec) -> None:
        self.dir = directory
        self.topic = topic
        self.partition = partition
        self.codec = codec
        self.segments: list[Segment] = []
        self.refresh()

    def where(self, segment: Path | None = None) -> str:
        base = f"topic {self.topic} partition {self.partition}"
        return f"{base} ({segment})" if segment else base

    def refresh(self) -> None:
        """Discover new segments and new complete blocks in the last one."""
        known = {s.base for s in self.segments}
        if self.dir.is_dir():
            for path in sorted(self.dir.glob("*.avro")):
                base = int(path.stem)
                if base not in known:
                    self.segments.append(Segment(path, base, self.codec, self.where(path)))
            self.segments.sort(key=lambda s: s.base)
        ts_max = -(1 << 63)
        for seg in self.segments:
            if seg is self.segments[-1] or not seg.blocks:
                seg.refresh(ts_max)
            if seg.blocks:
                ts_max = seg.blocks[-1].ts_max

    @property
    def start_offset(self) -> int:
        return self.segments[0].base if self.segments else 0

    @property
    def end_offset(self) -> int:
        return self.segments[-1].end_offset if self.segments else 0

    @property
    def ts_max(self) -> int:
        for seg in reversed(self.segments):
            if seg.blocks:
                return seg.blocks[-1].ts_max
        return -(1 << 63)

    def locate(self, offset: int) -> tuple[int, int]:
        """(segment index, block index) of the block holding `offset` (or the next one)."""
        bases = [s.base for s in self.segments]
        si = max(bisect.bisect_right(bases, offset) - 1, 0)
        while si < len(self.segments):
            seg = self.segments[si]
            starts = [b.first_offset for b in seg.blocks]
            bi = max(bisect.bisect_right(starts, offset) - 1, 0)
            if seg.blocks and seg.blocks[bi].first_offset + seg.blocks[bi].records > offset:
                return si, bi
            if seg.blocks and seg.blocks[-1].first_offset + seg.blocks[-1].records > offset:
                return si, bi + 1
            si += 1
        return len(self.segments), 0

    def offset_for_time(self, ts: int) -> int:
        """First offset whose ts_event >= ts: binary search on the running max, then a scan."""
        for si, seg in enumerate(self.segments):
            if seg.blocks and seg.blocks[-1].ts_max >= ts:
                maxes = [b.ts_max for b in seg.blocks]
                bi = bisect.bisect_left(maxes, ts)
                for i, (_, event) in enumerate(seg.read_block(bi)):
                    if event.ts_event >= ts:
                        return seg.blocks[bi].first_offset + i
                del si
        return self.end_offset

    def close(self) -> None:
        for seg in self.segments:
            seg.close()

    def info(self) -> PartitionInfo:
        first = next((s.blocks[0].ts_first for s in self.segments if s.blocks), None)
        last = next((s.blocks[-1].ts_last for s in reversed(self.segments) if s.blocks), None)
        return PartitionInfo(self.partition, self.start_offset, self.end_offset, first, last)
