"""Tapes: durable, ordered logs of events. `open_tape(uri)` picks the backend."""

from __future__ import annotations

from typing import Any

from ticktape.errors import TapeError
from ticktape.tape.base import (
    Encoded,
    PartitionInfo,
    Position,
    Positions,
    Record,
    Tape,
    TopicInfo,
    partition_for,
    whole_option,
)

__all__ = ["Encoded", "PartitionInfo", "Position", "Positions", "Record", "Tape", "TopicInfo", "open_tape",
           "partition_for"]


def open_tape(uri: str, **options: Any) -> Tape:
    """Open a tape by URI: `file:PATH` (embedded, the default), `kafka://HOST:PORT[,...]`.

    A bare path means `file:PATH`. Query options (`file:PATH?partitions=4&fsync=1`,
    `file:PATH?compression=zstd`, `kafka://HOST:PORT?compression=zstd`) are merged into
    `options`; `codec=` (a `Codec` over another schema registry) works on every backend.
    """
    scheme, _, rest = uri.partition(":") if ":" in uri else ("file", "", uri)
    rest, _, query = rest.partition("?")
    for part in filter(None, query.split("&")):
        k, _, v = part.partition("=")
        options.setdefault(k, v)
    if scheme == "file":
        from ticktape.tape.file import DEFAULT_SEGMENT_BYTES, FileTape

        parts = options.pop("partitions", 1)
        fsync = str(options.pop("fsync", "0")).lower() in ("1", "true", "yes")
        seg = options.pop("segment_bytes", DEFAULT_SEGMENT_BYTES)
        codec = options.pop("codec", None)
        compression = options.pop("compression", None)
        if options:
            raise TapeError(f"unknown file tape options: {', '.join(options)}")
        return FileTape(rest, partitions=whole_option("partitions", parts, minimum=1), fsync=fsync,
                        segment_bytes=whole_option("segment_bytes", seg, minimum=1), codec=codec,
                        compression=compression)
    if scheme in ("kafka", "kafka+rdkafka"):
        try:
            from ticktape.tape.kafka import KafkaTape  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise TapeError(f"the Kafka backend is not available: {exc}") from exc
        return KafkaTape(uri, **options)  # type: ignore[no-any-return,unused-ignore]
    raise TapeError(f"unknown tape URI {uri!r}: use file:PATH or kafka://HOST:PORT")
