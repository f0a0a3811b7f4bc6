"""`ticktape import bars FILE.csv|FILE.parquet ...`: a file of OHLCV bars onto the tape."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd
import pyarrow as pa

from producers.common import ImportIndex, ImportRun, ImportSummary, file_identity, query_identity, report_and_exit
from producers.frames import bar_topic, bars_from_frame
from ticktape.errors import ValidationError


def register(import_group: click.Group, record_group: click.Group) -> None:
    """Attach `import bars`."""
    import_group.add_command(import_bars)


def read_frame(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame (CSV time columns are parsed later, by name)."""
    suffix = path.suffix.lower()
    parquet = suffix in (".parquet", ".pq")
    if not parquet and suffix not in (".csv", ".gz", ".txt"):
        raise click.UsageError(f"{path}: expected .csv or .parquet")
    try:
        return pd.read_parquet(path) if parquet else pd.read_csv(path)
    except (ValueError, OSError, pa.ArrowException) as exc:  # pandas' ParserError and pyarrow's are ValueErrors
        kind = "Parquet" if parquet else "CSV"
        raise ValidationError(f"cannot be read as {kind}: {' '.join(str(exc).split())}", where=str(path)) from exc


@click.command("bars")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--venue", required=True, help="Venue name; bars go to md.<venue>.bar.")
@click.option("--instrument", required=True, help="Instrument, e.g. BTCUSDT (base+quote, upper case).")
@click.option("--interval", required=True, help="Bar interval, e.g. 1m, 1h, 1d.")
@click.option("--label", type=click.Choice(["open", "close"]), default="open", show_default=True,
              help="Whether each row's time is the bar's open or its close.")
@click.option("--time-column", default=None, help="Time column (default: time, timestamp, date, ...).")
@click.option("--strict", is_flag=True, help="Exit 1 if any row was bad (it is still dead-lettered).")
@click.option("--force", is_flag=True, help="Import even if this exact input was imported before.")
@click.option("--json", "as_json", is_flag=True, help="One JSON summary per file.")
@click.pass_context
def import_bars(ctx: click.Context, files: tuple[Path, ...], venue: str, instrument: str, interval: str, label: str,
                time_column: str | None, strict: bool, force: bool, as_json: bool) -> None:
    """Import CSV/Parquet files of OHLCV bars (columns open, high, low, close, volume + a time).

    Bad rows (non-numbers, high below low, duplicate times) go to `dlq.bars` with their row
    number; a missing column stops the file. Importing the same file twice adds nothing.
    """
    tape = ctx.find_root().obj.tape()
    index = ImportIndex(tape)
    summaries: list[ImportSummary] = []
    for path in files:
        params = {"file": file_identity(path), "venue": venue, "instrument": instrument, "interval": interval,
                  "label": label}
        run = ImportRun(tape, source="bars", kind="bars", name=str(path), source_id=query_identity("bars", params),
                        force=force, index=index)
        if not run.skipped:
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
