"""`ticktape mongo export-bars`: bars from the tape into MongoDB's `bars` collection.

The reverse of `ticktape import bars --from-mongo`; the documents and the unique key are
`ticktape.mongo.bars`'s, so exporting twice adds nothing and a bar stored with other values is
kept, counted and named, never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import click

from ticktape.bars import BarSelection
from ticktape.cli import TIME
from ticktape.events import Bar
from ticktape.mongo.bars import COLLECTION, DEFAULT_BATCH, BarConflictError, MongoBars
from ticktape.tape.base import Tape

__all__ = ["export_bars", "tape_bars"]


def tape_bars(tape: Tape, selection: BarSelection) -> Iterator[Bar]:
    """The selected bars on the tape's `md.<venue>.bar` topics (every venue's unless the selection
    names one), in tape order (one topic and partition after the other), read lazily."""
    for topic in selection.topics([t.name for t in tape.topics()]):
        for partition in range(tape.partitions(topic)):
            for record in tape.read(topic, partition):
                if isinstance(record.event, Bar) and selection.matches(record.event):
                    yield record.event


@click.command("export-bars")
@click.option("--mongo", "uri", required=True, metavar="mongodb://HOST:PORT/DB", help="The database to write to.")
@click.option("--venue", default=None, help="Only this venue's bars (topic md.<venue>.bar); default: every md.*.bar.")
@click.option("--instrument", default=None, help="Only this instrument, e.g. BTCUSDT.")
@click.option("--interval", default=None, help="Only this bar interval, e.g. 1m.")
@click.option("--start", type=TIME, default=None, help="Bars closing at or after this time (ISO 8601 or ns).")
@click.option("--end", type=TIME, default=None, help="Bars closing before this time (ISO 8601 or ns).")
@click.option("--batch", type=click.IntRange(min=1), default=DEFAULT_BATCH, show_default=True,
              help="Bars per bulk write.")
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
@click.pass_context
def export_bars(ctx: click.Context, uri: str, venue: str | None, instrument: str | None, interval: str | None,
                start: int | None, end: int | None, batch: int, as_json: bool) -> None:
    """Copy bars from the tape (--tape) into MongoDB's `bars` collection (one document per bar).

    Idempotent: a bar already stored with the same values is counted as existing. A bar stored
    with other values is kept as it is; the command then names it and exits non-zero.
    """
    tape = ctx.find_root().obj.tape(existing=True)
    selection = BarSelection(venue=venue, instrument=instrument, interval=interval, start=start, end=end)
    with MongoBars(uri) as store:
        counts = store.write_all(tape_bars(tape, selection), batch_size=batch)
    read = counts.inserted + counts.present + len(counts.conflicts)
    if as_json:
        click.echo(json.dumps({"read": read, "written": counts.inserted, "existing": counts.present,
                               "conflicts": len(counts.conflicts), "to": store.where, "collection": COLLECTION}))
    else:
        click.echo(f"{read} bars from the tape ({selection.describe()}) -> {store.where} {COLLECTION!r}: "
                   f"{counts.inserted} written, {counts.present} already there, "
                   f"{len(counts.conflicts)} conflicting (kept as stored)")
    if counts.conflicts:
        raise BarConflictError(counts.conflicts, store.where, written=counts.inserted)
