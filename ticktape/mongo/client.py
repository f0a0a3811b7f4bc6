"""Open the MongoDB database a `mongodb://` URI names, with errors that say which server failed."""

from __future__ import annotations

from typing import Any

from ticktape.errors import ConfigError

__all__ = ["DEFAULT_DATABASE", "describe", "is_mongo_uri", "open_database", "open_target", "redact"]

DEFAULT_DATABASE = "ticktape"
"""The database used when the URI names none (`mongodb://host:port`)."""


def is_mongo_uri(uri: str | None) -> bool:
    """Whether `uri` names a MongoDB server (`mongodb://` or `mongodb+srv://`)."""
    return bool(uri) and str(uri).startswith(("mongodb://", "mongodb+srv://"))


def redact(uri: str) -> str:
    """The URI without its password, for messages and logs."""
    scheme, sep, rest = uri.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return uri
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def open_database(uri: str, *, timeout_ms: int = 10_000, **client_options: Any) -> Any:
    """The `pymongo.database.Database` named by the URI's path (default `ticktape`).

    The client connects lazily; `timeout_ms` bounds how long an operation waits for a server
    that is down (pymongo's server selection), so a caller retrying a restart sees an error
    within that time instead of hanging. A URI that sets `serverSelectionTimeoutMS` or
    `connectTimeoutMS` itself keeps its own value: the user's URI wins over a caller's default.
    """
    if not is_mongo_uri(uri):
        raise ConfigError(f"{uri!r} is not a MongoDB URI (mongodb://host:port/database)")
    import pymongo
    from pymongo.uri_parser import parse_uri

    try:
        parsed = parse_uri(uri)
    except Exception as exc:  # pymongo's InvalidURI / ConfigurationError
        raise ConfigError(f"{redact(uri)}: {exc}") from exc
    given = {name.lower() for name in parsed["options"]}
    timeouts: dict[str, Any] = {name: timeout_ms for name in ("serverSelectionTimeoutMS", "connectTimeoutMS")
                if name.lower() not in given}
    client: Any = pymongo.MongoClient(uri, tz_aware=False, **timeouts, **client_options)
    return client[parsed.get("database") or DEFAULT_DATABASE]


def describe(db: Any) -> str:
    """`mongodb://host:port/database` of a pymongo `Database`, for messages (it holds no password)."""
    hosts = ",".join(f"{h}:{p}" for h, p in db.client.topology_description.server_descriptions())
    return f"mongodb://{hosts}/{db.name}"


def open_target(target: str | Any, *, timeout_ms: int) -> tuple[Any, str, bool]:
    """(database, how messages name it, whether the caller owns its client) of a URI or a `Database`.

    A store opened from a URI opens (and later closes) its own client; a `Database` passed in
    stays its owner's.
    """
    if isinstance(target, str):
        return open_database(target, timeout_ms=timeout_ms), redact(target), True
    return target, describe(target), False
