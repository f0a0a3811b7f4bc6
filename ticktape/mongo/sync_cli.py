"""`ticktape mongo sync` and `ticktape mongo watch`: the orders/positions/runs view of the tape."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import click

from ticktape.mongo.projection import COLLECTIONS

__all__ = ["sync_command", "watch_command"]


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so a command finishes the batch under way and exits cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@click.command("sync")
@click.option("--mongo", "mongo_uri", required=True, envvar="TICKTAPE_MONGO", metavar="mongodb://HOST:PORT/DB",
              help="Server and database (default database: ticktape). Also read from $TICKTAPE_MONGO.")
@click.option("--follow", is_flag=True, help="After catching up, keep projecting new records until Ctrl-C/SIGTERM.")
@click.option("--rebuild", is_flag=True,
              help="Drop orders, positions, runs and the checkpoint first, and replay the tape from its start.")
@click.option("--batch", default=5000, show_default=True, type=click.IntRange(min=1),
              help="At most this many records per tape partition per batch (one checkpoint per batch).")
@click.option("--poll", default=0.2, show_default=True, type=click.FloatRange(min=0.01),
              help="With --follow: seconds between looks at the tape once caught up.")
@click.pass_obj
def sync_command(obj: Any, mongo_uri: str, follow: bool, rebuild: bool, batch: int, poll: float) -> None:
    """Project the tape's orders, positions and runs into MongoDB (the tape is the global --tape).

    Collections: `orders` (one document per run and client order id: the intent, every state
    change, fills, venue order ids, status), `positions` (per run, robot and instrument, equal to
    the analyzer's `positions`), `runs`, and the checkpoint `sync_state`. Safe to kill at any
    moment: run it again and it continues where it stopped, with nothing lost or doubled. If the
    server goes away it waits for it. Records that cannot be decoded go to `dlq.mongo-sync`.
    """
    from ticktape.mongo.client import open_database, redact
    from ticktape.mongo.sync import MongoSync

    stop = _stop_on_signals()
    tape = obj.tape(existing=True)
    # A reply that never comes (a wedged server) becomes a network error, which the sync retries,
    # instead of a process that even SIGTERM cannot stop.
    sync = MongoSync(tape, open_database(mongo_uri, socketTimeoutMS=120_000), batch=batch, stop=stop)
    sync.prepare(rebuild=rebuild)
    click.echo(f"syncing {tape.uri} into {redact(mongo_uri)} from record #{sync.seq}"
               + ("; following (Ctrl-C to stop)" if follow else ""), err=True)
    stats = sync.run(follow=follow, poll=poll)
    rate = stats.records / stats.seconds if stats.seconds else 0.0
    click.echo(f"synced {stats.records} records ({stats.documents} document writes in {stats.batches} batches, "
               f"{rate:,.0f} records/s, {stats.dead_letters} dead letters); the view is at change #{sync.seq}")


@click.command("watch")
@click.argument("collection", type=click.Choice(COLLECTIONS))
@click.option("--mongo", "mongo_uri", required=True, envvar="TICKTAPE_MONGO", metavar="mongodb://HOST:PORT/DB",
              help="The database of the view (also $TICKTAPE_MONGO).")
@click.option("--after", default=0, show_default=True, type=click.IntRange(min=0),
              help="Print changes after this change number (a line's `_seq`; 0: every document).")
@click.option("--follow", is_flag=True, help="Keep printing changes as `mongo sync` makes them, until Ctrl-C.")
def watch_command(collection: str, mongo_uri: str, after: int, follow: bool) -> None:
    """Print the documents of COLLECTION that `mongo sync` changed, as JSON lines, oldest change first.

    Only whole batches are printed. To continue later, pass the last line's `_seq` as --after.
    """
    from ticktape.mongo.client import open_database
    from ticktape.mongo.sync import changes, watch

    db = open_database(mongo_uri)
    docs = (watch(db, collection, after, stop=_stop_on_signals()) if follow
            else iter(changes(db, collection, after)[0]))
    for doc in docs:
        click.echo(json.dumps(doc, default=str, sort_keys=True))
