"""`ticktape.schemas.crc64_avro`: the same CRC-64-AVRO fingerprints as fastavro, which it replaces at start-up."""

from __future__ import annotations

from fastavro.schema import fingerprint
from hypothesis import given
from hypothesis import strategies as st

from ticktape.schemas import crc64_avro, fingerprint_of, registry


def _fastavro(text: str) -> int:
    """fastavro's fingerprint of `text` (of its UTF-8 bytes; it gives the number's little-endian hex)."""
    return int.from_bytes(bytes.fromhex(fingerprint(text, "CRC-64-AVRO")), "little")


def test_the_specifications_values() -> None:
    assert crc64_avro(b"") == 0xC15D213AA4D7A795
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F


@given(st.text(max_size=300))
def test_any_text_as_fastavro(text: str) -> None:
    assert crc64_avro(text.encode()) == _fastavro(text)


def test_every_schema_version_keeps_the_fingerprint_bytes_tapes_hold() -> None:
    """The bytes the registry computed through fastavro before (`int(hex, 16).to_bytes(8, "little")`)."""
    versions = registry().versions
    assert len(versions) > 40
    for v in versions:
        before = int(fingerprint(v.canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")
        assert v.fingerprint == fingerprint_of(v.schema)[1] == before
