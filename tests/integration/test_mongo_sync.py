"""`ticktape mongo sync` against a real MongoDB-protocol server: equal to DuckDB, kill -9 safe, outage safe.

Uses `mongo_db_uri` (a database per test on the session's server); the server-restart test
starts a server of its own (`start_mongo`) to SIGKILL and restart.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from robots.backtest import backtest
from tests.mongo_fixtures import start_mongo
from ticktape.demo import synthetic_trades
from ticktape.events import OrderFilled, OrderRejected
from ticktape.mongo.client import open_database
from ticktape.mongo.projection import COLLECTIONS
from ticktape.mongo.sync import STATE, MongoSync, changes, committed_seq
from ticktape.tape import open_tape

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000_000_000


_opened: list[Any] = []


def db_of(uri: str, **options: Any) -> Any:
    """`open_database`, its client closed when the test ends (idle clients keep monitor threads)."""
    db = open_database(uri, **options)
    _opened.append(db.client)
    return db


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def make_order_tape(path: Path) -> str:
    """A file tape with two backtest runs (a few thousand order records) and some odd answers."""
    uri = f"file:{path}"
    tape = open_tape(uri)
    tape.append("md.sim.trade", synthetic_trades(20_000))
    tape.close()
    for params in ({"fast": "5", "slow": "20"}, {"fast": "3", "slow": "9", "size": "0.5"}):
        backtest("ema_cross", tape=uri, topics=["md.sim.trade"], params=params, keep=False, out_tape=uri)
    tape = open_tape(uri)
    # answers a live run can legitimately put on the tape: a fill and a rejection of orders whose
    # intents are not (yet) there, under a run that has no RunStarted
    tape.append("orders.event", [
        OrderFilled(robot="live", client_order_id="lost-1", venue_order_id="v9", venue="sim", instrument="BTCUSDT",
                    ts_event=T0, ts_recv=T0, fill_id="x1", side="SELL", price=30_000.5, size=0.25, fee=0.1,
                    liquidity="TAKER", leaves_size=0.0),
        OrderRejected(robot="live", client_order_id="lost-2", venue_order_id=None, venue="sim",
                      instrument="BTCUSDT", ts_event=T0, ts_recv=T0, reason="unknown order")], keys=["live-run"] * 2)
    tape.close()
    return uri


@pytest.fixture(scope="module")
def order_tape(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_order_tape(tmp_path_factory.mktemp("orders") / "tape")


def snapshot(uri: str) -> dict[str, list[dict[str, Any]]]:
    """Every document of every collection of the view (checkpoint included), sorted."""
    db = db_of(uri)
    out = {name: sorted(db[name].find(), key=lambda d: str(d["_id"])) for name in (*COLLECTIONS, STATE)}
    db.client.close()
    return out


def records_on(uri: str) -> int:
    tape = open_tape(uri)
    try:
        return sum(sum(tape.end_offsets(t).values()) for t in ("runs", "orders.intent", "orders.event"))
    finally:
        tape.close()


def sync(tape_uri: str, mongo: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "ticktape", "--tape", tape_uri, "mongo", "sync", "--mongo", mongo,
                             *args], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def sync_done(tape_uri: str, mongo: str, *args: str) -> str:
    proc = sync(tape_uri, mongo, *args)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out


@pytest.fixture
def other_db(mongo_uri: str) -> Iterator[str]:
    """A second fresh database of this test (the reference run), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{mongo_uri}/{name}"
    db_of(f"{mongo_uri}/{name}").client.drop_database(name)


