"""`ticktape.mongo.client`: which timeout a client gets, and how a server is named in messages."""

from __future__ import annotations

from ticktape.mongo.client import open_database, open_target, redact


def test_the_uris_own_timeouts_win_over_the_callers_default() -> None:
    own = open_database("mongodb://127.0.0.1:1/db?serverSelectionTimeoutMS=1500", timeout_ms=200)
    default = open_database("mongodb://127.0.0.1:1/db", timeout_ms=200)
    try:
        assert own.client.options.server_selection_timeout == 1.5
        assert default.client.options.server_selection_timeout == 0.2
        assert default.client.options.pool_options.connect_timeout == 0.2
    finally:
        own.client.close()
        default.client.close()


def test_a_target_is_named_without_its_password_and_owned_only_when_opened_here() -> None:
    uri = "mongodb://trader:secret@127.0.0.1:1/desk"
    db, where, owned = open_target(uri, timeout_ms=100)
    try:
        assert (db.name, where, owned) == ("desk", redact(uri), True) and "secret" not in where
        same, where2, owned2 = open_target(db, timeout_ms=100)
        assert same is db and where2 == "mongodb://127.0.0.1:1/desk" and owned2 is False
    finally:
        db.client.close()
