"""`ticktape import bars FILE.csv|FILE.parquet ...`: a file of OHLCV bars onto the tape;
`ticktape import bars --from-mongo mongodb://.../db`: MongoDB's bars collection onto the tape."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from producers.common import (
    DEFAULT_BATCH,
    ImportIndex,
    ImportRun,
    ImportSummary,
    file_identity,
    query_identity,
    report_and_exit,
)
from ticktape.bars import BarSelection, bar_topic
from ticktape.cli import TIME
from ticktape.errors import ValidationError
from ticktape.tape.base import Tape

if TYPE_CHECKING:
    import pandas as pd


def register(import_group: click.Group, record_group: click.Group) -> None:
    """Attach `import bars`."""
    import_group.add_command(import_bars)


def read_frame(path: Path) -> pd.DataFrame:  # pandas is imported when a command runs, not by `--help`
    """A CSV or Parquet file as a DataFrame (CSV time columns are parsed later, by name)."""
    suffix = path.suffix.lower()
    parquet = suffix in (".parquet", ".pq")
    if not parquet and suffix not in (".csv", ".gz", ".txt"):
        raise click.UsageError(f"{path}: expected .csv or .parquet")
    import pandas as pd
    import pyarrow as pa

    try:
        return pd.read_parquet(path) if parquet else pd.read_csv(path)
    except (ValueError, OSError, pa.ArrowException) as exc:  # pandas' ParserError and pyarrow's are ValueErrors
        kind = "Parquet" if parquet else "CSV"
        raise ValidationError(f"cannot be read as {kind}: {' '.join(str(exc).split())}", where=str(path)) from exc


@click.command("bars")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from-mongo", "mongo_uri", default=None, metavar="mongodb://HOST:PORT/DB",
              help="Import the bars collection of this MongoDB database instead of FILES.")
@click.option("--venue", default=None, help="Venue name; bars go to md.<venue>.bar. (With --from-mongo: a filter.)")
@click.option("--instrument", default=None,
              help="Instrument, e.g. BTCUSDT (base+quote, upper case). (With --from-mongo: a filter.)")
@click.option("--interval", default=None, help="Bar interval, e.g. 1m, 1h, 1d. (With --from-mongo: a filter.)")
@click.option("--start", type=TIME, default=None, help="With --from-mongo: bars closing at or after this time.")
@click.option("--end", type=TIME, default=None, help="With --from-mongo: bars closing before this time.")
@click.option("--label", type=click.Choice(["open", "close"]), default="open", show_default=True,
              help="Whether each row's time is the bar's open or its close.")
@click.option("--time-column", default=None, help="Time column (default: time, timestamp, date, ...).")
@click.option("--strict", is_flag=True, help="Exit 1 if any row was bad (it is still dead-lettered).")
@click.option("--force", is_flag=True, help="Import even if this exact input was imported before.")
@click.option("--json", "as_json", is_flag=True, help="One JSON summary per file.")
@click.pass_context
def import_bars(ctx: click.Context, files: tuple[Path, ...], mongo_uri: str | None, venue: str | None,
                instrument: str | None, interval: str | None, start: int | None, end: int | None, label: str,
                time_column: str | None, strict: bool, force: bool, as_json: bool) -> None:
    """Import CSV/Parquet files of OHLCV bars (columns open, high, low, close, volume + a time),
    or with --from-mongo the documents of a MongoDB database's `bars` collection.

    Bad rows (non-numbers, high below low, duplicate times) go to `dlq.bars` with their row
    number; a missing column stops the file. Bad documents go there too, named by `_id` and
    field. Importing the same file, or the same selection of documents, twice adds nothing.
    """
    if bool(files) == bool(mongo_uri):
        raise click.UsageError("give FILES or --from-mongo URI (one of the two)")
    tape = ctx.find_root().obj.tape()
    if mongo_uri:
        summary = import_from_mongo(tape, mongo_uri, venue=venue, instrument=instrument, interval=interval,
                                    start=start, end=end, force=force)
        report_and_exit([summary], as_json=as_json, strict=strict)
        return
    missing = [f"--{n}" for n, v in (("venue", venue), ("instrument", instrument), ("interval", interval)) if not v]
    if missing or start is not None or end is not None:
        raise click.UsageError(f"importing files needs {', '.join(missing)}" if missing
                               else "--start/--end select MongoDB bars (--from-mongo); a file is imported whole")
    assert venue and instrument and interval
    index = ImportIndex(tape)
    summaries: list[ImportSummary] = []
    for path in files:
        params = {"file": file_identity(path), "venue": venue, "instrument": instrument, "interval": interval,
                  "label": label}
        run = ImportRun(tape, source="bars", kind="bars", name=str(path), source_id=query_identity("bars", params),
                        force=force, index=index)
        if not run.skipped:
            from producers.frames import bars_from_frame

            df = read_frame(path)
            try:
                bars, problems = bars_from_frame(df, venue=venue, instrument=instrument, interval=interval,
                                                 label=label, time_column=time_column, per_row=True)
            except ValidationError as exc:
                raise click.ClickException(f"{path}: {exc}") from exc
            csv = path.suffix.lower() != ".parquet"
            for p in problems:
                where = f"line {p.row + 2}" if csv else f"row {p.row}"  # CSV: line 1 is the header
                run.dead_letter(where, p.error, df.iloc[p.row].to_json(date_format="iso", default_handler=str))
            run.emit_many(bar_topic(venue), bars, instrument)
        summaries.append(run.finish())
    report_and_exit(summaries, as_json=as_json, strict=strict)


def import_from_mongo(tape: Tape, uri: str, *, venue: str | None = None, instrument: str | None = None,
                      interval: str | None = None, start: int | None = None, end: int | None = None,
                      force: bool = False, batch: int = DEFAULT_BATCH) -> ImportSummary:
    """MongoDB's `bars` (optionally filtered; start <= ts_event < end) onto `md.<venue>.bar`.

    Documents are read through a cursor, `batch` at a time, in the unique index's order
    (venue, instrument, interval, ts_event): each series is time-ordered and memory stays flat.
    A bad document (`bar_from_document` says why, or a second one with the key of the one
    before, possible only when the collection lacks the unique index) is dead-lettered on
    `dlq.bars` naming its `_id` and field, as relaxed Extended JSON; the rest is imported.

    Idempotence: the input's identity is the content of the selection (`content_identity`, one
    extra pass over the raw BSON), so importing the same bars again adds nothing, while bars
    added or changed in MongoDB since make a new input. An import killed half-way resumes from
    its checkpoint (the read order is deterministic).
    """
    from bson import json_util

    from ticktape.mongo.bars import BadBarDocument, MongoBars, bar_from_document

    selection = BarSelection(venue=venue, instrument=instrument, interval=interval, start=start, end=end)
    with MongoBars(uri) as store:
        shown = selection.describe()
        name = f"{store.where} bars" + (f" ({shown})" if shown != "all bars" else "")
        run = ImportRun(tape, source="bars", kind="bars.mongo", name=name,
                        source_id=store.content_identity(selection), force=force)
        if not run.skipped:
            previous: tuple[str, str, str, int] | None = None
            for doc in store.documents(selection, batch_size=batch):
                where = f"_id {doc.get('_id')}"
                try:
                    bar = bar_from_document(doc)
                except BadBarDocument as exc:
                    run.dead_letter(where, str(exc), json_util.dumps(doc))
                    continue
                key = (bar.venue, bar.instrument, bar.interval, bar.ts_event)
                if key == previous:  # the read order puts equal keys next to each other
                    run.dead_letter(where, f"{where}, field 'ts_event': a second bar {' '.join(map(str, key))}",
                                    json_util.dumps(doc))
                    continue
                previous = key
                run.emit(bar_topic(bar.venue), bar)
        return run.finish()
