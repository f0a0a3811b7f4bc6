"""The codec: round trips for every type, single-object framing, evolution, bad bytes."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import shutil
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import strategy_for
from ticktape import avro_program as ap
from ticktape import codec as codec_mod
from ticktape.codec import Codec, default_codec, to_python
from ticktape.errors import DecodeError, EncodeError, ValidationError
from ticktape.events import EVENT_TYPES, RECORD_TYPES, CustomData, DeadLetter, OrderAccepted, Trade
from ticktape.schemas import SchemaRegistry, default_schema_dir, registry

REG = registry()
ALL_EVENTS = st.one_of(*[strategy_for(REG.current[n].schema) for n in REG.names()])


def trade(**kw: object) -> Trade:
    base = dict(venue="binance", instrument="BTCUSDT", ts_event=1_700_000_000_000_000_000,
                ts_recv=1_700_000_000_000_000_123, price=30123.45, size=0.015, aggressor_side="BUY",
                trade_id="42")
    base.update(kw)
    return Trade(**base)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(ALL_EVENTS)
def test_every_type_round_trips(event: object) -> None:
    c = default_codec()
    data = c.encode(event)  # type: ignore[arg-type]
    assert data[:2] == b"\xc3\x01"
    written = REG.by_fingerprint[data[2:10]]
    assert written.name == type(event).__name__
    # The current version, or an older one that writes the same body and holds every value.
    assert written is REG.current[written.name] or data[2:10] in REG.same_body
    assert c.decode(data) == event


@settings(max_examples=300, deadline=None)
@given(ALL_EVENTS)
def test_body_is_standard_avro(event: object) -> None:
    """fastavro, a second implementation, reads our bodies and writes the same bytes."""
    c = default_codec()
    schema = REG.current[type(event).__name__].schema
    parsed = fastavro.parse_schema(copy.deepcopy(schema))
    body = c.encode(event)[10:]  # type: ignore[arg-type]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, codec_mod.to_python(event))
    assert buf.getvalue() == body


@pytest.mark.skipif(codec_mod.VM is None, reason="C engine not built")
@settings(max_examples=300, deadline=None)
@given(ALL_EVENTS)
def test_c_and_python_engines_agree(event: object) -> None:
    prog = ap.compile_schema(REG.current[type(event).__name__].schema, RECORD_TYPES)
    out = bytearray()
    ap.make_encoder(prog)(event, out)
    assert codec_mod.VM.encode(prog, event) == bytes(out)
    assert ap.make_decoder(prog)(bytes(out), 0) == (event, len(out))


def test_unknown_fingerprint_is_named() -> None:
    data = b"\xc3\x01" + b"\x00" * 8 + b"\x02"
    where = "md.trade partition 0 offset 7"
    with pytest.raises(DecodeError, match=rf"{where}: unknown schema fingerprint 0000000000000000"):
        default_codec().decode(data, where="md.trade partition 0 offset 7")


def test_missing_marker() -> None:
    with pytest.raises(DecodeError, match="no C3 01 marker"):
        default_codec().decode(b"hello world", where="x")


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_body(cut: int) -> None:
    data = default_codec().encode(trade())
    with pytest.raises(DecodeError, match="corrupt Trade v2 body"):
        default_codec().decode(data[:-cut], where="somewhere")


def test_trailing_garbage() -> None:
    data = default_codec().encode(trade())
    with pytest.raises(DecodeError, match="trailing bytes"):
        default_codec().decode(data + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(junk: bytes) -> None:
    c = default_codec()
    for fp in (c.fingerprint("Trade"), c.fingerprint("MarketBook")):
        with contextlib.suppress(DecodeError):
            c.decode(b"\xc3\x01" + fp + junk)


def test_encode_error_names_field() -> None:
    with pytest.raises(EncodeError, match="field 'price'"):
        default_codec().encode(trade(price="cheap"))
    with pytest.raises(EncodeError, match=r"MAYBE"):
        default_codec().encode(trade(aggressor_side="MAYBE"))


def test_from_dict_accepts_numbers_for_every_numeric_field() -> None:
    event = default_codec().from_dict("Trade", {
        "venue": "v", "instrument": "i", "ts_event": 1.0, "ts_recv": 2, "price": 3, "size": "4.5",
        "aggressor_side": "NONE", "trade_id": "t"})
    assert event == Trade("v", "i", 1, 2, 3.0, 4.5, "NONE", "t")
    assert isinstance(event.price, float) and isinstance(event.ts_event, int)


def test_from_dict_names_line_and_field() -> None:
    with pytest.raises(ValidationError, match=r"line 9, field 'runners\[0\].selection_id': expected an integer"):
        default_codec().from_dict("MarketBook", {
            "market_id": "1.2", "ts_event": 1, "ts_recv": 1, "status": "OPEN", "in_play": False, "bet_delay": 0,
            "total_matched": 0, "version": 1, "complete": True, "cross_matching": False,
            "number_of_active_runners": 1,
            "runners": [{"selection_id": "x", "handicap": 0, "status": "ACTIVE", "last_price_traded": None,
                         "total_matched": 0, "available_to_back": [], "available_to_lay": [],
                         "traded_volume": []}]}, where="line 9")


@pytest.mark.parametrize(("type_name", "field", "value", "why"), [
    ("Trade", "ts_event", 1 << 63, r"9223372036854775808 is out of range for an Avro long"),
    ("Trade", "ts_event", int("1" * 401), r"an integer of 401 digits is out of range for an Avro long"),
    ("Trade", "price", int("1" * 401), r"an integer of 401 digits is too large for an Avro double"),
    ("MarketBook", "bet_delay", 1 << 31, r"2147483648 is out of range for an Avro int"),
    ("DeadLetter", "raw", "ok\u20ac", r"character '\u20ac' at 2 is not a byte"),
    ("Trade", "venue", "b\ud800", r"not valid Unicode text: surrogates not allowed at character 1"),
])
def test_from_dict_refuses_what_encoding_would_fail_on(type_name: str, field: str, value: object, why: str) -> None:
    """Caught while converting, naming the line and field (not as an OverflowError or UnicodeEncodeError later)."""
    letter = DeadLetter(source="s", position="p", error="e", ts_event=1, ts_recv=1, raw=b"")
    base = {"Trade": to_python(trade()), "DeadLetter": to_python(letter),
            "MarketBook": {"market_id": "1.2", "ts_event": 1, "ts_recv": 1, "status": "OPEN", "in_play": False,
                           "bet_delay": 0, "total_matched": 0, "version": 1, "complete": True,
                           "cross_matching": False, "number_of_active_runners": 0, "runners": []}}[type_name]
    with pytest.raises(ValidationError, match=f"line 2, field '{field}': {why}"):
        default_codec().from_dict(type_name, {**base, field: value}, where="line 2")


def test_stored_non_finite_numbers_still_decode() -> None:
    """The rule is for data coming in: events written before it (or by code) read back as they were."""
    codec = default_codec()
    event = trade(price=float("nan"), size=float("inf"))
    back = codec.decode(codec.encode(event))
    assert math.isnan(back.price) and back.size == float("inf")


def test_key_of_follows_schema() -> None:
    assert default_codec().key_of(trade()) == "BTCUSDT"


def _registry_with_old_custom_data(tmp_path: Path) -> SchemaRegistry:
    """The real schemas plus an older CustomData v0 without `content_type` (as v1 -> v2)."""
    for p in default_schema_dir().glob("*.avsc"):
        shutil.copy(p, tmp_path / p.name)
    current = json.loads((tmp_path / "CustomData.v1.avsc").read_text())
    old = copy.deepcopy(current)
    old["fields"] = [f for f in old["fields"] if f["name"] != "content_type"]
    (tmp_path / "CustomData.v1.avsc").write_text(json.dumps(old))
    (tmp_path / "CustomData.v2.avsc").write_text(json.dumps(current))
    return SchemaRegistry.load(tmp_path)


def test_old_version_decodes_through_current_schema(tmp_path: Path) -> None:
    reg = _registry_with_old_custom_data(tmp_path)
    c = Codec(reg)
    old = reg.history("CustomData")[0]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(copy.deepcopy(old.schema)), {
        "name": "tweet", "key": "elon", "ts_event": 5, "ts_recv": 6, "payload": "{}"})
    event = c.decode(b"\xc3\x01" + old.fingerprint + buf.getvalue(), where="test")
    assert event == CustomData("tweet", "elon", 5, 6, "{}", "application/json")
    assert reg.check_compatibility() == []


def test_incompatible_version_is_reported(tmp_path: Path) -> None:
    _registry_with_old_custom_data(tmp_path)
    bad = json.loads((tmp_path / "CustomData.v2.avsc").read_text())
    bad["fields"].append({"name": "mood", "type": "string"})  # no default: old data cannot be read
    (tmp_path / "CustomData.v3.avsc").write_text(json.dumps(bad))
    problems = SchemaRegistry.load(tmp_path).check_compatibility()
    assert len(problems) == 1 and "'mood' has no default" in problems[0]


def test_type_change_is_reported(tmp_path: Path) -> None:
    reg = _registry_with_old_custom_data(tmp_path)
    del reg
    bad = json.loads((tmp_path / "CustomData.v2.avsc").read_text())
    for f in bad["fields"]:
        if f["name"] == "ts_event":
            f["type"] = "string"
    (tmp_path / "CustomData.v3.avsc").write_text(json.dumps(bad))
    problems = SchemaRegistry.load(tmp_path).check_compatibility()
    assert problems and "CustomData.v3.avsc reading CustomData.v2.avsc" in problems[0]


def test_events_module_matches_schemas() -> None:
    from ticktape import gen_events

    assert Path(gen_events.__file__).with_name("events.py").read_text() == gen_events.render(), (
        "ticktape/events.py drifted from schemas/: run python -m ticktape.gen_events")


def test_every_schema_has_a_class_with_the_same_fields() -> None:
    for name in REG.names():
        cls = EVENT_TYPES[name]
        assert cls._fields == tuple(f["name"] for f in REG.current[name].schema["fields"])
        assert "ts_event" in cls._fields and "ts_recv" in cls._fields


def test_order_accepted_v1_events_read_as_v2_with_the_new_fields_unknown() -> None:
    # OrderAccepted v2 added side, price, size and persistence: events already on tapes (v1) still load.
    v1 = registry().history("OrderAccepted")[0]
    assert v1.version == 1
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(copy.deepcopy(v1.schema)), {
        "robot": "r", "client_order_id": "c", "venue_order_id": "9", "venue": "betfair", "instrument": "1.2:3",
        "ts_event": 5, "ts_recv": 6})
    event = default_codec().decode(b"\xc3\x01" + v1.fingerprint + buf.getvalue(), where="test")
    assert event == OrderAccepted("r", "c", "9", "betfair", "1.2:3", 5, 6)
    assert (event.side, event.price, event.size, event.persistence) == (None, None, None, None)
    new = OrderAccepted("r", "c", "9", "betfair", "1.2:3", 5, 6, side="SELL", price=1.5, size=2.0, persistence="LAPSE")
    assert default_codec().decode(default_codec().encode(new), where="test") == new
