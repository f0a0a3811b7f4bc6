"""Betfair historical import: market updates per second and peak memory.

    python -m benchmarks.bench_betfair_import [COPIES] [--data DIR]

Replicates the two recorded markets in `/work/shared/data/betfair/` COPIES times each (distinct
market ids, one market after another, as one stream file in a temp dir), then measures, each in a
fresh subprocess so peak RSS is its own:

* `import`: `ticktape import betfair` end to end (read, decode, full-ladder MarketBooks, Avro
  encode, append to a file tape, bookmark) — the number the >= 20k updates/s target is about;
* `decode`: `StreamDecoder(encode_books=True)` alone, what the import runs (JSON -> encoded books);
* `decode_objects`: `StreamDecoder()` building `MarketBook` objects (the live recorder's and the API's path);
* `append`: appending the already encoded books to a file tape (the write ceiling);
* `import_zstd`, `append_zstd`: the same onto a tape of zstd-compressed segments
  (`file:PATH?compression=zstd`); every mode that writes reports the tape's size on disk;
* `betfairlightweight`: its historical generator stream (`max_latency=None`) building its
  MarketBook resources, the reference the decoder is checked against;
* memory flatness: the import at COPIES/4 and COPIES, peak RSS of each.

Rates are reported per wall second and per CPU second of the measured process (best of
`--repeat` by CPU time): on a shared, loaded VM the wall figure swings with the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, max_rss_mb, report

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "betfair"  # shared/ beside the repo
MARKETS = ("1.197931750", "1.197931751")


def make_file(data: Path, copies: int, out: Path) -> int:
    """Write `copies` of each market (ids 1.9xxxxxxxx) to `out`; the number of market updates."""
    sources = [(m, (data / m).read_bytes().splitlines()) for m in MARKETS]
    updates = 0
    with open(out, "wb") as f:
        for c in range(copies):
            for k, (market, lines) in enumerate(sources):
                new = f'"1.9{c:06d}{k:02d}"'.encode()
                old = f'"{market}"'.encode()
                for line in lines:
                    f.write(line.replace(old, new) + b"\n")
                updates += len(lines)  # one market change per line in these files
    return updates


def _child(mode: str, path: str, tape_dir: str) -> None:
    from producers.betfair.historical import import_file
    from producers.betfair.parse import StreamDecoder
    from producers.common import as_encoded
    from ticktape.events import MarketBook
    from ticktape.tape import open_tape
    from ticktape.tape.base import Encoded

    t0, c0 = time.perf_counter(), time.process_time()
    dt = cpu = None
    uri = f"file:{tape_dir}?compression=zstd" if mode.endswith("_zstd") else f"file:{tape_dir}"
    mode = mode.removesuffix("_zstd")
    if mode == "import":
        tape = open_tape(uri)
        import_file(tape, path)
        tape.close()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = sum(1 for _ in _books(tape_dir))  # counted from the tape, outside the timing
    elif mode in ("decode", "decode_objects"):
        dec = StreamDecoder(encode_books=mode == "decode")
        n = 0
        with open(path, "rb") as f:
            for line in f:
                n += sum(1 for _, e in dec.decode_line(line) if type(e) in (MarketBook, Encoded))
    elif mode == "append":
        dec = StreamDecoder(encode_books=True)
        with open(path, "rb") as f:
            encoded = as_encoded([e for line in f for _, e in dec.decode_line(line)])
        n = sum(1 for e in encoded if e.data[2:10] == encoded[-1].data[2:10])  # the books (the last is one)
        tape = open_tape(uri)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(encoded), 1000):
            tape.append_encoded("md.betfair.market", encoded[i:i + 1000])
        tape.close()
    elif mode == "betfairlightweight":
        import betfairlightweight

        # One historical stream per market file, as Betfair ships them (its generator snaps every
        # cached market on every line, so one stream over all copies would be quadratic). Here
        # FILE is the data directory and TAPE the number of copies.
        client = betfairlightweight.APIClient("user", "password", app_key="key")
        n = 0
        for _ in range(int(tape_dir)):
            for market in MARKETS:
                stream = client.streaming.create_historical_generator_stream(
                    file_path=str(Path(path) / market), listener=betfairlightweight.StreamListener(max_latency=None))
                n += sum(1 for _ in stream.get_generator()())  # one line = one market change in these files
    else:
        raise SystemExit(f"unknown mode {mode}")
    if dt is None or cpu is None:
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    written = Path(tape_dir) / "md.betfair.market"
    tape_mb = sum(p.stat().st_size for p in written.rglob("*.avro")) / 2**20 if written.is_dir() else 0.0
    print(json.dumps({"updates": n, "seconds": dt, "cpu_seconds": cpu, "rss_mb": max_rss_mb(), "tape_mb": tape_mb}))


def _books(tape_dir: str):  # type: ignore[no-untyped-def]
    from ticktape.events import MarketBook
    from ticktape.tape.file import FileTape

    tape = FileTape(tape_dir)
    try:
        yield from (e for e in tape.read_events("md.betfair.market") if type(e) is MarketBook)
    finally:
        tape.close()


def _child_result(mode: str, path: str, tape: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_betfair_import", "--child", mode, path, tape],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _run(mode: str, path: Path, tmp: Path, repeat: int = 1) -> dict[str, float]:
    best: dict[str, float] | None = None
    for i in range(repeat):
        res = _child_result(mode, str(path), str(tmp / f"tape-{mode}-{path.stem}-{i}"))
        if best is None or res["cpu_seconds"] < best["cpu_seconds"]:
            best = res
    assert best is not None
    return best


def rates(res: dict[str, float]) -> dict[str, float]:
    """A child's result as the figures the result line names."""
    return {"updates": int(res["updates"]), "updates_per_s": round(res["updates"] / res["seconds"]),
            "updates_per_cpu_s": round(res["updates"] / res["cpu_seconds"]), "peak_rss_mb": round(res["rss_mb"], 1),
            "tape_mb": round(res.get("tape_mb", 0.0), 1)}


