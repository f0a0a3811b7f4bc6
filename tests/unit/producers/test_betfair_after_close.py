"""A market after its CLOSED definition: its state is kept, as betfairlightweight keeps it.

Betfair can re-send a closed market's definition (e.g. once it is settled) and, rarely, a runner
change after the close. The importer used to drop the market's cache at CLOSED, so such a line
gave a book with total matched 0, no last price, no traded volume and UNKNOWN runners.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from betfair_helpers import REAL_MARKETS, SHARED, ladder, reference_books

from producers.betfair.historical import import_file
from producers.betfair.parse import CLOSED_TTL, MARKET_TOPIC, MS, StreamDecoder
from ticktape.events import MarketBook
from ticktape.tape import open_tape
from ticktape.timeutil import VirtualClock

needs_shared = pytest.mark.shared_data(*(f"betfair/{m}" for m in REAL_MARKETS))


def _after_close_stream(market: str, tmp_path: Path) -> Path:
    """The real recorded market, then its CLOSED definition re-sent with a later settled time, a runner
    change after the close, and the definition once more (what a settlement correction looks like)."""
    lines = (SHARED / market).read_bytes().splitlines()
    last = orjson.loads(lines[-1])
    assert last["mc"][0]["marketDefinition"]["status"] == "CLOSED"
    pt = last["pt"]
    resent = {**last, "pt": pt + 60_000}
    definition = dict(resent["mc"][0]["marketDefinition"])
    definition["settledTime"] = "2022-04-19T18:35:00.000Z"
    resent["mc"] = [{"id": market, "marketDefinition": definition}]
    first_runner = definition["runners"][0]["id"]
    runner_change = {"op": "mcm", "pt": pt + 61_000, "mc": [{"id": market, "rc": [{"id": first_runner, "tv": 0}]}]}
    again = {**resent, "pt": pt + 62_000}
    path = tmp_path / "after-close.stream"
    path.write_bytes(b"\n".join([*lines, orjson.dumps(resent), orjson.dumps(runner_change), orjson.dumps(again)])
                     + b"\n")
    return path


@needs_shared
@pytest.mark.usefixtures("runner_impl")
@pytest.mark.parametrize("market", REAL_MARKETS)
def test_a_closed_market_keeps_its_state_like_betfairlightweight(market: str, tmp_path: Path) -> None:
    stream = _after_close_stream(market, tmp_path)
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    import_file(tape, stream, clock=VirtualClock(1))
    ours = [r.event for p in range(tape.partitions(MARKET_TOPIC)) for r in tape.read(MARKET_TOPIC, p)
            if isinstance(r.event, MarketBook)]
    theirs = reference_books(stream)
    assert len(ours) == len(theirs) > 3
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert (a.status, a.in_play, a.total_matched, a.version) == (b.status, b.inplay, b.total_matched,
                                                                     b.version), i
        assert len(a.runners) == len(b.runners), i
        for ra, rb in zip(a.runners, b.runners, strict=True):
            assert (ra.selection_id, ra.status) == (rb.selection_id, rb.status), i
            assert (ra.last_price_traded, ra.total_matched) == (rb.last_price_traded, rb.total_matched), i
            assert ladder(ra.available_to_back) == ladder(rb.ex.available_to_back), i
            assert ladder(ra.available_to_lay) == ladder(rb.ex.available_to_lay), i
            assert ladder(ra.traded_volume) == ladder(rb.ex.traded_volume), i
    # what the issue saw lost: the books after the close still carry the market's trading
    closed = [b for b in ours if b.status == "CLOSED"]
    assert len(closed) == 4 and closed[-1].total_matched == closed[0].total_matched > 0
    assert any(r.traded_volume for r in closed[-1].runners)
    assert [r.status for r in closed[-2].runners] == [r.status for r in closed[0].runners]
    assert "UNKNOWN" not in {r.status for r in closed[-2].runners}


def _definition_line(market_id: str, pt_ms: int, status: str) -> bytes:
    return orjson.dumps({"op": "mcm", "pt": pt_ms, "mc": [{"id": market_id, "marketDefinition": {
        "status": status, "runners": [{"id": 1, "status": "ACTIVE"}]},
        "rc": [{"id": 1, "atb": [[2.0, 5.0]], "trd": [[2.0, 3.0]], "ltp": 2.0, "tv": 3.0}]}]})


@pytest.mark.usefixtures("runner_impl")
def test_closed_markets_are_dropped_once_silent_for_the_ttl_so_memory_stays_bounded() -> None:
    """Thousands of markets in one stream: only those closed within the last CLOSED_TTL of stream
    time are held (dropped when a new market arrives, as betfairlightweight's live stream does)."""
    dec = StreamDecoder()
    hour = 3600 * 1000
    held = []
    for i in range(2000):  # a market opening and closing every 6 minutes of stream time
        pt = i * hour // 10
        dec.decode_line(_definition_line(f"1.{i}", pt, "OPEN"))
        dec.decode_line(_definition_line(f"1.{i}", pt + 1, "CLOSED"))
        held.append(len(dec.markets))
    ttl_hours = CLOSED_TTL // (hour * MS)
    assert max(held) <= ttl_hours * 10 + 2  # bounded by the TTL, not by the stream's length
    assert "1.1999" in dec.markets and "1.0" not in dec.markets
    # an open market is never dropped, however old
    dec = StreamDecoder()
    dec.decode_line(_definition_line("1.open", 0, "OPEN"))
    dec.decode_line(_definition_line("1.new", CLOSED_TTL // MS * 3, "OPEN"))
    assert set(dec.markets) == {"1.open", "1.new"}
    # without eviction nothing is dropped
    dec = StreamDecoder(evict_closed=False)
    for i in range(50):
        dec.decode_line(_definition_line(f"1.{i}", i * hour, "CLOSED"))
    assert len(dec.markets) == 50
