"""Betfair's cricket (`ccm`) and race (`rcm`) streams -> `CricketMatch` / `RaceChange` events. Pure.

Each change (`cc` / `rc` entry) becomes one event keyed by market id, on `md.betfair.cricket` /
`md.betfair.race`: the match's or race's state after that change, folded as betfairlightweight's
`CricketMatchCache` / `RaceCache` fold it, so the event equals what betfairlightweight yields for the
line (tests hold it to its output on recorded files):

* cricket: `fixtureInfo`, `homeTeam`, `awayTeam`, `matchStats`, `incidentListWrapper` each replace
  the last one when the change carries the key (null included), else the last one stays; the
  event id is the one of the match's first change;
* race: `rpc` replaces the progress when sent; each `rrc` entry replaces that runner's last change
  (runners stay in the order first seen); the race id is the one of the race's first change.

Mapping (Betfair key -> field): camelCase -> snake_case as betfairlightweight's resources name them
(`bat1Runs` -> `bat_1_runs`, `rpc` -> `progress`, `rrc` -> `runners`, `ft` -> `feed_time`, `g` ->
`gate_name`, `st`/`rt` -> `sectional_time`/`running_time` (seconds), `spd` -> `speed`, `prg` ->
`progress`, `ord` -> `order`, `sfq` -> `stride_frequency`, `id` -> `selection_id`,
`incidentListWrapper.incidentList` -> `incidents`); a key not sent is null. Times become integer ns
(`expectedStartTime`, `actualTime`, `ft`: ms, or seconds where `stream_time.pt_ns` says they can
only be seconds). `J` and `warn` of the race progress, whose items Betfair does not document, are
kept as JSON text.

Lossless, by choice of a raw field rather than a CustomData alongside: every event carries
`change`, the change exactly as sent (JSON), so keys the schema does not know yet (e.g. `sds` in a
race progress) and the difference between "not sent" and "sent as null" survive on the same event,
on the same topic, in the same analyzer row as the typed fields; `extra` keeps the message's header
keys that have no typed field (`id`, `conflateMs`, `heartbeatMs`, ...) or whose value the typed
field does not hold as sent (a numeric `clk`). A CustomData alongside would double the events and
split one line over two topics that a reader must join again. A message with no change (a
heartbeat) gives no event: its `clk` is superseded by the next message's.

A value of a type its field cannot hold (text where a count is, a fraction in an id) raises
`ValidationError` naming the path (`cc[0].matchStats.inningsStats[1].inningsRuns`), so the importer
dead-letters the whole line as it was read, before anything of it reaches the tape or the cache;
so does a change without its market id (betfairlightweight fails on it too). A change without
`eventId` is kept (betfairlightweight's live stream would fail on it): its `event_id` is null.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson

from producers.betfair.stream_time import pt_ns
from ticktape.errors import ValidationError
from ticktape.events import (
    CricketBattingTeamStats,
    CricketBowlingTeamStats,
    CricketFixtureInfo,
    CricketIncident,
    CricketInningsStats,
    CricketMatch,
    CricketMatchStats,
    CricketPlayerInfo,
    CricketTeamInfo,
    RaceChange,
    RaceProgress,
    RaceRunner,
)

__all__ = ["CRICKET_TOPIC", "RACE_TOPIC", "SportsStreams"]

CRICKET_TOPIC = "md.betfair.cricket"
RACE_TOPIC = "md.betfair.race"

HEADER_KEYS = {"clk": "clk", "initialClk": "initial_clk", "ct": "ct"}
"""Header keys with a typed (text) field of their own; `pt` has one too, `op` is the event type."""

_INT32 = 1 << 31
_INT64 = 1 << 63

Kind = str | type | tuple[str, Any]
"""How a JSON value becomes a field: a scalar kind name, a record class, or ("list", item kind)."""


def _fail(path: str, what: str, value: Any) -> ValidationError:
    return ValidationError(f"{path}: expected {what}, got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(value: Any, path: str, bits: int) -> int:
    limit = _INT32 if bits == 32 else _INT64
    if type(value) is not int or not -limit <= value < limit:
        raise _fail(path, f"an integer ({bits}-bit)", value)
    return value


def _scalar(kind: str, value: Any, path: str) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise _fail(path, "text", value)
        return value
    if kind == "int":
        return _integer(value, path, 32)
    if kind == "long":
        return _integer(value, path, 64)
    if kind == "time":
        ns = pt_ns(_integer(value, path, 64))
        if not -_INT64 <= ns < _INT64:
            raise _fail(path, "a time in ms since the epoch", value)
        return ns
    if kind == "float":
        if type(value) not in (int, float) or not math.isfinite(value):
            raise _fail(path, "a number", value)
        return float(value)
    if kind == "bool":
        if type(value) is not bool:
            raise _fail(path, "true or false", value)
        return value
    if kind == "json":
        return orjson.dumps(value).decode()
    raise AssertionError(f"unknown kind {kind!r}")


def _value(kind: Kind, value: Any, path: str) -> Any:
    """The field value of a JSON value (None stays None: the key was not sent, or sent as null)."""
    if value is None:
        return None
    if isinstance(kind, str):
        return _scalar(kind, value, path)
    if isinstance(kind, tuple):
        if not isinstance(value, list):
            raise _fail(path, "a list", value)
        return tuple(_item(kind[1], v, f"{path}[{i}]") for i, v in enumerate(value))
    return _record(kind, value, path)


def _item(kind: Kind, value: Any, path: str) -> Any:
    if value is None:
        raise _fail(path, "a value", value)  # Avro arrays hold no nulls; a field without default is required
    return _value(kind, value, path)


def _record(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise _fail(path, "an object", value)
    spec = FIELDS[cls]
    optional = cls._field_defaults  # type: ignore[attr-defined]
    return cls(**{name: (_value if name in optional else _item)(kind, value.get(key), f"{path}.{key}")
                  for name, (key, kind) in spec.items()})


def _bat(i: int) -> dict[str, tuple[str, Kind]]:
    return {f"bat_{i}_name": (f"bat{i}Name", "str"), f"bat_{i}_runs": (f"bat{i}Runs", "int"),
            f"bat_{i}_balls": (f"bat{i}Balls", "int"), f"bat_{i}_fours": (f"bat{i}Fours", "int"),
            f"bat_{i}_sixes": (f"bat{i}Sixes", "int"), f"bat_{i}_strike": (f"bat{i}Strike", "int")}


def _bowl(i: int) -> dict[str, tuple[str, Kind]]:
    return {f"bowl_{i}_name": (f"bowl{i}Name", "str"), f"bowl_{i}_overs": (f"bowl{i}Overs", "str"),
            f"bowl_{i}_runs": (f"bowl{i}Runs", "int"), f"bowl_{i}_maidens": (f"bowl{i}Maidens", "int"),
            f"bowl_{i}_wickets": (f"bowl{i}Wickets", "int")}


FIELDS: dict[type, dict[str, tuple[str, Kind]]] = {
    CricketFixtureInfo: {
        "home_team": ("homeTeam", "str"), "away_team": ("awayTeam", "str"),
        "expected_start_time": ("expectedStartTime", "time"), "fixture_status": ("fixtureStatus", "str"),
        "event_description": ("eventDescription", "str"), "max_overs": ("maxOvers", "int"),
        "event_status": ("eventStatus", "str")},
    CricketPlayerInfo: {"name": ("name", "str"), "is_captain": ("isCaptain", "bool"),
                        "is_wicket_keeper": ("isWicketKeeper", "bool")},
    CricketTeamInfo: {"name": ("name", "str"), "players": ("players", ("list", CricketPlayerInfo)),
                      "selection_id": ("selectionId", "long")},
    CricketInningsStats: {
        "innings_num": ("inningsNum", "int"), "batting_team": ("battingTeam", "str"),
        "bowling_team": ("bowlingTeam", "str"), "innings_runs": ("inningsRuns", "int"),
        "innings_overs": ("inningsOvers", "str"), "innings_wickets": ("inningsWickets", "int")},
    CricketBattingTeamStats: {"team_name": ("teamName", "str"), **_bat(1), **_bat(2)},
    CricketBowlingTeamStats: {"team_name": ("teamName", "str"), **_bowl(1), **_bowl(2)},
    CricketMatchStats: {
        "current_innings": ("currentInnings", "int"), "toss_result": ("tossResult", "str"),
        "innings_stats": ("inningsStats", ("list", CricketInningsStats)),
        "batting_team_stats": ("battingTeamStats", CricketBattingTeamStats),
        "bowling_team_stats": ("bowlingTeamStats", CricketBowlingTeamStats),
        "winner": ("winner", "str"), "scoreboard_status": ("scoreboardStatus", "str")},
    CricketIncident: {
        "participant_ref": ("participantRef", "str"), "incident_type": ("incidentType", "str"),
        "qualifier_type": ("qualifierType", "str"), "value": ("value", "str"), "innings": ("innings", "int"),
        "overs": ("overs", "str"), "actual_time": ("actualTime", "time"), "modified": ("modified", "bool")},
    RaceProgress: {
        "feed_time": ("ft", "time"), "gate_name": ("g", "str"), "sectional_time": ("st", "float"),
        "running_time": ("rt", "float"), "speed": ("spd", "float"), "progress": ("prg", "float"),
        "order": ("ord", ("list", "long")), "jumps": ("J", "json"), "warn": ("warn", "json")},
    RaceRunner: {
        "selection_id": ("id", "long"), "feed_time": ("ft", "time"), "lat": ("lat", "float"),
        "long": ("long", "float"), "speed": ("spd", "float"), "progress": ("prg", "float"),
        "stride_frequency": ("sfq", "float")},
}
"""Per nested record, in field order: field name -> (Betfair key, kind). The one mapping both streams use."""

CRICKET_PARTS: dict[str, tuple[str, Kind]] = {
    "fixture_info": ("fixtureInfo", CricketFixtureInfo), "home_team": ("homeTeam", CricketTeamInfo),
    "away_team": ("awayTeam", CricketTeamInfo), "match_stats": ("matchStats", CricketMatchStats)}
"""The parts of a cricket change that replace the match's last ones when sent (and `incidentListWrapper`)."""


