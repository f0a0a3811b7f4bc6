"""Betfair's race (`rcm`) and cricket (`ccm`) streams on the real recorded files: kept as typed
`CustomData` on their own topics, and a publish time in seconds (the race file's first lines) is
not stamped in 1970."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from betfair_helpers import SHARED

from producers.betfair.historical import import_file
from producers.betfair.parse import CRICKET_TOPIC, RACE_TOPIC, StreamDecoder
from ticktape.errors import ValidationError
from ticktape.events import CustomData
from ticktape.tape import open_tape
from ticktape.timeutil import VirtualClock

S = 1_000_000_000
YEAR_2001 = 978_307_200 * S


@pytest.mark.shared_data("betfair/RACE-1.140075353", "betfair/CRICKET-1.179676557")
def test_race_and_cricket_files_import_without_dead_letters(tmp_path: Path) -> None:
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    race = import_file(tape, SHARED / "RACE-1.140075353", clock=VirtualClock(1))
    cricket = import_file(tape, SHARED / "CRICKET-1.179676557", clock=VirtualClock(1))
    assert race.dead_letters == cricket.dead_letters == 0
    races = [r.event for r in tape.read(RACE_TOPIC)]
    crickets = [r.event for r in tape.read(CRICKET_TOPIC)]
    assert all(isinstance(e, CustomData) for e in races + crickets)
    assert len(races) == 4 and all(e.ts_event > YEAR_2001 for e in races)
    assert races[0].ts_event == 1518626764 * S  # pt in seconds, read as seconds
    # lossless: each change as Betfair sent it
    first_rc = orjson.loads((SHARED / "RACE-1.140075353").read_bytes().splitlines()[0])["rc"][0]
    assert orjson.loads(races[0].payload) == first_rc  # type: ignore[union-attr]
    lines = [orjson.loads(x) for x in (SHARED / "CRICKET-1.179676557").read_bytes().splitlines() if x.strip()]
    sent = [cc for m in lines for cc in m.get("cc") or ()]
    assert [orjson.loads(e.payload) for e in crickets] == sent  # type: ignore[union-attr]
    assert [e.key for e in crickets] == [cc["marketId"] for cc in sent]  # type: ignore[union-attr]
    assert all(e.name == "betfair.cricket" and e.ts_event > YEAR_2001 for e in crickets)  # type: ignore[union-attr]


def test_a_publish_time_in_seconds_is_read_as_seconds_and_a_missing_one_refused() -> None:
    ((_, race),) = StreamDecoder().decode_line(b'{"op":"rcm","pt":1518626764,"rc":[{"mid":"1.2"}]}')
    assert race.ts_event == 1518626764 * S
    ((_, race),) = StreamDecoder().decode_line(b'{"op":"rcm","pt":1518626764000,"rc":[{"mid":"1.2"}]}')
    assert race.ts_event == 1518626764 * S
    with pytest.raises(ValidationError, match="pt"):
        StreamDecoder().decode_line(b'{"op":"ccm","pt":true,"cc":[]}')


@pytest.mark.shared_data("betfair/RACE-1.140075353", "betfair/CRICKET-1.179676557")
def test_merged_import_orders_a_seconds_pt_by_its_time() -> None:
    from producers.betfair.merged import line_pt

    first_race = (SHARED / "RACE-1.140075353").read_bytes().splitlines()[0]
    first_cricket = (SHARED / "CRICKET-1.179676557").read_bytes().splitlines()[0]
    # 2018 (seconds) before 2022 (ms): read as numbers alone, the race line would sort 1000x too early
    assert line_pt(first_race, 0) == 1518626764 * 1000 < line_pt(first_cricket, 0)


def test_the_live_session_reads_seconds_and_keeps_cricket_changes() -> None:
    from producers.betfair.session import StreamSession

    session = StreamSession("market")
    out = session.on_message(b'{"op":"rcm","clk":"3","pt":1518626764,"rc":[{"mid":"1.2"}]}', 5)
    assert session.last_pt == 1518626764 * S and not out.dead_letters  # the time a gap is stamped with
    out = session.on_message(b'{"op":"ccm","clk":"4","pt":1643299036304,"cc":[{"marketId":"1.3","eventId":"9"}]}', 6)
    assert not out.dead_letters and [(t, e.key) for t, e in out.events] == [(CRICKET_TOPIC, "1.3")]  # type: ignore[union-attr]
    assert session.clk == "4"
