"""Schema evolution without slowing old tapes: same-body versions keep old bytes, and a segment
written before a type changed still decodes on the fast path (only the changed records resolved).

PlaceOrder v2 and ReplaceOrder v2 added LIMIT_MAKER and LIMIT_ON_CLOSE. An intent that uses neither
must encode exactly as v1 wrote it (header included), or every recorded `intents_sha256` and every
audit of an older run would change.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path

import fastavro
import pytest

from ticktape.codec import Codec, default_codec
from ticktape.events import CustomData, OrderAccepted, PlaceOrder, ReplaceOrder, RunStarted, Trade
from ticktape.schemas import SchemaRegistry, default_schema_dir, fingerprint_of, registry, same_body
from ticktape.tape import open_tape
from ticktape.tape.legacy import appended_defaults

TS0 = 1_700_000_000_000_000_000


def canonical(symbols: list[str], extra_field: bool = False, enum_name: str = "E") -> str:
    fields = [{"name": "x", "type": {"type": "enum", "name": enum_name, "symbols": symbols}}]
    if extra_field:
        fields.append({"name": "y", "type": "long"})
    return fingerprint_of({"type": "record", "name": "R", "namespace": "ticktape", "fields": fields})[0]


def test_same_body_only_when_symbols_are_appended() -> None:
    old = canonical(["A", "B"])
    assert same_body(old, canonical(["A", "B", "C"]))
    assert same_body(old, old)
    assert not same_body(old, canonical(["B", "A", "C"]))  # reordered: indices change
    assert not same_body(old, canonical(["A", "C", "B"]))  # inserted in the middle
    assert not same_body(canonical(["A", "B", "C"]), old)  # a symbol removed
    assert not same_body(old, canonical(["A", "B", "C"], extra_field=True))  # a field added
    assert not same_body(old, canonical(["A", "B", "C"], enum_name="F"))  # another enum


def test_the_registry_knows_place_and_replace_v1_write_v2_bodies() -> None:
    reg = registry()
    for name in ("PlaceOrder", "ReplaceOrder"):
        v1, v2 = reg.history(name)[:2]
        assert reg.same_body[v1.fingerprint] is reg.current[name] is v2
    assert all(v.name in ("PlaceOrder", "ReplaceOrder") for v in reg.same_body.values())


def v1_bytes(name: str, record: dict[str, object]) -> bytes:
    """What ticktape wrote before v2: v1's header and fastavro's body under the v1 schema."""
    v1 = registry().history(name)[0]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(copy.deepcopy(v1.schema)), record)
    return b"\xc3\x01" + v1.fingerprint + buf.getvalue()


@pytest.mark.parametrize("order_type", ["MARKET", "LIMIT", "STOP_MARKET"])
def test_an_intent_of_a_v1_order_type_encodes_byte_for_byte_as_v1_did(order_type: str) -> None:
    codec = default_codec()
    place = PlaceOrder("bot", "abc-1-0", "binance", "BTCUSDT", TS0, TS0 + 1, "SELL", order_type,  # type: ignore[arg-type]
                       101.5, 0.25, "IOC", "why")
    assert codec.encode(place) == v1_bytes("PlaceOrder", place._asdict())
    replace = ReplaceOrder("bot", "abc-1-0", "binance", "BTCUSDT", TS0, TS0, "SELL", order_type,  # type: ignore[arg-type]
                           102.0, 0.5, "GTC", "")
    assert codec.encode(replace) == v1_bytes("ReplaceOrder", replace._asdict())
    assert codec.decode(v1_bytes("PlaceOrder", place._asdict())) == place


@pytest.mark.parametrize("order_type", ["LIMIT_MAKER", "LIMIT_ON_CLOSE"])
def test_an_intent_of_a_new_order_type_is_written_as_v2(order_type: str) -> None:
    codec = default_codec()
    place = PlaceOrder("bot", "abc-1-0", "betfair", "1.2:3", TS0, TS0, "BUY", order_type,  # type: ignore[arg-type]
                       3.0, 20.0, "GTC")
    data = codec.encode(place)
    assert data[2:10] == registry().current["PlaceOrder"].fingerprint
    assert codec.decode(data) == place
    with pytest.raises(ValueError):  # v1 has no such symbol: only v2 can carry it
        v1_bytes("PlaceOrder", place._asdict())


def test_a_segment_written_before_v2_is_read_without_schema_resolution(tmp_path: Path) -> None:
    """A file tape written when PlaceOrder v1 was current keeps the fast (C) path after the upgrade."""
    before = tmp_path / "schemas"
    before.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        if p.name not in ("PlaceOrder.v2.avsc", "ReplaceOrder.v2.avsc"):
            shutil.copy(p, before / p.name)
    old_codec = Codec(SchemaRegistry.load(before))
    events = [Trade("binance", "BTCUSDT", TS0 + i, TS0 + i, 100.0 + i, 1.0, "BUY", str(i)) for i in range(5)]
    intents = [PlaceOrder("bot", f"abc-{i}-0", "binance", "BTCUSDT", TS0 + i, TS0 + i, "BUY", "LIMIT", 100.0, 1.0,
                          "GTC") for i in range(3)]
    root = tmp_path / "tape"
    with open_tape(f"file:{root}", codec=old_codec) as tape:
        tape.append("md.trade", events)
        tape.append("orders.intent", intents)
    assert list((root / "orders.intent").rglob("*.avro"))  # segments written under the old union
    with open_tape(f"file:{root}") as tape:
        assert [r.event for r in tape.read("md.trade")] == events
        assert [r.event for r in tape.read("orders.intent")] == intents
        decoders = [seg.decoder for log in tape._logs.values() for seg in log.segments if seg.decoder]  # type: ignore[attr-defined]
        assert decoders and not any(d.slow for d in decoders)


def registry_without(tmp_path: Path, *names: str) -> SchemaRegistry:
    """The schema directory as it was before the given files were added."""
    before = tmp_path / "schemas-before"
    before.mkdir()
    for p in default_schema_dir().glob("*.avsc"):
        if p.name not in names:
            shutil.copy(p, before / p.name)
    return SchemaRegistry.load(before)


def old_shape(cls: type, values: tuple[object, ...]) -> object:
    """An instance of today's class holding only an older version's fields (what older code encoded)."""
    return tuple.__new__(cls, values)


def test_a_segment_holding_changed_types_resolves_only_those_records(tmp_path: Path) -> None:
    """A segment from before OrderAccepted v2 and RunStarted v2/v3: its trades decode on the fast path,
    its OrderAccepted v1 and RunStarted v1 records come out as today's events (new fields at their
    defaults), equal to what Avro schema resolution of the same bytes gives."""
    old_reg = registry_without(tmp_path, "OrderAccepted.v2.avsc", "RunStarted.v2.avsc", "RunStarted.v3.avsc")
    old_codec = Codec(old_reg)
    trades = [Trade("binance", "BTCUSDT", TS0 + i, TS0 + i, 100.0 + i, 1.0, "BUY", str(i)) for i in range(4)]
    accepted = [old_shape(OrderAccepted, ("bot", f"abc-{i}-0", f"v{i}", "binance", "BTCUSDT", TS0 + i, TS0 + i))
                for i in range(3)]
    started = old_shape(RunStarted, ("run-1", "mod:Bot", "bot", TS0, TS0, "{}", "file:x", ("md.trade",), 0, 0,
                                     "{}", "sim", "{}", "backtest"))
    mixed = [trades[0], accepted[0], trades[1], started, accepted[1], trades[2], accepted[2], trades[3]]
    root = tmp_path / "tape"
    with open_tape(f"file:{root}", codec=old_codec) as tape:
        tape.append("mixed", mixed, keys=["k"] * len(mixed))  # type: ignore[arg-type]
    expected = [default_codec().decode(old_codec.encode(e)) for e in mixed]  # type: ignore[arg-type]
    assert expected[1] == OrderAccepted("bot", "abc-0-0", "v0", "binance", "BTCUSDT", TS0, TS0, None, None, None, None)
    assert type(expected[3]) is RunStarted and expected[3].code_version == "" and expected[3].sweep_id == ""
    with open_tape(f"file:{root}") as tape:
        assert [r.event for r in tape.read("mixed")] == expected
        assert [r.event for r in tape.read("mixed", from_offset=3)] == expected[3:]
        segments = [seg for log in tape._logs.values() for seg in log.segments if seg.decoder]  # type: ignore[attr-defined]
        decoders = [seg.decoder for seg in segments]
        assert decoders and not any(d.slow for d in decoders)
        # record by record (how a block that fails as a whole is read up to its damage)
        data, pos, got = segments[0].read_block_data(0), 0, []
        for offset in range(len(mixed)):
            (_, event), pos = decoders[0].decode_one(data, pos, offset)
            got.append(event)
        assert got == expected
        assert {t.__name__ for d in decoders for t in d.resolvers} == {"OldOrderAccepted", "OldRunStarted"}


def test_a_change_other_than_appended_fields_is_resolved_by_avro(tmp_path: Path) -> None:
    """CustomData's ts_recv was an int in a (made-up) first version: not an appended field, so its
    records go through Avro's promotion int -> long, still beside fast trades in the same segment."""
    current = json.loads((default_schema_dir() / "CustomData.v1.avsc").read_text())
    old = copy.deepcopy(current)
    for field in old["fields"]:
        if field["name"] == "ts_recv":
            field["type"] = "int"
    then, now = tmp_path / "then", tmp_path / "now"
    for d in (then, now):
        d.mkdir()
        for p in default_schema_dir().glob("*.avsc"):
            if p.name != "CustomData.v1.avsc":
                shutil.copy(p, d / p.name)
        (d / "CustomData.v1.avsc").write_text(json.dumps(old))
    (now / "CustomData.v2.avsc").write_text(json.dumps(current))
    events = [Trade("binance", "BTCUSDT", TS0, TS0, 100.0, 1.0, "BUY", "1"),
              CustomData("tweet", "elon", TS0, 12345, '{"text": "hi"}'),
              Trade("binance", "BTCUSDT", TS0 + 1, TS0 + 1, 101.0, 1.0, "SELL", "2")]
    root = tmp_path / "tape"
    with open_tape(f"file:{root}", codec=Codec(SchemaRegistry.load(then))) as tape:
        tape.append("mixed", events, keys=["k"] * 3)
    with open_tape(f"file:{root}", codec=Codec(SchemaRegistry.load(now))) as tape:
        assert [r.event for r in tape.read("mixed")] == events
        [decoder] = [seg.decoder for log in tape._logs.values() for seg in log.segments if seg.decoder]  # type: ignore[attr-defined]
        assert not decoder.slow and [t.__name__ for t in decoder.resolvers] == ["OldCustomData"]


def test_appended_defaults_only_for_a_pure_append() -> None:
    base = {"type": "record", "name": "R", "namespace": "ticktape", "fields": [{"name": "a", "type": "long"}]}
    more = {**base, "fields": [*base["fields"], {"name": "b", "type": ["null", "string"], "default": None},
                               {"name": "c", "type": "string", "default": ""}]}
    assert appended_defaults(base, more) == (None, "")
    assert appended_defaults(base, base) is None
    no_default = {**base, "fields": [*base["fields"], {"name": "b", "type": "string"}]}
    assert appended_defaults(base, no_default) is None
    changed = {**more, "fields": [{"name": "a", "type": "double"}, *more["fields"][1:]]}
    assert appended_defaults(base, changed) is None
    raw = {**base, "fields": [*base["fields"], {"name": "b", "type": "bytes", "default": "\u00ff"}]}
    assert appended_defaults(base, raw) is None  # Avro writes a bytes default as text
