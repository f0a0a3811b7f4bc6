"""Betfair's race (`rcm`) and cricket (`ccm`) streams on the real recorded files: typed `RaceChange` /
`CricketMatch` events equal to betfairlightweight's output line by line, nothing of a line lost, bad
lines dead-lettered by file and line, the same events live, and a publish time in seconds (the race
file's first lines) not stamped in 1970.

The mapping held here, betfairlightweight -> ticktape (its resources' attribute names are ours):
`publish_time_epoch` -> `pt` (`ts_event` is it in ns); `*_epoch` and the ms times
(`expected_start_time`, `actual_time`) -> the same names in ns; `race_progress` -> `progress`,
`race_runners` -> `runners`, `incident_list_wrapper.incident_list` -> `incidents`; `jumps`/`warn`
as JSON text; a list betfairlightweight reads as `[]` when not sent is null; `streaming_update`
(the change as sent) -> `change` as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from betfair_helpers import FIXTURES, SHARED
from click.testing import CliRunner

from producers.betfair.historical import import_file
from producers.betfair.parse import CRICKET_TOPIC, RACE_TOPIC, StreamDecoder
from producers.betfair.stream_time import pt_ns
from ticktape.errors import ValidationError
from ticktape.events import CricketMatch, DeadLetter, Event, RaceChange
from ticktape.tape import Tape, open_tape
from ticktape.timeutil import VirtualClock

S = 1_000_000_000
YEAR_2001 = 978_307_200 * S
RACE = "RACE-1.140075353"
CRICKET = "CRICKET-1.179676557"
needs_files = pytest.mark.shared_data(f"betfair/{RACE}", f"betfair/{CRICKET}", f"betfair/{RACE}-processed.json",
                                      f"betfair/{CRICKET}-processed.json")

RENAMED = {"progress": "race_progress", "runners": "race_runners", "pt": "publish_time_epoch",
           "incidents": "incident_list_wrapper"}
"""Our field -> betfairlightweight's attribute, where the names differ."""
TIMES = {"feed_time": "feed_time_epoch", "expected_start_time": "expected_start_time", "actual_time": "actual_time"}
"""Our ns time fields -> betfairlightweight's attribute holding the time as sent (ms, or s in old race files)."""
NOT_THEIRS = {"ts_event", "ts_recv", "clk", "initial_clk", "ct", "change", "extra"}
"""Header and raw fields betfairlightweight's resource does not carry (held against the line itself)."""


def same(ours: Any, theirs: Any, path: str = "") -> None:
    """Assert a ticktape record equals a betfairlightweight resource field by field, by the mapping above."""
    if isinstance(ours, tuple) and hasattr(ours, "_fields"):
        assert theirs is not None, f"{path}: betfairlightweight has none"
        for field in ours._fields:
            if field in NOT_THEIRS:
                continue
            mine = getattr(ours, field)
            where = f"{path}.{field}"
            if field in TIMES:
                raw = getattr(theirs, TIMES[field])
                assert mine == (None if raw is None else pt_ns(raw)), where
            elif field == "incidents":
                wrapper = theirs.incident_list_wrapper
                assert (mine is None) == (wrapper is None), where
                if wrapper is not None:
                    same(mine, wrapper.incident_list, where)
            elif field in ("jumps", "warn"):
                raw = getattr(theirs, field)
                assert mine == (None if raw is None else json.dumps(raw, separators=(",", ":"))), where
            else:
                same(mine, getattr(theirs, field if hasattr(theirs, field) else RENAMED[field]), where)
    elif isinstance(ours, tuple):
        assert isinstance(theirs, list) and len(ours) == len(theirs), f"{path}: {ours!r} != {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            same(a, b, f"{path}[{i}]")
    elif ours is None:
        assert theirs in (None, []), f"{path}: {theirs!r} not sent to ticktape"  # a list not sent: [] there
    else:
        assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"  # 157 sent, 157.0 in a double field


def _lines(name: str) -> list[bytes]:
    return [x for x in (SHARED / name).read_bytes().splitlines() if x.strip()]


