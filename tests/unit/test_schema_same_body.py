"""Schema versions that only append enum symbols: old bytes stay old, old tapes stay on the fast path.

PlaceOrder v2 and ReplaceOrder v2 added LIMIT_MAKER and LIMIT_ON_CLOSE. An intent that uses neither
must encode exactly as v1 wrote it (header included), or every recorded `intents_sha256` and every
audit of an older run would change.
"""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path

import fastavro
import pytest

from ticktape.codec import Codec, default_codec
from ticktape.events import PlaceOrder, ReplaceOrder, Trade
from ticktape.schemas import SchemaRegistry, default_schema_dir, fingerprint_of, registry, same_body
from ticktape.tape import open_tape

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