def test_positions_equal_the_analyzers(order_tape: str, mongo_db_uri: str) -> None:
    import duckdb

    from analyzer.load import load
    from analyzer.metrics import install_metrics

    out = sync_done(order_tape, mongo_db_uri)
    total = records_on(order_tape)
    assert f"synced {total} records" in out
    con = duckdb.connect()
    tape = open_tape(order_tape)
    load(tape, con)
    tape.close()
    install_metrics(con)
    rows = con.execute("""SELECT run, robot, instrument, position, cash, fees, buy_volume, sell_volume FROM positions
        QUALIFY ROW_NUMBER() OVER (PARTITION BY run, robot, instrument ORDER BY ts_event DESC, _offset DESC) = 1
        ORDER BY ALL""").fetchall()
    expected = [(r[0], r[1], r[2], *(float(x) for x in r[3:])) for r in rows]
    db = db_of(mongo_db_uri)
    got = sorted((d["run"], d["robot"], d["instrument"], d["position"], d["cash"], d["fees"], d["buy_volume"],
                  d["sell_volume"]) for d in db.positions.find())
    assert len(expected) == 3 and got == expected
    fills = dict(con.execute("SELECT run, COUNT(*) FROM fills GROUP BY run").fetchall())
    assert {d["run"]: d["fills"] for d in db.positions.find()} == fills
    runs = {d["_id"]: d for d in db.runs.find()}
    assert {r["status"] for r in runs.values()} == {"finished", "unknown"}
    assert all(r["intents"] == r.get("intents_emitted", 0) for r in runs.values())
    lost = db.orders.find_one({"client_order_id": "lost-1"})
    assert lost is not None and (lost["status"], lost["run"], lost["intent"]) == ("FILLED", "live-run", None)
    assert db.orders.find_one({"client_order_id": "lost-2"})["status"] == "REJECTED"
    statuses = {d["_id"] for d in db.orders.aggregate([{"$group": {"_id": "$status"}}])}
    assert {"FILLED", "EXPIRED", "REJECTED"} <= statuses


def test_changes_are_whole_batches(order_tape: str, mongo_db_uri: str) -> None:
    tape = open_tape(order_tape)
    db = db_of(mongo_db_uri)
    s = MongoSync(tape, db, batch=700)
    s.prepare()
    assert changes(db, "orders", 0) == ([], 0)
    seen: dict[str, int] = {}
    after = 0
    while s.step():
        docs, upto = changes(db, "orders", after)
        assert upto == committed_seq(db) == s.seq > after
        assert docs and all(after < d["_seq"] <= upto and "_applied" not in d for d in docs)
        seen.update({d["_id"]: d["_seq"] for d in docs})
        after = upto
    assert changes(db, "orders", after) == ([], after)
    assert seen == {d["_id"]: d["_seq"] for d in db.orders.find({}, {"_seq": 1})}
    tape.close()


def test_watch_prints_each_changed_document_once_per_batch(order_tape: str, mongo_db_uri: str) -> None:
    """`mongo watch` (the CLI, and the follower under it) sees the sync's documents without `_applied`."""
    import threading

    from ticktape.mongo.sync import watch

    db = db_of(mongo_db_uri)
    stop = threading.Event()
    seen: list[dict[str, Any]] = []
    follower = threading.Thread(target=lambda: seen.extend(watch(db, "runs", stop=stop, poll=0.05)))
    follower.start()
    sync_done(order_tape, mongo_db_uri, "--batch", "500")
    deadline = time.monotonic() + 30
    while len({d["_id"] for d in seen}) < db.runs.count_documents({}) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    follower.join(timeout=30)
    assert {d["_id"] for d in seen} == {d["_id"] for d in db.runs.find()}
    assert all("_applied" not in d and "_exact" not in d for d in seen)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "ticktape", "mongo", "watch", "orders", "--mongo", mongo_db_uri]
    out = subprocess.run(cli, env=env, text=True, capture_output=True, check=True).stdout
    printed = [json.loads(line) for line in out.splitlines()]
    assert sorted(d["_id"] for d in printed) == sorted(d["_id"] for d in db.orders.find({}, {"_id": 1}))
    last = max(d["_seq"] for d in printed)
    assert last == committed_seq(db)
    later = subprocess.run([*cli, "--after", str(last)], env=env, text=True, capture_output=True, check=True)
    assert later.stdout == ""


