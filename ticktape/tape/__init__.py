"""Tapes: durable, ordered logs of events. `open_tape(uri)` picks the backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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

__all__ = ["Encoded", "PartitionInfo", "Position", "Positions", "Record", "Tape", "TapeLike", "TopicInfo",
           "open_existing_tape", "open_tape", "partition_for", "using_tape"]


def open_tape(uri: str, **options: Any) -> Tape:
    """Open a tape by URI: `file:PATH` (embedded, the default), `kafka://HOST:PORT[,...]`.

    A bare path means `file:PATH`. Query options (`file:PATH?partitions=4&fsync=1`,
    `file:PATH?compression=zstd`, `kafka://HOST:PORT?compression=zstd`) are merged into
    `options`; `codec=` (a `Codec` over another schema registry) works on every backend.
    """
    return _open(uri, options, existing=False)


TapeLike = Tape | str | os.PathLike[str]
"""What the Python API takes wherever it reads or writes a tape: a `Tape`, or a URI or path to open."""


@contextmanager
def using_tape(tape: TapeLike, *, existing: bool = False) -> Iterator[Tape]:
    """The tape a Python API call works on: `tape` itself, or the tape its URI/path names.

    A tape this opens is closed when the block ends; a `Tape` passed in is left open (its owner
    closes it). `existing`: a file tape that is not there is a `TapeError` (for callers that only
    read). The one way every notebook-facing function takes `tape=`, so a URI string works anywhere.
    """
    if isinstance(tape, str | os.PathLike):
        uri = os.fspath(tape)
        opened = open_existing_tape(uri) if existing else open_tape(uri)
        try:
            yield opened
        finally:
            opened.close()
    else:
        yield tape


def open_existing_tape(uri: str, **options: Any) -> Tape:
    """`open_tape` for commands that only read: a file tape that is not there is a TapeError naming
    its path, not a new empty tape (a mistyped `--tape` would otherwise read as empty and exit 0)."""
    return _open(uri, options, existing=True)


def _open(uri: str, options: dict[str, Any], *, existing: bool) -> Tape:
    scheme, rest, query = _split(uri)
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
        partitions = whole_option("partitions", parts, minimum=1)
        segment_bytes = whole_option("segment_bytes", seg, minimum=1)
        if existing and rest and not os.path.exists(rest):  # FileTape names the other mistakes
            raise TapeError(f"no tape at {rest}: nothing is there (check --tape; commands that write create it)")
        return FileTape(rest, partitions=partitions, fsync=fsync, segment_bytes=segment_bytes, codec=codec,
                        compression=compression)
    if scheme in ("kafka", "kafka+rdkafka"):
        try:
            from ticktape.tape.kafka import KafkaTape  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise TapeError(f"the Kafka backend is not available: {exc}") from exc
        return KafkaTape(uri, **options)  # type: ignore[no-any-return,unused-ignore]
    raise TapeError(f"unknown tape URI {uri!r}: use file:PATH or kafka://HOST:PORT")


def _split(uri: str) -> tuple[str, str, str]:
    """(scheme, the rest, the query string) of a tape URI; a bare path is a file tape."""
    scheme, _, rest = uri.partition(":") if ":" in uri else ("file", "", uri)
    rest, _, query = rest.partition("?")
    return scheme, rest, query

