"""`ticktape import betfair` and `ticktape record betfair`: attached by `producers.cli`."""

from __future__ import annotations

import os
import sys

import click
from tqdm import tqdm

from producers.common import exit_code, summaries_text


def register(import_group: click.Group, record_group: click.Group) -> None:
    """Add the Betfair commands to the shared `import` and `record` groups."""
    import_group.add_command(import_betfair)
    record_group.add_command(record_betfair)


@click.command("betfair")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--strict", is_flag=True, help="Exit non-zero when any line went to the dead-letter topic.")
@click.option("--force", is_flag=True, help="Import even if this exact file was imported before.")
@click.option("--no-catalogue", is_flag=True, help="Ignore FILE.catalogue.json next to a stream file.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Events per tape append.")
@click.option("--merge/--no-merge", default=True, show_default=True,
              help="Several stream files: merge their lines by publish time (one recording of all markets), "
                   "or import them one after another.")
@click.option("--json", "as_json", is_flag=True, help="Summaries as JSON lines.")
@click.pass_obj
def import_betfair(obj: object, files: tuple[str, ...], strict: bool, force: bool, no_catalogue: bool,
                   batch_size: int, merge: bool, as_json: bool) -> None:
    """Import Betfair historical stream files (plain, .gz, .bz2, tar archives) and catalogue JSON.

    A directory means every file under it (Betfair's unpacked PRO/BASIC trees), in name order;
    FILE.catalogue.json files there name the runners of FILE rather than being imported alone.
    Several stream files are merged by publish time (`pt`), so the markets interleave on the tape
    as in one recording of all of them (--no-merge: one file after another); tar archives and
    files imported before are imported alone.

    Every market change becomes a MarketBook (full ladders) on md.betfair.market, definition
    changes a MarketDefinition there too; order changes go to orders.betfair, race data (RaceChange) to
    md.betfair.race, cricket data (CricketMatch) to md.betfair.cricket, bad lines to dlq.betfair.
    """
    from producers.betfair.historical import expand_inputs, import_file

    tape = obj.tape()  # type: ignore[attr-defined]
    summaries = []
    paths = expand_inputs(files)
    if merge and len(paths) > 1:
        from producers.betfair.merged import import_merged

        with tqdm(total=1, unit="B", unit_scale=True, desc="merging", leave=False,
                  disable=not sys.stderr.isatty()) as bar:
            def advanced(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            summaries = import_merged(tape, paths, force=force, batch_size=batch_size, use_catalogue=not no_catalogue,
                                      progress=advanced)
        click.echo(summaries_text(summaries, as_json))
        sys.exit(exit_code(summaries, strict))
    for path in paths:
        with tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc=os.path.basename(path), leave=False,
                  disable=not sys.stderr.isatty()) as bar:
            def advance(done: int, bar: tqdm = bar) -> None:
                bar.update(done - bar.n)

            summary = import_file(tape, path, force=force, batch_size=batch_size, use_catalogue=not no_catalogue,
                                  progress=advance)
        summaries.append(summary)
        click.echo(summaries_text([summary], as_json))
    if len(summaries) > 1 and not as_json:
        click.echo(summaries_text(summaries, False).rsplit("\n", 1)[-1])
    code = exit_code(summaries, strict)
    if code:
        sys.exit(code)


@click.command("betfair")
@click.option("--filter", "market_filter", default=None,
              help='Streaming market filter as JSON, e.g. {"eventTypeIds":["7"],"marketTypes":["WIN"]}.')
@click.option("--market-ids", default=None, help="Comma-separated market ids (alternative to --filter).")
@click.option("--orders/--no-orders", default=True, show_default=True, help="Also record the order stream.")
@click.option("--fields", default="EX_ALL_OFFERS,EX_TRADED,EX_TRADED_VOL,EX_LTP,EX_MARKET_DEF,SP_TRADED,SP_PROJECTED",
              show_default=True, help="Market data fields.")
@click.option("--conflate-ms", default=0, show_default=True, help="Betfair conflation (0 = every update).")
@click.option("--heartbeat-ms", default=5000, show_default=True, help="Heartbeat interval (500..5000).")
@click.option("--catalogue-interval", default=60.0, show_default=True,
              help="Seconds between catalogue polls (0 = off).")
@click.option("--raw/--no-raw", default=False, show_default=True, help="Also keep every raw payload on raw.betfair.")
@click.option("--stream-host", default=None,
              help="Stream API host by betfairlightweight's name: integration (default: production).")
@click.option("--locale", default=None,
              help="Betfair jurisdiction for login and API calls: spain, italy, romania, sweden, new_zealand "
                   "(default: betfair.com).")
@click.option("--credentials", "credentials_file", default=None,
              help="TOML file OUTSIDE the repository with username/password/app_key/certs "
                   "(default: BETFAIR_USERNAME, BETFAIR_PASSWORD, BETFAIR_APP_KEY, BETFAIR_CERTS).")
@click.option("--stream-endpoint", default=None, metavar="ADDRESS:PORT",
              help="Connect the stream socket here instead of the host's port 443 (a local exchange).")
@click.option("--identity-url", default=None, help="Login base URL instead of the locale's (a local exchange).")
@click.option("--api-url", default=None, help="Betting API base URL instead of the locale's (a local exchange).")
@click.pass_obj
def record_betfair(obj: object, market_filter: str | None, market_ids: str | None, orders: bool, fields: str,
                   conflate_ms: int, heartbeat_ms: int, catalogue_interval: float, raw: bool,
                   stream_host: str | None, locale: str | None, credentials_file: str | None,
                   stream_endpoint: str | None, identity_url: str | None, api_url: str | None) -> None:
    """Record Betfair's live market (and order) streams onto the tape; reconnects from the last clk.

    With --raw, a restart on the same tape resumes the streams from the clocks the raw payloads hold.
    """
    from producers.betfair.live import RecordOptions, load_credentials, market_filter_from, run_recorder

    options = RecordOptions(
        market_filter=market_filter_from(market_filter, market_ids), fields=tuple(fields.split(",")),
        orders=orders, conflate_ms=conflate_ms or None, heartbeat_ms=heartbeat_ms,
        catalogue_interval=catalogue_interval, keep_raw=raw, stream_host=stream_host, locale=locale,
        stream_endpoint=_endpoint(stream_endpoint), identity_url=identity_url, api_url=api_url)
    credentials = load_credentials(credentials_file)
    run_recorder(obj.tape(), credentials, options)  # type: ignore[attr-defined]


def _endpoint(text: str | None) -> tuple[str, int] | None:
    """`ADDRESS:PORT` as (address, port); a bad value is a usage error naming the option."""
    if text is None:
        return None
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit():
        raise click.BadParameter(f"expected ADDRESS:PORT, got {text!r}", param_hint="--stream-endpoint")
    return address, int(port)