def test_rebuild_replaces_a_damaged_view_and_another_tape_is_refused(order_tape: str, mongo_db_uri: str,
                                                                     other_db: str, tmp_path: Path) -> None:
    sync_done(order_tape, other_db)
    reference = snapshot(other_db)
    sync_done(order_tape, mongo_db_uri)
    db = db_of(mongo_db_uri)
    victim = db.orders.find_one({"status": "FILLED"})
    assert victim is not None
    db.orders.delete_one({"_id": victim["_id"]})
    db.positions.update_many({}, {"$set": {"cash": 0.0}})
    assert "synced 0 records" in sync_done(order_tape, mongo_db_uri)  # caught up: damage is not noticed
    sync_done(order_tape, mongo_db_uri, "--rebuild")
    assert snapshot(mongo_db_uri) == reference
    other = f"file:{tmp_path / 'other'}"
    open_tape(other).close()
    proc = sync(other, mongo_db_uri)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "holds the view of" in err and "--rebuild" in err
    assert snapshot(mongo_db_uri) == reference  # refused before writing anything


def readme_block(after: str) -> str:
    """The first ```python block of README.md after the line that starts with `after`."""
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n", text.index("\n" + after)) + len("```python\n")
    return text[start:text.index("```", start)]


def test_the_readme_analyst_gets_the_same_numbers_from_mongodb_and_duckdb(order_tape: str, mongo_db_uri: str,
                                                                          tmp_path: Path) -> None:
    """README's MongoDB-vs-DuckDB example, run as written on a synced tape and its DuckDB load."""
    import re

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sync_done(order_tape, mongo_db_uri)
    duck = tmp_path / "runs.duckdb"
    subprocess.run([sys.executable, "-m", "ticktape", "load", "--tape", order_tape, "--db", str(duck)], env=env,
                   check=True, capture_output=True)
    db = db_of(mongo_db_uri)
    runs = [d["_id"] for d in db.runs.find({"status": "finished"})]
    assert runs
    code = readme_block("An analyst asks MongoDB")
    server, name = mongo_db_uri.rsplit("/", 1)
    for run in runs:
        here = re.sub(r'^run = ".*"$', f"run = {run!r}", code, flags=re.M)
        here = re.sub(r'^mongo = MongoClient\(".*"\)\.ticktape$', f"mongo = MongoClient({server!r})[{name!r}]", here,
                      flags=re.M)
        here = here.replace('duckdb.connect("runs.duckdb"', f"duckdb.connect({str(duck)!r}")
        assert here.count(run) == 1 and str(duck) in here and name in here, "the README block changed shape"
        namespace: dict[str, Any] = {}
        try:
            exec(compile(here, "README.md", "exec"), namespace)  # its own assert compares the two
        finally:
            namespace["mongo"].client.close()
            namespace["duck"].close()
        assert namespace["in_mongo"] and sum(namespace["by_status"].values()) == db.orders.count_documents({"run": run})


@pytest.mark.slow
def test_sigkill_at_random_moments_changes_nothing(order_tape: str, mongo_db_uri: str, other_db: str) -> None:
    """kill -9 a sync at least 10 times at random moments, then let it finish: the view equals an uninterrupted one."""
    sync_done(order_tape, other_db, "--batch", "150")
    reference = snapshot(other_db)
    total = records_on(order_tape)
    rng = random.Random(int(os.environ.get("SEED", "4")))
    db = db_of(mongo_db_uri)
    kills, mid_sync = 0, 0
    while kills < 10:
        before = committed_seq(db)
        proc = sync(order_tape, mongo_db_uri, "--batch", "150")
        while committed_seq(db) == before and proc.poll() is None:
            time.sleep(0.01)  # until its first batch lands (the CLI takes about a second to start)
        time.sleep(rng.uniform(0.0, 0.4))  # then anywhere in a later batch's reads or writes
        if proc.poll() is not None:
            break  # finished before the kill: nothing more to interrupt
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        mid_sync += before < committed_seq(db) < total  # killed after some progress, before the end
    db.client.close()
    assert kills >= 10, "the sync finished before it was killed 10 times: make the tape bigger"
    assert mid_sync >= 5, f"only {mid_sync} of {kills} kills landed while batches were being written"
    sync_done(order_tape, mongo_db_uri, "--batch", "150")
    assert snapshot(mongo_db_uri) == reference


