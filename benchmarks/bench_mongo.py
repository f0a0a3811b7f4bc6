"""`ticktape mongo sync` into a real MongoDB-protocol server: records/s, and the lag a live order sees.

    python -m benchmarks.bench_mongo [--orders 20000] [--batch 5000]

Writes a file tape of `--orders` orders (an intent, an acceptance and two partial fills each, over
20 instruments and 4 runs: 4 records per order), then times:

- `sync.full`: one sync of the whole tape into an empty database (every document new);
- `sync.resume`: the same tape again after its checkpoint is deleted (the view is read back,
  every record is found absorbed and nothing is written: the worst case of recovering after a
  kill -9, which re-reads at most one batch);
- `sync.follow`: a sync with `--follow` semantics (`run(follow=True)` in a thread) while orders
  are appended one at a time: the time from an order's records reaching the tape to its FILLED
  document being readable by `_id` under a committed checkpoint;
- `changes.poll`: one `changes()` call (what `mongo watch` polls) on the full collection. On
  MongoDB that is a range on the `_seq` index; FerretDB 1.24's SQLite backend answers only
  `_id` equality from an index, so there it reads the whole collection.

The server is `TICKTAPE_MONGO` if set, else a FerretDB started by `scripts/mongo` (built once).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine, report
from ticktape.events import Event, OrderAccepted, OrderFilled, PlaceOrder
from ticktape.mongo.client import open_database
from ticktape.mongo.sync import CHECKPOINT, STATE, MongoSync, changes, committed_seq
from ticktape.tape import open_tape
from ticktape.tape.base import Tape

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000_000


def order_events(i: int, run: str) -> tuple[list[Event], list[Event]]:
    """(intents, answers) of order `i`: a limit buy, its acceptance and two fills of half the size."""
    coid, instrument, ts = f"c{i}", f"SYM{i % 20}USDT", T0 + i * 1_000_000
    intent = PlaceOrder(robot="bench", client_order_id=coid, venue="sim", instrument=instrument, ts_event=ts,
                        ts_recv=ts, side="BUY", order_type="LIMIT", price=100.0 + i % 7, size=2.0,
                        time_in_force="GTC", reason="bench")
    answers: list[Event] = [OrderAccepted(robot="bench", client_order_id=coid, venue_order_id=f"v{i}", venue="sim",
                                          instrument=instrument, ts_event=ts + 1, ts_recv=ts + 1)]
    for k, leaves in enumerate((1.0, 0.0)):
        answers.append(OrderFilled(robot="bench", client_order_id=coid, venue_order_id=f"v{i}", venue="sim",
                                   instrument=instrument, ts_event=ts + 2 + k, ts_recv=ts + 2 + k,
                                   fill_id=f"f{i}.{k}", side="BUY", price=100.0 + i % 7, size=1.0, fee=0.01,
                                   liquidity="MAKER", leaves_size=leaves))
    return [intent], answers


def append_orders(tape: Tape, first: int, count: int) -> None:
    intents: list[Event] = []
    answers: list[Event] = []
    intent_keys: list[str] = []
    answer_keys: list[str] = []
    for i in range(first, first + count):
        run = f"run{i % 4}"
        mine, theirs = order_events(i, run)
        intents += mine
        answers += theirs
        intent_keys += [run] * len(mine)
        answer_keys += [run] * len(theirs)
    tape.append("orders.intent", intents, keys=intent_keys)
    tape.append("orders.event", answers, keys=answer_keys)


def start_server(root: str) -> tuple[str, list[str]]:
    """(URI, the command that stops it) of the server to use."""
    if os.environ.get("TICKTAPE_MONGO"):
        return os.environ["TICKTAPE_MONGO"], []
    script = str(REPO / "scripts" / "mongo")
    uri = subprocess.run([sys.executable, script, "start", "--dir", root], check=True, text=True,
                         stdout=subprocess.PIPE).stdout.strip().splitlines()[-1]
    return uri, [sys.executable, script, "stop", "--dir", root]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--follow", type=int, default=200, help="orders appended one at a time for the lag figure")
    args = ap.parse_args()
    print(f"# {machine()}", flush=True)
    root = tempfile.mkdtemp(prefix="ticktape-bench-mongo-")
    uri, stop_server = start_server(os.path.join(root, "server"))
    try:
        tape = open_tape(f"file:{root}/tape")
        append_orders(tape, 0, args.orders)
        records = args.orders * 4
        db = open_database(f"{uri}/bench_{os.getpid()}")
        db.client.drop_database(db.name)

        sync = MongoSync(tape, db, batch=args.batch)
        sync.prepare()
        t, c = time.perf_counter(), time.process_time()
        stats = sync.run()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        assert stats.records == records and db.orders.count_documents({}) == args.orders
        report("mongo.sync.full", records=records, documents=stats.documents, batch=args.batch,
               records_per_s=round(records / wall), records_per_cpu_s=round(records / cpu))

        db[STATE].delete_one({"_id": CHECKPOINT})
        again = MongoSync(tape, db, batch=args.batch)
        again.prepare()
        t = time.perf_counter()
        stats = again.run()
        wall = time.perf_counter() - t
        report("mongo.sync.resume", records=records, records_per_s=round(records / wall))

        lags = follow_lags(tape, db, args.orders, args.follow)
        report("mongo.sync.follow", orders=len(lags), lag_ms_p50=round(statistics.median(lags) * 1e3, 1),
               lag_ms_p99=round(sorted(lags)[int(len(lags) * 0.99) - 1] * 1e3, 1))
        t = time.perf_counter()
        docs, _ = changes(db, "orders", committed_seq(db) - 4)
        report("mongo.changes.poll", collection_docs=db.orders.count_documents({}), returned=len(docs),
               ms=round((time.perf_counter() - t) * 1e3, 1))
        db.client.drop_database(db.name)
        tape.close()
    finally:
        if stop_server:
            subprocess.run(stop_server, check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


def follow_lags(tape: Tape, db: Any, first: int, count: int) -> list[float]:
    """Seconds from appending order `first + k` to its FILLED document under a committed checkpoint."""
    stop = threading.Event()
    sync = MongoSync(tape, db, batch=5000, stop=stop)
    sync.prepare()
    follower = threading.Thread(target=sync.run, kwargs={"follow": True, "poll": 0.005})
    follower.start()
    lags: list[float] = []
    try:
        for i in range(first, first + count):
            t = time.perf_counter()
            append_orders(tape, i, 1)
            want = f"run{i % 4}/c{i}"
            while True:
                seq = committed_seq(db)
                doc = db.orders.find_one({"_id": want})
                if doc is not None and doc["status"] == "FILLED" and doc["_seq"] <= seq:
                    break
                time.sleep(0.001)
            lags.append(time.perf_counter() - t)
    finally:
        stop.set()
        follower.join()
    return lags


if __name__ == "__main__":
    main()
