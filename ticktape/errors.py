"""The project's own exception hierarchy.

Library errors (fastavro, kafka-python, duckdb, ...) are translated into these at the
boundary, with a message that says *where* the bad input came from.
"""

from __future__ import annotations


class TicktapeError(Exception):
    """Base class of every error ticktape raises on purpose."""


class ConfigError(TicktapeError):
    """A setting (config file, environment variable or flag) is malformed or out of its range."""


class SchemaError(TicktapeError):
    """A schema file is invalid, or two versions are incompatible."""


class DecodeError(TicktapeError):
    """Bytes could not be decoded into an event (corrupt data, unknown fingerprint, ...)."""

    def __init__(self, message: str, *, where: str = "") -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class EncodeError(TicktapeError):
    """An event could not be encoded (a field has the wrong type, a value is out of range)."""


class ValidationError(TicktapeError):
    """User-supplied data (JSON, CSV, a DataFrame) does not fit the schema."""

    def __init__(self, message: str, *, where: str = "", field: str | None = None) -> None:
        self.where = where
        self.field = field
        parts = [p for p in (where, f"field {field!r}" if field else "") if p]
        super().__init__(f"{', '.join(parts)}: {message}" if parts else message)


class TapeError(TicktapeError):
    """A tape could not be opened, read or appended to."""


class WriterLockedError(TapeError):
    """Another writer holds the partition."""