def _by_line(name: str) -> list[list[tuple[str, Event]]]:
    decoder = StreamDecoder()
    return [list(decoder.decode_line(line)) for line in _lines(name)]  # type: ignore[arg-type]


def _resource(kind: str, entry: dict[str, Any]) -> Any:
    from betfairlightweight.resources.streamingresources import CricketMatch as TheirMatch
    from betfairlightweight.resources.streamingresources import Race as TheirRace

    return TheirRace(**entry) if kind == "race" else TheirMatch(**entry)


@needs_files
@pytest.mark.parametrize("name, kind, key", [(CRICKET, "cricket", "marketId"), (RACE, "race", "mid")])
def test_each_line_gives_betfairlightweights_processed_values(name: str, kind: str, key: str) -> None:
    """`NAME-processed.json` holds, per line, betfairlightweight's snap of its FIRST cached market
    (`snap()[0]`): for the race file's lines 3 and 4, which change another market, that is the
    first market's unchanged state, so the test compares the state of the market the entry names."""
    processed = json.loads((SHARED / f"{name}-processed.json").read_text())
    lines = _lines(name)
    assert len(processed) == len(lines)
    state: dict[str, Event] = {}
    for i, (entry, events) in enumerate(zip(processed, _by_line(name), strict=True)):
        assert len(events) == 1  # one change per line in these files
        topic, event = events[0]
        assert topic == (RACE_TOPIC if kind == "race" else CRICKET_TOPIC)
        state[event.market_id] = event  # type: ignore[union-attr]
        ours = state[entry[key]]
        same(ours, _resource(kind, dict(entry)), f"line {i + 1}")
        assert ours.ts_event == pt_ns(entry["pt"])
        if entry[key] == event.market_id:  # type: ignore[union-attr]
            assert orjson.loads(event.change) == entry["streaming_update"]  # type: ignore[union-attr]


@needs_files
@pytest.mark.parametrize("name, subscription, key", [(CRICKET, "cricketSubscription", "marketId"),
                                                    (RACE, "raceSubscription", "mid")])
def test_each_line_gives_betfairlightweights_state_of_the_market_it_changed(name: str, subscription: str,
                                                                           key: str) -> None:
    """Run betfairlightweight itself, and compare each line's event with its cache of that line's market."""
    from betfairlightweight.streaming import StreamListener

    listener = StreamListener(max_latency=None, lightweight=True)
    listener.register_stream(0, subscription)
    kind = "race" if subscription == "raceSubscription" else "cricket"
    for i, (line, events) in enumerate(zip(_lines(name), _by_line(name), strict=True)):
        listener.on_data(line.decode())
        ((_, event),) = events
        (theirs,) = listener.stream.snap([event.market_id])  # type: ignore[union-attr]
        same(event, _resource(kind, theirs), f"line {i + 1}")


@needs_files
def test_nothing_of_a_line_is_lost() -> None:
    """Header keys are typed fields or in `extra`, the change is kept as sent: the line comes back whole."""
    for name, changes_key in ((CRICKET, "cc"), (RACE, "rc")):
        for line, events in zip(_lines(name), _by_line(name), strict=True):
            sent = orjson.loads(line)
            ((_, event),) = events
            assert isinstance(event, CricketMatch | RaceChange)
            back: dict[str, Any] = {"op": sent["op"], "pt": event.pt, changes_key: [orjson.loads(event.change)]}
            back.update({k: v for k, v in (("clk", event.clk), ("initialClk", event.initial_clk), ("ct", event.ct))
                         if v is not None})
            back.update(orjson.loads(event.extra) if event.extra else {})
            assert back == sent
    first_race = _by_line(RACE)[0][0][1]
    assert isinstance(first_race, RaceChange)
    assert first_race.clk == "12" and orjson.loads(first_race.extra or "{}") == {"id": 2, "clk": 12}  # sent as a number


