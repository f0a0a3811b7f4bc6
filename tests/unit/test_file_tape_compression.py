"""Compressed file-tape segments: standard Avro codecs, mixed in one partition, errors named."""

from __future__ import annotations

import os
from pathlib import Path

import fastavro
import pytest

from tests.conftest import make_trades
from ticktape import avro_program as ap
from ticktape.demo import synthetic_betfair
from ticktape.errors import DecodeError, TapeError
from ticktape.tape import open_tape
from ticktape.tape.container import _unzstd, _zstd, read_header
from ticktape.tape.file import FileTape
from ticktape.tape.index import INDEX_MAGIC, V2, parse_entries


def _books() -> list:  # type: ignore[type-arg]
    events = [e for e in synthetic_betfair(markets=2) if type(e).__name__ == "MarketBook"]
    assert len(events) > 200
    return events


@pytest.mark.parametrize("compression, avro_codec", [("zstd", "zstandard"), ("deflate", "deflate")])
def test_compressed_segments_are_standard_avro_files(tmp_path: Path, compression: str, avro_codec: str) -> None:
    if compression == "zstd":
        pytest.importorskip("backports.zstd", reason="fastavro reads zstandard blocks through backports.zstd")
    books = _books()
    plain, packed = FileTape(tmp_path / "plain"), FileTape(tmp_path / "packed", compression=compression)
    for i in range(0, len(books), 50):
        plain.append("md.betfair.market", books[i:i + 50])
        packed.append("md.betfair.market", books[i:i + 50])
    (seg,) = packed.segment_paths("md.betfair.market")
    (plain_seg,) = plain.segment_paths("md.betfair.market")
    with open(seg, "rb") as f:
        assert read_header(f, str(seg)).codec == avro_codec
        f.seek(0)
        records = list(fastavro.reader(f, return_record_name=True))  # any Avro tool reads them
    assert len(records) == len(books)
    assert records[7]["event"][1]["market_id"] == books[7].market_id
    assert seg.stat().st_size * 2 < plain_seg.stat().st_size  # ladders repeat (~20x on real Betfair books)
    assert [r.event for r in FileTape(tmp_path / "packed").read("md.betfair.market")] == books


def _codecs(tape: FileTape, topic: str) -> list[str]:
    out = []
    for p in tape.segment_paths(topic):
        with open(p, "rb") as f:
            out.append(read_header(f, str(p)).codec)
    return out


def test_a_topic_remembers_its_compression_and_reads_across_changes(tmp_path: Path) -> None:
    events = make_trades(400)
    FileTape(tmp_path).append("md.trade", events[:100])  # no choice made: uncompressed
    FileTape(tmp_path, compression="zstd").append("md.trade", events[100:200])  # a new segment
    follower = FileTape(tmp_path)  # no choice: follows the topic's last one, so extends that segment
    assert follower.compression_of("md.trade") == "zstd"
    follower.append("md.trade", events[200:300])
    follower.close()
    tape = FileTape(tmp_path, compression="none")
    tape.append("md.trade", events[300:])
    assert _codecs(tape, "md.trade") == ["null", "zstandard", "null"]
    assert [int(p.stem) for p in tape.segment_paths("md.trade")] == [0, 100, 300]
    assert FileTape(tmp_path).compression_of("md.trade") == "none"
    assert [r.event for r in tape.read("md.trade")] == events
    assert [r.offset for r in tape.read("md.trade", from_offset=150)] == list(range(150, 400))
    assert tape.offset_for_time("md.trade", 0, events[123].ts_event) == 123


def test_a_new_topic_takes_the_writers_compression(tmp_path: Path) -> None:
    FileTape(tmp_path, compression="zstd").append("md.trade", make_trades(10))
    tape = FileTape(tmp_path)
    assert tape.compression_of("md.trade") == "zstd"
    assert tape.compression_of("md.other") == "none"
    tape.append("md.trade", make_trades(10, start=10))
    assert _codecs(tape, "md.trade") == ["zstandard"]


def test_a_writer_extends_a_segment_of_its_own_compression(tmp_path: Path) -> None:
    events = make_trades(200)
    FileTape(tmp_path, compression="zstd").append("md.trade", events[:100])
    tape = FileTape(tmp_path, compression="zstd")
    tape.append("md.trade", events[100:])
    assert len(tape.segment_paths("md.trade")) == 1
    assert [r.event for r in FileTape(tmp_path).read("md.trade")] == events


def test_block_that_does_not_decompress_names_its_offset(tmp_path: Path) -> None:
    tape = FileTape(tmp_path, compression="zstd")
    tape.append("md.trade", make_trades(10))
    tape.append("md.trade", make_trades(10, start=10))
    tape.close()
    (seg,) = FileTape(tmp_path).segment_paths("md.trade")
    second_block = parse_entries(seg.with_suffix(".idx").read_bytes()[len(INDEX_MAGIC):], V2).entries[1].pos
    data = bytearray(seg.read_bytes())
    _, p = ap._read_long(data, second_block)  # record count
    _, p = ap._read_long(data, p)  # data size
    data[p] ^= 0xFF  # the zstd frame's magic
    seg.write_bytes(bytes(data))
    os.remove(seg.with_suffix(".idx"))  # readers must find the broken block by scanning, too
    with pytest.raises(DecodeError, match=r"topic md.trade partition 0 .*offset 10 does not decompress"):
        list(FileTape(tmp_path).read("md.trade"))


def test_unknown_compression_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TapeError, match="unknown compression 'lz4' for a file tape"):
        open_tape(f"file:{tmp_path}?compression=lz4")
    assert open_tape(f"file:{tmp_path}?compression=zstd").compression == "zstd"  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 65_791, 65_792, 3_000_000])
def test_zstd_frames_of_every_header_width_read_back(size: int) -> None:
    # The frame header stores the content size in 1, 2, 4 or 8 bytes depending on it.
    zstd = pytest.importorskip("backports.zstd", reason="an independent zstd writer")
    data = bytes(i % 251 for i in range(size))
    assert _unzstd(_zstd(data)) == data
    assert _unzstd(zstd.compress(data)) == data  # the reference library's frames too


def test_zstd_frame_without_its_size_is_a_clear_error() -> None:
    zstd = pytest.importorskip("backports.zstd", reason="an independent zstd writer")
    streamed = zstd.ZstdCompressor()
    frame = streamed.compress(b"x" * 1000) + streamed.flush()  # a streaming frame: size unknown up front
    with pytest.raises(ValueError, match="content size"):
        _unzstd(frame)
    with pytest.raises(ValueError, match="zstd"):
        _unzstd(b"\x00" * 16)
    with pytest.raises(ValueError, match="zstd"):
        _unzstd(_zstd(b"y" * 100_000)[:-8])  # truncated