def cli_seconds(path: Path, tape_dir: Path) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of the whole `ticktape import betfair FILE --strict` process
    (start-up and imports included). The child may write .pyc files, as an installed package has them
    (this machine sets PYTHONDONTWRITEBYTECODE, which makes every process compile ticktape again)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ticktape", "--tape", f"file:{tape_dir}", "import", "betfair", str(path),
                    "--strict"], check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def figures(copies: int = 100, repeat: int = 3, data: Path = DATA) -> dict[str, float]:
    """`import_file` of the two recorded markets copied `copies` times (its own process, best of `repeat` by
    CPU time): updates/s by wall and CPU time, peak RSS; and updates/s of the whole `ticktape import betfair`
    process on the same file, per wall and per CPU second (best of `repeat` each)."""
    with tempfile.TemporaryDirectory(prefix="bench-betfair-") as d:
        tmp = Path(d)
        updates = make_file(data, copies, tmp / "big.stream")
        out = rates(_run("import", tmp / "big.stream", tmp, repeat=repeat))
        runs = [cli_seconds(tmp / "big.stream", tmp / f"cli-tape-{i}") for i in range(repeat)]
        return {**out, "cli_updates_per_s": round(updates / min(w for w, _ in runs)),
                "cli_updates_per_cpu_s": round(updates / min(c for _, c in runs))}


def main() -> None:
    """Build the replicated file, run every mode in its own process, print JSON result lines."""
    ap = argparse.ArgumentParser()
    ap.add_argument("copies", nargs="?", type=int, default=100)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "FILE", "TAPE"))
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    print(f"# {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-betfair-") as d:
        tmp = Path(d)
        small, big = tmp / "small.stream", tmp / "big.stream"
        n_small = make_file(Path(args.data), max(1, args.copies // 4), small)
        n_big = make_file(Path(args.data), args.copies, big)
        size_mb = os.path.getsize(big) / 2**20
        for mode in ("import", "import_zstd", "decode", "decode_objects", "append", "append_zstd",
                     "betfairlightweight"):
            if mode == "betfairlightweight":
                res = _child_result(mode, args.data, str(args.copies))
            else:
                res = _run(mode, big, tmp, repeat=args.repeat)
            report(f"betfair.{mode}", copies=args.copies, file_mb=round(size_mb, 1), **rates(res))
        res_small = _run("import", small, tmp)
        res_big = _run("import", big, tmp)
        report("betfair.import.memory", updates_small=n_small, peak_rss_small_mb=round(res_small["rss_mb"], 1),
               updates_big=n_big, peak_rss_big_mb=round(res_big["rss_mb"], 1))


if __name__ == "__main__":
    main()
