"""`scripts/mongo`: a real MongoDB-protocol server (FerretDB) that pymongo talks to, survives a
SIGKILL with its data, and comes back on the same port; the session fixture gives a working URI."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern

from tests.mongo_fixtures import SCRIPT, MongoServer


def _client(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)


def test_pymongo_round_trip_unique_index_and_upsert(mongo_server: MongoServer) -> None:
    client = _client(mongo_server.uri)
    try:
        col = client["roundtrip"].get_collection("orders", write_concern=WriteConcern(w=1, j=True))
        col.create_index([("client_order_id", 1)], unique=True)
        col.insert_one({"client_order_id": "a1", "qty": 2, "price": 30_000.5})
        assert col.find_one({"client_order_id": "a1"}, {"_id": 0}) == {"client_order_id": "a1", "qty": 2,
                                                                          "price": 30_000.5}
        with pytest.raises(DuplicateKeyError):
            col.insert_one({"client_order_id": "a1", "qty": 3})
        col.update_one({"client_order_id": "b2"}, {"$set": {"qty": 1}}, upsert=True)
        col.update_one({"client_order_id": "b2"}, {"$inc": {"qty": 4}}, upsert=True)
        assert col.find_one({"client_order_id": "b2"}, {"_id": 0}) == {"client_order_id": "b2", "qty": 5}
        assert col.count_documents({}) == 2
    finally:
        client.close()


def test_kill9_then_restart_same_keeps_data_and_port(mongo_server: MongoServer) -> None:
    uri = mongo_server.uri
    client = _client(uri)
    try:
        col = client["crash"].get_collection("c", write_concern=WriteConcern(w=1, j=True))
        col.insert_many([{"_id": i, "v": i * i} for i in range(100)])
    finally:
        client.close()
    mongo_server.kill()
    assert not mongo_server.running()
    port = int(uri.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    mongo_server.restart()  # asserts the same URI
    assert mongo_server.running()
    client = _client(uri)
    try:
        col = client["crash"]["c"]
        assert col.count_documents({}) == 100
        assert col.find_one({"_id": 7}) == {"_id": 7, "v": 49}
    finally:
        client.close()
    mongo_server.stop()
    assert not mongo_server.running()


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run([sys.executable, str(SCRIPT), "start", "--dir", str(tmp_path), "--port", str(port)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"port 127.0.0.1:{port} is busy" in done.stderr
    assert done.stdout == ""


def test_restart_same_without_a_start_says_so(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "restart-same", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "no server was started" in done.stderr


def test_session_fixture_gives_a_database_per_test(mongo_db_uri: str) -> None:
    assert mongo_db_uri.startswith("mongodb://") and "/t_" in mongo_db_uri
    from ticktape.mongo.client import open_database

    db = open_database(mongo_db_uri)
    try:
        db["x"].insert_one({"_id": 1})
        assert db["x"].find_one() == {"_id": 1}
        assert db.name == mongo_db_uri.rsplit("/", 1)[1]
    finally:
        db.client.close()


def test_lookups_by_id_use_the_id_index(mongo_server: MongoServer) -> None:
    """scripts/mongo's first patch: FerretDB 1.24 asked SQLite for `->'$._id'`, which its `_id`
    index (on `->"_id"`) does not serve, so every find/update/replace by `_id` scanned the table."""
    client = _client(mongo_server.uri)
    try:
        db = client["idindex"]
        db.orders.insert_many([{"_id": f"run/{i}", "n": i} for i in range(50)])
        plan = db.command("explain", {"find": "orders", "filter": {"_id": "run/7"}})["queryPlanner"]["Plan"]
        assert any("USING INDEX" in step for step in plan), plan
        db.orders.replace_one({"_id": "run/7"}, {"_id": "run/7", "n": -7})
        assert db.orders.find_one({"_id": "run/7"}) == {"_id": "run/7", "n": -7}
    finally:
        client.close()


def test_an_update_command_of_many_statements_is_answered(mongo_server: MongoServer) -> None:
    """scripts/mongo's second patch: FerretDB 1.24 held every statement's query open until the
    command ended, and a command of ~100 statements waited forever for a pooled connection. A
    socket timeout turns that hang into a failure here."""
    client = pymongo.MongoClient(mongo_server.uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=60_000)
    try:
        col = client["bigupdate"].orders
        col.insert_many([{"_id": i, "v": 0} for i in range(400)])
        result = col.bulk_write([pymongo.UpdateOne({"_id": i}, {"$set": {"v": i}}) for i in range(400)])
        assert result.matched_count == 400
        assert sum(d["v"] for d in col.find()) == sum(range(400))
    finally:
        client.close()