def test_keys_the_schema_does_not_know_and_nulls_sent_survive() -> None:
    decoder = StreamDecoder()
    ((_, race),) = decoder.decode_line(b'{"op":"rcm","pt":1700000004000,"clk":"R1","rc":[{"id":"31.1100","mid":"1.300",'
                                       b'"rpc":{"ft":1700000004000,"g":"","prg":800,"sds":[1]},'
                                       b'"rrc":[{"id":11,"lat":51.5,"new":"x"}]}]}')
    assert isinstance(race, RaceChange) and race.progress is not None
    assert race.progress.progress == 800.0 and race.progress.feed_time == 1_700_000_004 * S
    assert orjson.loads(race.change)["rpc"]["sds"] == [1] and orjson.loads(race.change)["rrc"][0]["new"] == "x"
    line = b'{"op":"ccm","pt":1643299036304,"cc":[{"eventId":"9","marketId":"1.3","matchStats":{"winner":"NA"},%s}]}'
    ((_, first),) = decoder.decode_line(line % b'"fixtureInfo":{"maxOvers":20}')
    ((_, kept),) = decoder.decode_line(line % b'"homeTeam":{"name":"A","players":[{"name":"B","isCaptain":true}]}')
    ((_, reset),) = decoder.decode_line(line % b'"fixtureInfo":null')
    assert isinstance(first, CricketMatch) and isinstance(kept, CricketMatch) and isinstance(reset, CricketMatch)
    assert first.fixture_info is not None and first.fixture_info.max_overs == 20
    assert kept.fixture_info == first.fixture_info  # not sent: the last one stays
    assert kept.home_team is not None and kept.home_team.players is not None
    assert kept.home_team.players[0].is_captain is True and kept.home_team.players[0].is_wicket_keeper is None
    assert reset.fixture_info is None and reset.home_team == kept.home_team  # sent as null: gone
    assert orjson.loads(reset.change)["fixtureInfo"] is None


def test_the_fixture_race_line_is_typed() -> None:
    decoder = StreamDecoder()
    races = [e for line in (FIXTURES / "orders.stream").read_bytes().splitlines()
             for t, e in decoder.decode_line(line) if t == RACE_TOPIC]
    assert len(races) == 1 and isinstance(races[0], RaceChange)
    assert (races[0].market_id, races[0].race_id, races[0].ts_event) == ("1.300", "31.1100", 1_700_000_004 * S)
    assert [r.selection_id for r in races[0].runners] == [11] and races[0].runners[0].stride_frequency == 2.1