class Header(NamedTuple):
    """The fields every event of one stream message shares."""

    pt: int
    clk: str | None
    initial_clk: str | None
    ct: str | None
    extra: str | None


def header(data: dict[str, Any], changes_key: str) -> Header:
    """The message's header fields (its `pt` already checked by the decoder: an integer, a time ns can hold)."""
    typed: dict[str, str | None] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("op", "pt", changes_key):
            continue
        field = HEADER_KEYS.get(key)
        if field is None:
            extra[key] = value
            continue
        if isinstance(value, str):
            typed[field] = value
        else:
            # Betfair sends these as text; a number (hand-written files) is kept as text and, as sent, in extra.
            typed[field] = str(value) if type(value) is int else None
            extra[key] = value
    return Header(_integer(data["pt"], "pt", 64), typed.get("clk"), typed.get("initial_clk"), typed.get("ct"),
                  orjson.dumps(extra).decode() if extra else None)


def _changes(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    changes = data.get(key)
    if changes is None:
        return []
    if not isinstance(changes, list):
        raise _fail(key, "a list of changes", changes)
    for i, change in enumerate(changes):
        if not isinstance(change, dict):
            raise _fail(f"{key}[{i}]", "an object", change)
    return changes


class _Race:
    """One race's fold state: its last event, and its runners by selection id (in the order first seen)."""

    __slots__ = ("last", "runners")

    def __init__(self, last: RaceChange) -> None:
        self.last = last
        self.runners: dict[int, RaceRunner] = {}


class SportsStreams:
    """The cricket matches and races of one stream (connection or file), folded change by change.

    Memory: one event per match and race seen, plus each race's runners; never evicted (a stream
    holds a day's races at most, each a few KB).
    """

    def __init__(self) -> None:
        self.matches: dict[str, CricketMatch] = {}
        self.races: dict[str, _Race] = {}

    def cricket(self, data: dict[str, Any], ts_event: int, ts_recv: int) -> list[tuple[str, CricketMatch]]:
        """Events of a `ccm` message published at `ts_event` (ns).

        The whole message is checked before any match's state changes, so a bad line leaves no trace.
        """
        head = header(data, "cc")
        parsed = [self._cricket_change(cc, f"cc[{i}]") for i, cc in enumerate(_changes(data, "cc"))]
        out: list[tuple[str, CricketMatch]] = []
        for market_id, event_id, cc, parts in parsed:
            last = self.matches.get(market_id)
            if last is None:
                last = CricketMatch(market_id=market_id, ts_event=ts_event, ts_recv=ts_recv, event_id=event_id,
                                    pt=head.pt, clk=None, initial_clk=None, ct=None, fixture_info=None, home_team=None,
                                    away_team=None, match_stats=None, incidents=None, change="")
            event = last._replace(ts_event=ts_event, ts_recv=ts_recv, pt=head.pt, clk=head.clk,
                                  initial_clk=head.initial_clk, ct=head.ct, change=orjson.dumps(cc).decode(),
                                  extra=head.extra, **parts)
            self.matches[market_id] = event
            out.append((CRICKET_TOPIC, event))
        return out

    @staticmethod
    def _cricket_change(cc: dict[str, Any], path: str) -> tuple[str, str | None, dict[str, Any], dict[str, Any]]:
        market_id = _required_id(cc, "marketId", path)
        event_id = _value("str", cc.get("eventId"), f"{path}.eventId")
        parts = {name: _value(kind, cc[key], f"{path}.{key}") for name, (key, kind) in CRICKET_PARTS.items()
                 if key in cc}
        if "incidentListWrapper" in cc:
            wrapper = cc["incidentListWrapper"]
            if wrapper is None:
                parts["incidents"] = None
            elif not isinstance(wrapper, dict):
                raise _fail(f"{path}.incidentListWrapper", "an object", wrapper)
            else:  # betfairlightweight reads a wrapper without its list as no incidents
                incidents = wrapper.get("incidentList")
                parts["incidents"] = _value(("list", CricketIncident), [] if incidents is None else incidents,
                                            f"{path}.incidentListWrapper.incidentList")
        return market_id, event_id, cc, parts

    def race(self, data: dict[str, Any], ts_event: int, ts_recv: int) -> list[tuple[str, RaceChange]]:
        """Events of an `rcm` message published at `ts_event` (ns); checked whole before any state changes."""
        head = header(data, "rc")
        parsed = []
        for i, rc in enumerate(_changes(data, "rc")):
            path = f"rc[{i}]"
            progress = _value(RaceProgress, rc.get("rpc"), f"{path}.rpc") if "rpc" in rc else None
            runners = _value(("list", RaceRunner), rc.get("rrc"), f"{path}.rrc") or ()
            parsed.append((_required_id(rc, "mid", path), _value("str", rc.get("id"), f"{path}.id"), rc,
                           progress, runners))
        out: list[tuple[str, RaceChange]] = []
        for market_id, race_id, rc, progress, runners in parsed:
            race = self.races.get(market_id)
            if race is None:
                race = self.races[market_id] = _Race(RaceChange(
                    market_id=market_id, ts_event=ts_event, ts_recv=ts_recv, race_id=race_id, pt=head.pt, clk=None,
                    initial_clk=None, ct=None, progress=None, runners=(), change=""))
            for runner in runners:
                race.runners[runner.selection_id] = runner
            event = race.last._replace(
                ts_event=ts_event, ts_recv=ts_recv, pt=head.pt, clk=head.clk, initial_clk=head.initial_clk,
                ct=head.ct, progress=progress if "rpc" in rc else race.last.progress,
                runners=tuple(race.runners.values()), change=orjson.dumps(rc).decode(), extra=head.extra)
            race.last = event
            out.append((RACE_TOPIC, event))
        return out


def _required_id(change: dict[str, Any], key: str, path: str) -> str:
    value = change.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(f"{path}.{key}", "a market id", value)
    return value

