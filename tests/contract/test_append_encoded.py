"""The Tape contract for `append_encoded`: pre-encoded events land exactly as `append` puts them.

Run on every backend like the rest of the contract suite (file, Kafka with both clients).
"""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import fastavro
import pytest

from tests.conftest import TapeFactory, make_trades
from ticktape.codec import Codec, default_codec
from ticktape.demo import synthetic_betfair
from ticktape.errors import TapeError
from ticktape.events import CustomData, Event, PlaceOrder, Quote, Timer
from ticktape.schemas import SchemaRegistry, default_schema_dir
from ticktape.tape import Encoded, Position, Record, Tape, partition_for

TS0 = 1_700_000_000_000_000_000


def encoded(events: Sequence[Event], keys: Sequence[str | None] | None = None,
            codec: Codec | None = None) -> list[Encoded]:
    """What a producer hands `append_encoded`: each event's key (or the given one), ts_event and bytes."""
    codec = codec or default_codec()
    return [Encoded(codec.key_of(e) if keys is None else keys[i], e.ts_event, codec.encode(e))
            for i, e in enumerate(events)]


def mixed_events() -> list[Event]:
    """Several event types and keys, interleaved: trades, Betfair definitions and books, quotes, timers."""
    trades: list[Event] = [t for i in range(24) for t in make_trades(1, start=i, instrument=f"SYM{i % 5}")]
    betfair = synthetic_betfair(2)[:16]
    others: list[Event] = [Quote("binance", "ETHUSDT", TS0 + 5, TS0 + 6, 1.0, 2.0, 1.5, 3.0),
                           Timer("robot-a", "tick", TS0 + 7, TS0 + 7),
                           CustomData("tweet", "elon", TS0 + 8, TS0 + 9, '{"text": "hi"}')]
    out: list[Event] = []
    for i in range(max(len(trades), len(betfair))):
        out.extend(trades[i:i + 1] + betfair[i:i + 1] + others[i % 3:i % 3 + 1])
    return out


def by_position(tape: Tape, topic: str) -> dict[Position, Record]:
    """Every record of a topic, by where it is."""
    return {Position(r.partition, r.offset): r for p in range(tape.partitions(topic)) for r in tape.read(topic, p)}


@pytest.mark.parametrize("partitions", [1, 4])
def test_reads_back_what_append_writes(tape_factory: TapeFactory, topic: str, partitions: int) -> None:
    tape = tape_factory()
    plain, pre = f"{topic}.plain", f"{topic}.encoded"
    for t in (plain, pre):
        tape.create_topic(t, partitions)
    events = mixed_events()
    assert len({type(e) for e in events}) >= 5
    expected = tape.append(plain, events)
    positions = tape.append_encoded(pre, encoded(events))
    assert positions == expected
    codec = default_codec()
    for e, pos in zip(events, positions, strict=True):
        assert pos.partition == partition_for(codec.key_of(e), partitions)
    if partitions > 1:
        assert len({p.partition for p in positions}) > 1
    got, want = by_position(tape, pre), by_position(tape, plain)
    assert [(r.key, r.event) for r in got.values()] == [(r.key, r.event) for r in want.values()]
    assert [got[p].event for p in positions] == events
    assert [got[p].key for p in positions] == [codec.key_of(e) for e in events]


