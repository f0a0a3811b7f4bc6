"""`ticktape import betfair FILE...`: Betfair historical stream files onto the tape.

Inputs: stream files as Betfair sells them and as recorders write them (one JSON message per
line), plain, `.gz` or `.bz2`, and tar archives of those (Betfair's downloads are tars of
`.bz2` market files); `*.catalogue.json` files (listMarketCatalogue answers) too.

Each stream file (or archive member) gets a fresh `StreamDecoder`, like betfairlightweight's
historical stream does (`create_historical_generator_stream(..., max_latency=None)`), so memory
stays flat however many files an import holds. Times: ts_event = the message's `pt`; for
historical files ts_recv = the same `pt` (the capture time of the recording is unknown).

Bad lines (not JSON, no `pt`, a change missing its ids) go to `dlq.betfair` with the file, the
member and the line number; the import continues. A line that fails half-way may have updated
the cache before failing (its events are not emitted); the next full image repairs that.
Importing the same file (same bytes) twice adds nothing: see `producers.common.ImportRun`.
"""

from __future__ import annotations

import bz2
import gzip
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from producers.betfair.definition import from_catalogue, runner_names
from producers.betfair.parse import MARKET_TOPIC, StreamDecoder
from producers.common import ImportRun, ImportSummary, file_identity, gc_paused, path_name
from ticktape.errors import EncodeError, TicktapeError, ValidationError
from ticktape.tape.base import Tape
from ticktape.timeutil import Clock

SOURCE = "betfair"
KIND = "betfair.stream"
MAX_JSON_DOCUMENT = 64 << 20
"""A `.json` input up to this size is first tried as one catalogue document (else read as stream lines)."""
PROGRESS_EVERY = 4096
BATCH = 1000
"""Events per append: MarketBooks with full ladders are ~8 KB each (held encoded), so ~8 MB a batch."""
CATALOGUE_SUFFIX = ".catalogue.json"

# What a malformed payload can raise inside the decoder: all become dead letters (EncodeError: a book
# with a value its schema cannot hold, e.g. a string ltp, with either twin of the runner ladders).
BAD_INPUT = (ValidationError, EncodeError, KeyError, TypeError, ValueError, IndexError, AttributeError)