@pytest.mark.parametrize("line, message", [
    (b'{"op":"ccm","pt":1,"cc":[{"eventId":"9","marketId":"1.3","matchStats":{"inningsStats":[{"inningsRuns":"x"}]}}]}',
     r"cc\[0\]\.matchStats\.inningsStats\[0\]\.inningsRuns: expected an integer"),
    (b'{"op":"ccm","pt":1,"cc":[{"eventId":"9"}]}', r"cc\[0\]\.marketId: expected a market id"),
    (b'{"op":"ccm","pt":1,"cc":{"marketId":"1.3"}}', "cc: expected a list"),
    (b'{"op":"ccm","pt":1,"cc":[{"marketId":"1.3","fixtureInfo":{"maxOvers":1e99}}]}', "maxOvers"),
    (b'{"op":"rcm","pt":1,"rc":[{"mid":"1.2","rrc":[{"lat":1.0}]}]}', r"rc\[0\]\.rrc\[0\]\.id: expected a value"),
    (b'{"op":"rcm","pt":1,"rc":[{"mid":"1.2","rpc":{"ord":[1,null]}}]}', r"rc\[0\]\.rpc\.ord\[1\]"),
    (b'{"op":"rcm","pt":1,"rc":[{"mid":"1.2","rpc":{"spd":"fast"}}]}', r"rc\[0\]\.rpc\.spd: expected a number"),
    (b'{"op":"rcm","pt":1,"rc":[{"mid":"1.2","rrc":[{"id":1,"ft":1.5}]}]}', r"rrc\[0\]\.ft: expected an integer"),
    (b'{"op":"rcm","pt":1,"rc":[{"mid":"1.2","rrc":[{"id":1,"ft":10000000000000}]}]}', r"ft: expected a time"),
    (b'{"op":"ccm","pt":10000000000000,"cc":[]}', "publish time pt out of range"),
    (b'{"op":"ocm","pt":10000000000000,"oc":[]}', "publish time pt out of range"),  # orders too: not at the append
    (b'{"op":"ccm","pt":1,"cc":[{"marketId":"1.3","incidentListWrapper":[]}]}', "incidentListWrapper: expected an obj"),
])
def test_a_value_its_field_cannot_hold_is_refused_naming_where(line: bytes, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StreamDecoder().decode_line(line)


def test_a_bad_line_changes_no_state() -> None:
    decoder = StreamDecoder()
    good = b'{"op":"rcm","pt":1,"rc":[{"mid":"1.2","rrc":[{"id":1,"spd":1}]}]}'
    decoder.decode_line(good)
    with pytest.raises(ValidationError):  # the first change is fine, the second is not: neither is kept
        decoder.decode_line(b'{"op":"rcm","pt":2,"rc":[{"mid":"1.2","rrc":[{"id":2}]},{"mid":"1.2","rpc":[]}]}')
    ((_, after),) = decoder.decode_line(good.replace(b'"pt":1', b'"pt":3'))
    assert isinstance(after, RaceChange) and [r.selection_id for r in after.runners] == [1]


def _dead_letters(tape: Tape) -> list[DeadLetter]:
    return [r.event for p in range(tape.partitions("dlq.betfair")) for r in tape.read("dlq.betfair", p)
            if isinstance(r.event, DeadLetter)]


@needs_files
def test_malformed_lines_are_dead_lettered_with_file_and_line_and_the_import_goes_on(tmp_path: Path) -> None:
    lines = _lines(CRICKET)
    bad = lines[1].replace(b'"inningsRuns":81', b'"inningsRuns":"81"')
    path = tmp_path / "CRICKET-bad"
    path.write_bytes(b"\n".join([lines[0], bad, b'{"op":"ccm","pt":1643299044853,"cc":[{"eventId":"1"}]}', lines[2]]))
    tape = open_tape(f"file:{tmp_path / 'tape'}")
    summary = import_file(tape, path, clock=VirtualClock(1))
    assert summary.dead_letters == 2
    dead = _dead_letters(tape)
    assert [d.position for d in dead] == ["line 2", "line 3"] and all(d.source.endswith("CRICKET-bad") for d in dead)
    assert "cc[0].matchStats.inningsStats[0].inningsRuns: expected an integer" in dead[0].error
    assert dead[0].raw == bad and "marketId" in dead[1].error
    matches = [r.event for r in tape.read(CRICKET_TOPIC)]
    assert len(matches) == 2 and all(isinstance(m, CricketMatch) for m in matches)
    last = matches[-1]
    assert isinstance(last, CricketMatch) and last.match_stats is not None and last.match_stats.innings_stats
    assert last.match_stats.innings_stats[0].innings_runs == 80  # the bad line's score never reached the cache


@needs_files
def test_cli_import_puts_the_typed_events_on_their_topics_and_load_makes_their_tables(tmp_path: Path) -> None:
    from ticktape.cli import _register_plugins, cli

    _register_plugins()
    uri = f"file:{tmp_path / 'tape'}"
    for name in (CRICKET, RACE):
        result = CliRunner().invoke(cli, ["--tape", uri, "import", "betfair", "--no-merge", str(SHARED / name)])
        assert result.exit_code == 0, result.output
    tape = open_tape(uri)
    races = [r for p in range(tape.partitions(RACE_TOPIC)) for r in tape.read(RACE_TOPIC, p)]
    matches = [r.event for r in tape.read(CRICKET_TOPIC)]
    assert [type(e) for e in matches] == [CricketMatch] * 3
    assert sorted(str(r.key) for r in races) == ["1.1234567"] * 2 + ["1.173853449"] * 2
    expected = [e for line in _by_line(RACE) for _, e in line]
    assert sorted((r.event for r in races), key=expected.index) == expected
    assert all(e.ts_event > YEAR_2001 for e in expected)
    assert matches == [e for line in _by_line(CRICKET) for _, e in line]
    assert not _dead_letters(tape)
    db = tmp_path / "a.duckdb"
    loaded = CliRunner().invoke(cli, ["--tape", uri, "load", "--db", str(db), "--no-progress",
                                      "--topics", f"{CRICKET_TOPIC},{RACE_TOPIC}"])
    assert loaded.exit_code == 0 and "loaded 7 events" in loaded.output, loaded.output
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT count(*), max(len(runners)) FROM race_change").fetchone() == (4, 4)
        assert con.execute("SELECT list(fixture_info.event_status ORDER BY _offset) FROM cricket_match").fetchone() == (
            ["BALL_IN_PROGRESS", "MATCH_STABLE", "RUNS_LIKELY"],)


@needs_files
def test_the_analyzer_loads_both_tables(tmp_path: Path) -> None:
    from analyzer.load import load

    tape = open_tape(f"file:{tmp_path / 'tape'}")
    for name in (CRICKET, RACE):
        assert import_file(tape, SHARED / name, clock=VirtualClock(1)).dead_letters == 0
    con = duckdb.connect()
    load(tape, con)
    runs = con.execute("SELECT match_stats.innings_stats[1].innings_runs, incidents[1].participant_ref, "
                       "fixture_info.expected_start_time FROM cricket_match ORDER BY _offset").fetchall()
    assert runs == [(80, None, 1643295600000 * 10**6), (81, "Joe Clarke", 1643295600000 * 10**6),
                    (81, "Joe Clarke", 1643295600000 * 10**6)]
    rows = con.execute("SELECT market_id, len(runners), runners[1].long, progress.gate_name, year(ts_event) "
                       "FROM race_change_v ORDER BY ts_event, len(runners)").fetchall()
    assert rows == [("1.1234567", 1, -0.4058491, "1f", 2018), ("1.1234567", 2, -0.4058491, "1f", 2018),
                    ("1.173853449", 3, -0.8996722, "Finish", 2020), ("1.173853449", 4, -0.8996722, "Finish", 2020)]


@needs_files
def test_the_live_session_gives_the_same_events_stamped_with_its_capture_time() -> None:
    from producers.betfair.session import StreamSession

    for name in (CRICKET, RACE):
        session = StreamSession("market")
        for i, (line, events) in enumerate(zip(_lines(name), _by_line(name), strict=True)):
            out = session.on_message(line, 5 + i)
            assert not out.dead_letters
            assert out.events == [(t, e._replace(ts_recv=5 + i)) for t, e in events]
        assert session.clk == orjson.loads(_lines(name)[-1])["clk"]


def test_a_publish_time_in_seconds_is_read_as_seconds_and_a_missing_one_refused() -> None:
    ((_, race),) = StreamDecoder().decode_line(b'{"op":"rcm","pt":1518626764,"rc":[{"mid":"1.2"}]}')
    assert race.ts_event == 1518626764 * S
    ((_, race),) = StreamDecoder().decode_line(b'{"op":"rcm","pt":1518626764000,"rc":[{"mid":"1.2"}]}')
    assert race.ts_event == 1518626764 * S
    with pytest.raises(ValidationError, match="pt"):
        StreamDecoder().decode_line(b'{"op":"ccm","pt":true,"cc":[]}')


@needs_files
def test_merged_import_orders_a_seconds_pt_by_its_time() -> None:
    from producers.betfair.merged import line_pt

    first_race, first_cricket = _lines(RACE)[0], _lines(CRICKET)[0]
    # 2018 (seconds) before 2022 (ms): read as numbers alone, the race line would sort 1000x too early
    assert line_pt(first_race, 0) == 1518626764 * 1000 < line_pt(first_cricket, 0)