def test_mixes_with_append_on_one_topic(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    events = make_trades(30)
    first = tape.append_encoded(topic, encoded(events[:10]))
    second = tape.append(topic, events[10:20])
    third = tape.append_encoded(topic, encoded(events[20:]))
    assert list(first) + list(second) + list(third) == [Position(0, i) for i in range(30)]
    assert [r.event for r in tape.read(topic)] == events
    reopened = tape_factory()
    assert [r.event for r in reopened.read(topic)] == events


def test_given_keys_are_kept_and_pick_partitions(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    tape.create_topic(topic, 4)
    events = make_trades(16)
    keys: list[str | None] = [None if i % 5 == 0 else f"key-{i % 7}-é" for i in range(16)]
    positions = tape.append_encoded(topic, encoded(events, keys))
    assert [p.partition for p in positions] == [partition_for(k, 4) for k in keys]
    records = by_position(tape, topic)
    assert [(records[p].key, records[p].event) for p in positions] == list(zip(keys, events, strict=True))


def test_explicit_partition_wins(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    tape.create_topic(topic, 3)
    events = [t for i in range(9) for t in make_trades(1, start=i, instrument=f"SYM{i}")]
    assert tape.append_encoded(topic, encoded(events), partition=2) == [Position(2, i) for i in range(9)]
    assert [(r.key, r.event) for r in tape.read(topic, 2)] == [(e.instrument, e) for e in events]
    assert tape.end_offsets(topic) == {0: 0, 1: 0, 2: 9}
    with pytest.raises(TapeError, match="no partition 3"):
        tape.append_encoded(topic, encoded(events), partition=3)


def test_empty_batch(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    assert tape.append_encoded(topic, []) == []
    assert tape.partitions(topic) == 0
    tape.append(topic, make_trades(2))
    assert tape.append_encoded(topic, []) == []
    assert tape.end_offsets(topic) == {0: 2}


GOOD = default_codec().encode(make_trades(1)[0])
BAD_ITEMS = {
    "too short": (Encoded("k", TS0, GOOD[:7]), "7 bytes of data is too short"),
    "no marker": (Encoded("k", TS0, b"\x00\x01" + GOOD[2:]), "C3 01 marker"),
    "unknown fingerprint": (Encoded("k", TS0, GOOD[:2] + b"\xff" * 8 + GOOD[10:]), "unknown schema fingerprint ff"),
    "data not bytes": (Encoded("k", TS0, bytearray(GOOD)), "data must be bytes, not bytearray"),  # type: ignore[arg-type]
    "key not a str": (Encoded(7, TS0, GOOD), "key must be a str or None, not int"),  # type: ignore[arg-type]
    "ts_event not an int": (Encoded("k", float(TS0), GOOD), "ts_event must be an int"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
def test_bad_item_is_named_and_nothing_is_appended(tape_factory: TapeFactory, topic: str, case: str) -> None:
    tape = tape_factory()
    tape.create_topic(topic, 3)
    before = [t for i in range(6) for t in make_trades(1, start=i, instrument=f"SYM{i}")]
    tape.append(topic, before)
    ends = tape.end_offsets(topic)
    bad, why = BAD_ITEMS[case]
    items = encoded(make_trades(5, start=10, instrument="SYM1"))
    items.insert(3, bad)
    items += encoded([t for i in range(6) for t in make_trades(1, start=20 + i, instrument=f"SYM{i}")])
    with pytest.raises(TapeError, match=rf"append to {re.escape(topic)}: item 3 of the batch: .*{re.escape(why)}"):
        tape.append_encoded(topic, items)
    assert tape.end_offsets(topic) == ends
    assert sorted((r.event for p in range(3) for r in tape.read(topic, p)), key=lambda e: e.ts_event) == before


def test_bad_item_on_a_new_topic_creates_nothing(tape_factory: TapeFactory, topic: str) -> None:
    tape = tape_factory()
    with pytest.raises(TapeError, match="item 1 of the batch"):
        tape.append_encoded(topic, [*encoded(make_trades(1)), Encoded("k", TS0, b"")])
    assert tape.partitions(topic) == 0


def test_an_old_schema_version_is_refused(tape_factory: TapeFactory, topic: str, tmp_path: Path) -> None:
    """Only the current version of a type can be spliced: an entry holds the current schema's body."""
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        shutil.copy(p, schemas / p.name)
    current = json.loads((schemas / "CustomData.v1.avsc").read_text())
    old = copy.deepcopy(current)
    old["fields"] = [f for f in old["fields"] if f["name"] != "content_type"]
    (schemas / "CustomData.v1.avsc").write_text(json.dumps(old))
    (schemas / "CustomData.v2.avsc").write_text(json.dumps(current))
    reg = SchemaRegistry.load(schemas)
    codec = Codec(reg)
    tape = tape_factory(codec=codec)
    v1 = reg.history("CustomData")[0]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(copy.deepcopy(v1.schema)), {
        "name": "tweet", "key": "elon", "ts_event": TS0, "ts_recv": TS0, "payload": "{}"})
    events: list[Event] = [CustomData("tweet", "elon", TS0 + i, TS0 + i, "{}") for i in range(3)]
    items = [*encoded(events, codec=codec), Encoded("elon", TS0, b"\xc3\x01" + v1.fingerprint + buf.getvalue())]
    with pytest.raises(TapeError, match=r"item 3 of the batch: .*is CustomData v1, not its current v2"):
        tape.append_encoded(topic, items)
    assert tape.partitions(topic) == 0
    assert tape.append_encoded(topic, items[:3]) == [Position(0, i) for i in range(3)]
    assert [r.event for r in tape.read(topic)] == events


def limit_and_maker_intents() -> list[Event]:
    """PlaceOrder intents of a v1 order type (LIMIT) and of one only v2 has (LIMIT_MAKER), interleaved."""
    return [PlaceOrder("bot", f"abc-{i}-0", "binance", "BTCUSDT", TS0 + i, TS0 + i, "BUY",
                       "LIMIT_MAKER" if i % 2 else "LIMIT", 100.0 + i, 0.5, "GTC") for i in range(6)]


def test_an_older_same_body_version_is_written_read_and_spliced(tape_factory: TapeFactory, topic: str) -> None:
    """PlaceOrder v2 only appended order types: a LIMIT intent keeps v1's header (and bytes), a
    LIMIT_MAKER one gets v2's; both kinds append, splice and read back on every backend."""
    codec = default_codec()
    intents = limit_and_maker_intents()
    v1, v2 = codec.registry.history("PlaceOrder")
    headers = [codec.encode(e)[2:10] for e in intents]
    assert headers == [v1.fingerprint if e.order_type == "LIMIT" else v2.fingerprint for e in intents]
    tape = tape_factory()
    tape.append(f"{topic}.plain", intents)
    tape.append_encoded(f"{topic}.encoded", encoded(intents))
    for t in (f"{topic}.plain", f"{topic}.encoded"):
        assert [r.event for r in tape.read(t)] == intents
        assert [codec.encode(r.event) for r in tape.read(t)] == [codec.encode(e) for e in intents]


def test_a_bad_event_in_append_appends_nothing(tape_factory: TapeFactory, topic: str) -> None:
    """`append` too: a batch that fails to encode writes no partition's share of it."""
    tape = tape_factory()
    tape.create_topic(topic, 4)
    events = [t for i in range(12) for t in make_trades(1, start=i, instrument=f"SYM{i}")]
    events[9] = events[9]._replace(price="not a price")  # type: ignore[arg-type]
    with pytest.raises(TapeError, match="event 9 of the batch"):
        tape.append(topic, events)
    assert tape.end_offsets(topic) == {p: 0 for p in range(4)}
