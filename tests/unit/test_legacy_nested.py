"""Segments written before MarketBook v2 (fields appended inside the nested RunnerBook) decode on the
fast path: the old tuples get the defaults added at every depth (`legacy.upgrader`), no fastavro,
and the result equals Avro schema resolution (fastavro reading the segment through today's schemas).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import fastavro
import pytest

from ticktape import schemas as ts
from ticktape.codec import Codec, make_converter
from ticktape.events import Event, MarketBook, PriceSize, RunnerBook, Trade
from ticktape.schemas import SchemaRegistry, default_schema_dir, registry
from ticktape.tape import legacy, open_tape
from ticktape.tape.legacy import upgrader

TS0 = 1_700_000_000_000_000_000


def v1_codec(directory: Path) -> Codec:
    """The codec of the code before MarketBook v2 (its schema directory without MarketBook.v2)."""
    directory.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        if p.name != "MarketBook.v2.avsc":
            shutil.copy(p, directory / p.name)
    return Codec(SchemaRegistry.load(directory))


def v1_book(i: int, runners: int) -> MarketBook:
    """A MarketBook as v1 wrote it: today's classes holding only v1's fields (RunnerBook's first eight)."""
    rbs = tuple(tuple.__new__(RunnerBook, (
        100 + r, 0.5 * (r % 2), "ACTIVE" if r else "REMOVED", None if r == 1 else 2.0 + r, 10.0 * r,
        tuple(PriceSize(2.0 + r - 0.02 * k, 1.0 + k) for k in range(r % 4)),
        tuple(PriceSize(2.02 + r + 0.02 * k, 2.0 + k) for k in range((r + 1) % 3)),
        tuple(PriceSize(1.5 + 0.1 * k, 3.0 + k) for k in range(r)))) for r in range(runners))
    return MarketBook(f"1.{i}", TS0 + i, TS0 + i, "OPEN", i % 2 == 1, i % 3, 100.0 + i, i, True, False,
                      runners, rbs)


def events() -> list[Event]:
    out: list[Event] = []
    for i in range(40):
        out.append(v1_book(i, i % 7))  # 0..6 runners: an empty runner list too
        if i % 5 == 0:
            out.append(Trade("binance", "BTCUSDT", TS0 + i, TS0 + i, 100.0 + i, 1.0, "BUY", str(i)))
    return out


def fastavro_resolution(paths: list[Path]) -> list[Event]:
    """Every event of the segments resolved by fastavro through today's entry schema."""
    reg = registry()
    reader = fastavro.parse_schema(reg.entry_schema())
    converters = {f"ticktape.{n}": make_converter(reg.current[n].schema) for n in reg.names()}
    out = []
    for path in paths:
        with path.open("rb") as f:
            for rec in fastavro.reader(f, reader_schema=reader, return_record_name=True):
                name, body = rec["event"]
                out.append(converters[name](body, ""))
    return out


def test_a_v1_market_book_segment_reads_through_v2_on_the_fast_path(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "tape"
    written = events()
    with open_tape(f"file:{root}", codec=v1_codec(tmp_path / "v1")) as tape:
        tape.append("md.betfair.market", written[:25])
        tape.append("md.betfair.market", written[25:])

    def no_avro(*args: Any) -> Any:
        raise AssertionError("MarketBook v1 records went to Avro resolution, not the fast path")
    monkeypatch.setattr(legacy, "_avro_resolver", no_avro)
    with open_tape(f"file:{root}") as tape:
        got = [r.event for r in tape.read("md.betfair.market")]
        decoders = [seg.decoder for log in tape._logs.values() for seg in log.segments]
        assert decoders and all(d is not None and not d.slow for d in decoders)
        assert {t.__name__ for d in decoders for t in d.resolvers} == {"OldMarketBook"}
        paths = tape.segment_paths("md.betfair.market")
    expected = fastavro_resolution(paths)
    assert len(got) == len(written) == len(expected)
    assert got == expected
    for event, old in zip(got, written, strict=True):
        assert type(event) is type(old)
        if isinstance(event, MarketBook):
            assert tuple(event) == (*old[:-1], event.runners)
            for rb, old_rb in zip(event.runners, old.runners, strict=True):
                assert type(rb) is RunnerBook and tuple(rb) == (*old_rb, None, None, (), ())
                assert all(type(lv) is PriceSize for side in rb[5:8] for lv in side)


RECORD = {"type": "record", "name": "RunnerBook", "namespace": "ticktape", "fields": [
    {"name": "selection_id", "type": "long"},
    {"name": "ladder", "type": {"type": "array", "items": {
        "type": "record", "name": "PriceSize", "fields": [{"name": "price", "type": "double"},
                                                          {"name": "size", "type": "double"}]}}}]}


def with_fields(schema: dict[str, Any], *fields: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "fields": [*schema["fields"], *fields]}


def test_upgrader_adds_defaults_at_every_depth_and_builds_todays_classes() -> None:
    new = with_fields(RECORD, {"name": "sp_near", "type": ["null", "double"], "default": None},
                      {"name": "sp_back_stake_taken", "type": {"type": "array", "items": "PriceSize"}, "default": []},
                      {"name": "total_matched", "type": "double", "default": 0})
    upgrade = upgrader(RECORD, new)
    assert upgrade is not None
    got = upgrade((7, ((2.0, 1.0), (3.0, 4.0))))  # nested records decoded as plain tuples
    assert got == (7, (PriceSize(2.0, 1.0), PriceSize(3.0, 4.0)), None, (), 0.0)
    assert type(got) is RunnerBook and all(type(lv) is PriceSize for lv in got[1])
    assert type(got[4]) is float  # the decoder gives a double's default as a float
    # A nested record decoded with today's class already is kept as it is.
    lv = PriceSize(2.0, 1.0)
    assert upgrader(RECORD, new, frozenset({"ticktape.PriceSize"}))((7, (lv,)))[1][0] is lv  # type: ignore[misc]


@pytest.mark.parametrize("change", ["a non-empty array default", "no default", "a field's type",
                                    "a nested field's type", "a record default"])
def test_upgrader_refuses_what_is_not_an_append_with_plain_defaults(change: str) -> None:
    new = copy.deepcopy(RECORD)
    if change == "a non-empty array default":
        new = with_fields(new, {"name": "x", "type": {"type": "array", "items": "double"}, "default": [1.0]})
    elif change == "no default":
        new = with_fields(new, {"name": "x", "type": "double"})
    elif change == "a field's type":
        new["fields"][0]["type"] = "double"
    elif change == "a nested field's type":
        new["fields"][1]["type"]["items"]["fields"][1]["type"] = "float"
    else:
        new = with_fields(new, {"name": "x", "type": {"type": "record", "name": "X", "fields": []}, "default": {}})
    assert upgrader(RECORD, new) is None


def test_the_v2_schema_appends_only_inside_runner_book() -> None:
    """What the fast path relies on: MarketBook v2 differs from v1 only by RunnerBook's appended fields."""
    v1, v2 = (json_of(n) for n in ("MarketBook.v1.avsc", "MarketBook.v2.avsc"))
    rb1, rb2 = v1["fields"][-1]["type"]["items"], v2["fields"][-1]["type"]["items"]
    assert rb2["fields"][:len(rb1["fields"])] == rb1["fields"]
    assert [f["name"] for f in rb2["fields"][len(rb1["fields"]):]] == [
        "sp_near", "sp_far", "sp_back_stake_taken", "sp_lay_liability_taken"]
    assert upgrader(v1, v2) is not None
    assert ts.fingerprint_of(v1) != ts.fingerprint_of(v2)


def json_of(name: str) -> dict[str, Any]:
    import json

    return json.loads((default_schema_dir() / name).read_text())  # type: ignore[no-any-return]