# ------------------------------------------------------------------------------ the server goes away

@pytest.mark.slow
def test_server_killed_and_restarted_during_follow(order_tape: str, tmp_path: Path) -> None:
    server = start_mongo(tmp_path / "ferret")
    try:
        sync_done(order_tape, f"{server.uri}/reference", "--batch", "100")
        reference = snapshot(f"{server.uri}/reference")
        total = records_on(order_tape)
        target = f"{server.uri}/followed"
        proc = sync(order_tape, target, "--follow", "--batch", "100", "--poll", "0.05")
        db = db_of(target, timeout_ms=2000)

        def seq() -> int:
            try:
                return committed_seq(db)
            except Exception:
                return -1

        deadline = time.monotonic() + 60
        while seq() < total // 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0 < seq() < total, "kill the server in the middle of the sync"
        server.kill()
        time.sleep(2.0)
        server.restart()  # same port, same files
        deadline = time.monotonic() + 300
        while seq() < total and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert err.count("unreachable") == 1 and "is back" in err  # one warning per outage
        assert snapshot(target) == reference
    finally:
        server.stop()


# ------------------------------------------------------------------------------ Kafka

def _normal(doc: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """`doc` with the Kafka test's topic names written as the file tape's, without the change sequence."""
    text = json.dumps({k: v for k, v in doc.items() if k != "_seq"}, sort_keys=True, default=str)
    for mine, standard in names.items():
        text = text.replace(mine, standard)
    return dict(json.loads(text))


@pytest.mark.kafka
def test_kafka_tape_with_an_undecodable_record(order_tape: str, kafka_tape_uri: Callable[[str], str],
                                               mongo_db_uri: str, other_db: str) -> None:
    """The same records on Kafka give the file tape's view; a record of garbage becomes a dead letter."""
    from kafka import KafkaProducer

    prefix = f"t{uuid.uuid4().hex[:8]}"
    topics = {t: f"{prefix}.{t}" for t in ("runs", "orders.intent", "orders.event")}
    names = {k.replace(".", ":"): v.replace(".", ":") for v, k in topics.items()}
    src = open_tape(order_tape)
    kafka = open_tape(kafka_tape_uri("kafka"))
    try:
        for standard, mine in topics.items():
            recs = list(src.read(standard))
            kafka.create_topic(mine)
            kafka.append(mine, [r.event for r in recs[:50]], keys=[r.key for r in recs[:50]])
            if standard == "orders.event":  # a record no codec can decode, between two good ones
                producer = KafkaProducer(bootstrap_servers=kafka_tape_uri("kafka").split("://", 1)[1])
                producer.send(mine, value=b"\xc3\x01 not an event", key=b"live-run").get(timeout=30)
                producer.close()
            kafka.append(mine, [r.event for r in recs[50:]], keys=[r.key for r in recs[50:]])
        db = db_of(mongo_db_uri)
        s = MongoSync(kafka, db, batch=400, topics=tuple(topics.values()))
        s.prepare()
        stats = s.run()
        assert stats.dead_letters == 1
        dead = [r.event for r in kafka.read("dlq.mongo-sync")]
        assert any(d.position == f"{topics['orders.event']}/0@50" for d in dead)  # type: ignore[union-attr]
        fdb = db_of(other_db)
        f = MongoSync(src, fdb, batch=400)
        f.prepare()
        f.run()
        for name in COLLECTIONS:
            on_kafka = sorted((_normal(d, names) for d in db[name].find()), key=lambda d: d["_id"])
            on_file = sorted((_normal(d, {}) for d in fdb[name].find()), key=lambda d: d["_id"])
            # offsets after the garbage record are one higher on Kafka: compare without positions
            for d in on_kafka + on_file:
                d.pop("_applied")
                if name == "orders":
                    for step in d["history"] + d["fills"]:
                        step.pop("offset")
            assert on_kafka == on_file, name
    finally:
        src.close()
        kafka.close()
