"""`ticktape import binance ...` and `ticktape record binance ...`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from producers.binance.credentials import load_binance_keys
from producers.common import (
    ImportIndex,
    ImportRun,
    ImportSummary,
    file_identity,
    query_identity,
    report_and_exit,
)
from ticktape.cli import TIME
from ticktape.errors import TicktapeError
from ticktape.timeutil import WallClock, format_time

KINDS = ("klines", "aggTrades", "trades")
"""The file layouts `import binance --kind` takes (`producers.binance.files.LAYOUTS`, which imports
pyarrow: it is loaded only when a command runs, so `ticktape --help` and other commands stay light)."""


def _tape(ctx: click.Context):  # type: ignore[no-untyped-def]
    return ctx.find_root().obj.tape()


def register(import_group: click.Group, record_group: click.Group) -> None:
    """Attach `import binance` and `record binance`."""
    import_group.add_command(import_binance)
    record_group.add_command(record_binance)


@click.command("binance")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(KINDS), required=True, help="What the files (or --rest) hold.")
@click.option("--symbol", default=None, help="Symbol, e.g. BTCUSDT (default: from each file's name).")
@click.option("--interval", default=None, help="Kline interval (default: from the file name, e.g. -1m-).")
@click.option("--rest", is_flag=True, help="Fetch history through the REST API instead of files.")
@click.option("--start", type=TIME, default=None, help="--rest: start time (ISO or ns).")
@click.option("--end", type=TIME, default=None, help="--rest: end time (ISO or ns; default now).")
@click.option("--strict", is_flag=True, help="Exit 1 if any row was bad (it is still dead-lettered).")
@click.option("--force", is_flag=True, help="Import even if this exact input was imported before.")
@click.option("--json", "as_json", is_flag=True, help="One JSON summary per input.")
@click.pass_context
def import_binance(ctx: click.Context, files: tuple[Path, ...], kind: str, symbol: str | None, interval: str | None,
                   rest: bool, start: int | None, end: int | None, strict: bool, force: bool, as_json: bool) -> None:
    """Import Binance public data files (data.binance.vision .csv/.zip) or REST history.

    Bad rows go to `dlq.binance` (raw line, error, line number) and the import goes on;
    importing the same file (same bytes) or the same REST range twice adds nothing. A
    `FILE.CHECKSUM` next to a file (as data.binance.vision publishes) is verified first.
    """
    from producers.binance.files import data_size, import_file, symbol_from_name, verify_checksum
    from producers.binance.parsers import VENUE
    from producers.binance.seen import SeenIds

    tape = _tape(ctx)
    index = ImportIndex(tape)
    seen = None if force else SeenIds(tape)  # rows other files put on the tape are left out
    summaries: list[ImportSummary] = []
    if rest:
        if files or not symbol or start is None:
            raise click.UsageError("--rest takes no FILES and needs --symbol and --start")
        summaries.append(_import_rest(tape, kind, symbol, interval, start, end, force))
    elif not files:
        raise click.UsageError("give FILES, or --rest")
    for path in files:
        identity = file_identity(path)
        run = ImportRun(tape, source=VENUE, kind=f"binance.{kind}", name=str(path), source_id=identity, force=force,
                        index=index)
        if not run.skipped:
            sym = symbol or symbol_from_name(path.name)
            if not sym:
                raise click.UsageError(f"{path}: cannot tell the symbol from the name; pass --symbol")
            try:
                verify_checksum(path, identity)
                with tqdm(total=data_size(path), unit="B", unit_scale=True, desc=path.name, leave=False,
                          disable=not sys.stderr.isatty()) as bar:
                    import_file(run, path, kind=kind, symbol=sym, interval=interval, progress=bar.update,
                                seen=seen)
            except (ValueError, OSError) as exc:
                run.appender.flush()
                raise click.ClickException(f"{path}: {exc}") from exc
            except TicktapeError:  # names the file already (a damaged zip)
                run.appender.flush()
                raise
        summaries.append(run.finish())
    report_and_exit(summaries, as_json=as_json, strict=strict)


def _import_rest(tape, kind: str, symbol: str, interval: str | None, start: int, end: int | None,  # type: ignore[no-untyped-def]
                 force: bool) -> ImportSummary:
    from binance import Client

    from producers.binance.parsers import VENUE
    from producers.binance.rest import import_agg_trades, import_klines

    start_ms = start // 1_000_000
    end_ms = (end if end is not None else WallClock().now()) // 1_000_000
    params = {"symbol": symbol, "interval": interval, "start_ms": start_ms, "end_ms": end_ms}
    name = f"rest {kind} {symbol} {format_time(start)}..{format_time(end) or 'now'}"
    run = ImportRun(tape, source=VENUE, kind=f"binance.rest.{kind}", name=name,
                    source_id=query_identity(f"binance.rest.{kind}", params), force=force)
    if run.skipped:
        return run.finish()
    keys = load_binance_keys(required=False)  # public data: keys only raise the rate limits
    client = Client(keys.api_key.get() if keys else None, keys.api_secret.get() if keys else None)
    with run:
        if kind == "klines":
            if not interval:
                raise click.UsageError("--rest --kind klines needs --interval")
            import_klines(run, client, symbol, interval, start_ms, end_ms)
        elif kind == "aggTrades":
            import_agg_trades(run, client, symbol, start_ms, end_ms)
        else:
            raise click.UsageError("--rest supports --kind klines or aggTrades")
    return run.finish()


@click.command("binance")
@click.option("--symbols", required=True, help="Comma-separated, e.g. BTCUSDT,ETHUSDT.")
@click.option("--streams", default="trade,bookTicker,depth,kline_1m", show_default=True,
              help="Comma-separated: trade, aggTrade, bookTicker, depth, kline_<interval>.")
@click.option("--futures", is_flag=True, help="USD-M futures streams instead of spot.")
@click.option("--user-data", is_flag=True, help="Also record the account's orders and balances (needs keys).")
@click.option("--account", default=None,
              help="Account name on Balance/PositionSnapshot events [default: futures with --futures, else spot].")
@click.option("--raw/--no-raw", default=False, show_default=True, help="Also keep every raw message on raw.binance.")
@click.option("--credentials", "credentials_file", default=None,
              help="TOML file with [binance] api_key/api_secret, outside any git repository (default: environment).")
@click.pass_context
def record_binance(ctx: click.Context, symbols: str, streams: str, futures: bool, user_data: bool,
                   account: str | None, raw: bool, credentials_file: str | None) -> None:
    """Record live Binance streams until Ctrl-C (keys from --credentials or BINANCE_API_KEY / BINANCE_API_SECRET).

    Every message becomes events (bad ones go to dlq.binance); depth books are synced from
    REST snapshots and every lost update range is recorded as a FeedGap.
    """
    from producers.binance.recorder import record_live, stream_names

    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    stream_list = [s.strip() for s in streams.split(",") if s.strip()]
    stream_names(syms, stream_list)  # an unknown stream name fails here, before any connection
    if not stream_list and not user_data:
        raise click.UsageError("nothing to record: give --streams, or --user-data for the account alone")
    keys = load_binance_keys(credentials_file, required=user_data)  # --user-data needs them
    s = record_live(_tape(ctx), syms, stream_list, keys=keys, futures=futures,
                    user_data=user_data, account=account, keep_raw=raw)
    click.echo(f"recorded {s.messages} messages: {sum(s.events.values())} events, {s.dead_letters} dead letters, "
               f"{s.gaps} gaps, {s.snapshots} snapshots", err=True)