def _decompressed(name: str, raw: IO[bytes]) -> IO[bytes]:
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw)
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def open_members(raw: IO[bytes], name: str) -> Iterator[tuple[str, IO[bytes]]]:
    """(member name, binary line stream) for an open file or each regular member of a tar archive.

    The member name is '' for a plain/compressed file. Archive members are read one at a time
    (streamed), never extracted to disk. `raw.tell()` tells how far into the input we are.
    """
    is_tar = tarfile.is_tarfile(raw)
    raw.seek(0)
    if is_tar:
        with tarfile.open(fileobj=raw, mode="r:*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                f = tar.extractfile(info)
                if f is None:
                    continue
                with f, _decompressed(info.name, f) as stream:
                    yield info.name, stream
        return
    stream = _decompressed(name, raw)
    try:
        yield "", stream
    finally:
        if stream is not raw:  # the caller owns (and closes) the raw file
            stream.close()


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files to import: files as given, directories walked (name order), sibling catalogues left out.

    A `FILE.catalogue.json` next to its `FILE` is read by that file's import (runner names), so
    it is not imported on its own from a directory; a catalogue without its stream file is.
    """
    out: list[str] = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(str(p))
            continue
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        names = {str(f) for f in files}
        out.extend(str(f) for f in files
                   if not (f.name.endswith(CATALOGUE_SUFFIX) and str(f)[:-len(CATALOGUE_SUFFIX)] in names))
    return out


def sibling_catalogue(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """`FILE.catalogue.json` next to a stream file, parsed, or None."""
    cat = Path(str(path) + CATALOGUE_SUFFIX)
    if not cat.is_file():
        return None
    try:
        data = orjson.loads(cat.read_bytes())
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and "marketId" in data else None


def import_file(tape: Tape, path: str | os.PathLike[str], *, clock: Clock | None = None, force: bool = False,
                batch_size: int = BATCH, use_catalogue: bool = True,
                progress: Callable[[int], None] | None = None) -> ImportSummary:
    """Import one input (stream file, compressed file, tar archive, catalogue JSON); its summary.

    `progress(bytes_read)` is called every few thousand lines with how far into the file the
    import is (compressed bytes for compressed inputs).
    """
    name = path_name(path)
    run = ImportRun(tape, source=SOURCE, kind=KIND, name=name, source_id=file_identity(path), clock=clock,
                    batch_size=batch_size, force=force)
    if run.skipped:
        return run.finish()
    with run:
        cat = sibling_catalogue(path) if use_catalogue else None
        names = {str(cat["marketId"]): runner_names(cat)} if cat else None
        market_names = {str(cat["marketId"]): str(cat.get("marketName"))} if cat and cat.get("marketName") else None
        if (name.endswith(".json") and os.path.getsize(path) <= MAX_JSON_DOCUMENT
                and _import_catalogue_file(run, path)):
            return run.finish()
        try:
            # No reference cycles are made here; the cyclic GC's passes over the pending batch's
            # ladders cost ~30% of the import (measured), so it is paused.
            with open(path, "rb") as raw, gc_paused():
                tick = (lambda: progress(raw.tell())) if progress else None
                for member, stream in open_members(raw, name):
                    decoder = StreamDecoder(runner_names=names, market_names=market_names, encode_books=True)
                    _import_stream(run, decoder, stream, f"{member} " if member else "", tick)
                if progress:
                    progress(os.fstat(raw.fileno()).st_size)  # done (a tar's padding is never read)
        except (OSError, EOFError, tarfile.TarError) as exc:
            # A truncated or corrupt archive: keep what was read, say where it stopped, no bookmark.
            raise TicktapeError(f"{name}: cannot read: {exc}") from exc
    return run.finish()


def is_catalogue_document(path: str | os.PathLike[str]) -> bool:
    """Whether a file is one catalogue JSON document (an object or a list of them with `marketId`)."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError:
        return False
    items = data if isinstance(data, list) else [data]
    return bool(items) and all(isinstance(c, dict) and "marketId" in c for c in items)


def _import_catalogue_file(run: ImportRun, path: str | os.PathLike[str]) -> bool:
    """A whole-file catalogue (one object or a list, possibly pretty-printed); False if it is not one."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError:
        return False  # not one JSON document: read it as stream lines
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(c, dict) and "marketId" in c for c in items):
        return False
    now = run.clock.now()
    for i, cat in enumerate(items):
        try:
            run.emit(MARKET_TOPIC, from_catalogue(cat, now, now))
        except BAD_INPUT as exc:
            run.dead_letter(f"item {i}", f"{type(exc).__name__}: {exc}", orjson.dumps(cat))
    return True


def _import_stream(run: ImportRun, decoder: StreamDecoder, stream: IO[bytes], where: str,
                   tick: Callable[[], None] | None = None) -> None:
    emit = run.appender.add  # the per-event hot path; ImportRun.emit only adds a state check
    decode = decoder.decode_line
    for lineno, line in enumerate(stream, 1):
        if tick is not None and not lineno % PROGRESS_EVERY:
            tick()
        if line.isspace():  # a blank line (a line is never empty; `strip()` would copy every line to say so)
            continue
        try:
            if line.startswith(b'{"marketId"') or b'"op":"marketCatalogue"' in line[:64]:
                pairs = _catalogue_line(line, decoder, run.clock.now())
            else:
                pairs = decode(line)
        except BAD_INPUT as exc:
            run.dead_letter(f"{where}line {lineno}", f"{type(exc).__name__}: {exc}", line.rstrip(b"\r\n"),
                            ts_event=decoder.last_pt)
            continue
        for topic, event in pairs:
            emit(topic, event)


def _catalogue_line(line: bytes, decoder: StreamDecoder, now: int) -> list[tuple[str, Any]]:
    """A catalogue JSON object as a `MarketDefinition` (status 'CATALOGUE').

    A catalogue has no publish time: it is stamped with the last `pt` of the file when it
    follows stream data, else with the import's clock (when the catalogue became known to us).
    """
    data = orjson.loads(line)
    if not isinstance(data, dict):
        raise ValidationError("catalogue line is not a JSON object")
    ts = decoder.last_pt if decoder.last_pt is not None else now
    return [(MARKET_TOPIC, from_catalogue(data, ts, ts))]
