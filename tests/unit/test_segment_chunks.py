"""A block decoded a chunk of records at a time (`Segment.read_chunks`, what the backtest's reader and
`FileTape.read_events` use): the same entries, in the same order, with the same errors, as the whole block
(`Segment.read_block`), on either codec engine; and decoded only as far as it is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from robots.fastread import partition_events
from ticktape.errors import DecodeError
from ticktape.events import MarketBook, PriceSize, RunnerBook
from ticktape.tape.file import FileTape
from ticktape.tape.segment import CHUNK

TOPIC = "md.betfair.market"


def book(i: int) -> MarketBook:
    runners = tuple(
        RunnerBook(selection_id=r, handicap=0.0, status="ACTIVE", last_price_traded=None, total_matched=float(i),
                   available_to_back=tuple(PriceSize(price=2.0 + k / 50, size=float(i % 7 + k)) for k in range(5)),
                   available_to_lay=tuple(PriceSize(price=3.0 + k / 50, size=float(r + k)) for k in range(i % 4)),
                   traded_volume=(), sp_near=None, sp_far=float("nan") if i % 5 == 0 else None,
                   sp_back_stake_taken=(), sp_lay_liability_taken=())
        for r in range(3))
    return MarketBook(market_id=f"1.{i % 3}", ts_event=1_000 + i, ts_recv=2_000 + i, status="OPEN", in_play=False,
                      bet_delay=0, total_matched=float(i), version=i, complete=True, cross_matching=False,
                      number_of_active_runners=3, runners=runners)


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileTape, list[MarketBook]]:
    path = tmp_path_factory.mktemp("chunks")
    t = FileTape(path, segment_bytes=400_000)
    books = [book(i) for i in range(500)]
    for lo in range(0, 500, 100):  # blocks of 100 records: several chunks each
        t.append(TOPIC, books[lo:lo + 100])
    return t, books


def blocks(t: FileTape) -> list[tuple[object, int]]:
    return [(seg, bi) for seg in t._log(TOPIC, 0).segments for bi in range(len(seg.blocks))]


@pytest.mark.parametrize("chunk", [1, 7, CHUNK, 99, 100, 1_000])
def test_chunks_put_together_are_the_block(tape: tuple[FileTape, list[MarketBook]], chunk: int) -> None:
    t, _ = tape
    found = blocks(t)
    assert len(found) == 5 and all(seg.blocks[bi].records == 100 for seg, bi in found)  # type: ignore[attr-defined]
    for seg, bi in found:
        whole = seg.read_block(bi)  # type: ignore[attr-defined]
        chunks = list(seg.read_chunks(bi, chunk))  # type: ignore[attr-defined]
        assert [len(c) for c in chunks[:-1]] == [chunk] * (len(chunks) - 1)
        assert repr([e for c in chunks for e in c]) == repr(whole)  # repr: NaN compares unequal to itself


def test_a_block_is_decoded_only_as_far_as_it_is_read(tape: tuple[FileTape, list[MarketBook]]) -> None:
    t, books = tape
    seg, bi = blocks(t)[0]
    it = seg.read_chunks(bi, 10)  # type: ignore[attr-defined]
    first = next(it)
    assert len(first) == 10 and repr([e for _, e in first]) == repr(books[:10])


def test_the_tape_reads_the_same_events_from_any_offset(tape: tuple[FileTape, list[MarketBook]]) -> None:
    t, books = tape
    assert repr(list(t.read_events(TOPIC))) == repr(books)
    for lo in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 99, 100, 101, 100 + 2 * CHUNK, 250, 499, 500):
        assert repr(list(partition_events(t, TOPIC, 0, lo, 500))) == repr(books[lo:]), lo
    assert repr(list(partition_events(t, TOPIC, 0, 37, 140))) == repr(books[37:140])


def test_damaged_block_data_raises_as_the_whole_block_does(tape: tuple[FileTape, list[MarketBook]]) -> None:
    t, _ = tape
    seg, bi = blocks(t)[1]
    info = seg.blocks[bi]  # type: ignore[attr-defined]
    decoder = seg._decoder()  # type: ignore[attr-defined]
    data = seg.read_block_data(bi)  # type: ignore[attr-defined]
    cases = {"stray byte": data + b"\x00", "cut short": data[:-50], "cut in the first chunk": data[:200],
             "one record too few": data}
    for name, bad in cases.items():
        count = info.records + 1 if name == "one record too few" else info.records
        with pytest.raises(DecodeError) as whole:
            decoder.decode(bad, count, info.first_offset)
        with pytest.raises(DecodeError) as chunked:
            for _ in decoder.decode_chunks(bad, count, info.first_offset, 16):
                pass
        assert str(chunked.value) == str(whole.value), name


def test_a_file_tape_from_disk_reads_its_blocks_chunk_by_chunk(tmp_path: Path) -> None:
    """A fresh reader of the tape (what a backtest opens) gets the same events."""
    t = FileTape(tmp_path)
    books = [book(i) for i in range(130)]
    t.append(TOPIC, books)
    t.close()
    assert repr(list(FileTape(tmp_path).read_events(TOPIC))) == repr(books)


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_blocks_are_read_without_a_copy_unless_compressed(tmp_path: Path, compression: str | None) -> None:
    """An uncompressed block's records are decoded from a view of the bytes read (a ~6 MB copy per Betfair
    block saved); a compressed one from its inflated bytes. Either way, the same events."""
    t = FileTape(tmp_path, compression=compression)
    books = [book(i) for i in range(80)]
    t.append(TOPIC, books)
    (seg, bi), = blocks(t)
    view = seg._record_view(bi)  # type: ignore[attr-defined]
    assert isinstance(view, memoryview if compression is None else bytes)
    assert seg.read_block_data(bi) == bytes(view)  # type: ignore[attr-defined]
    assert repr([e for _, e in seg.read_block(bi)]) == repr(books)  # type: ignore[attr-defined]
    assert repr([e for c in seg.read_chunks(bi, 16) for _, e in c]) == repr(books)  # type: ignore[attr-defined]
