"""The pipeline pieces of `python -m benchmarks peers`: each piece's own benchmark, against its target.

Each piece (codec, file tape, Kafka with both clients, Binance and Betfair import, load, audit) runs
as its own process (`python -m benchmarks.peers.pipeline PIECE`), so one piece's memory and warm
caches do not colour the next; the child calls the `figures` function of the piece's benchmark
module and prints them as JSON. The targets are the ones BENCHMARKS.md's section of each piece
states. A piece that fails (or is skipped, e.g. Kafka without Java) is reported as such in the
table; the other pieces still run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KAFKA_CLIENTS = ("kafka+rdkafka", "kafka")


@dataclass(frozen=True, kw_only=True)
class Target:
    """A figure's target: at least (`>=`) or below (`<`) `value`."""

    op: str
    value: float

    def met(self, figure: float) -> bool:
        """Whether `figure` meets the target."""
        return figure >= self.value if self.op == ">=" else figure < self.value

    def text(self) -> str:
        """As the report prints it, e.g. `≥ 300,000` or `< 2`."""
        return f"{'≥' if self.op == '>=' else '<'} {self.value:,.0f}" if self.value >= 100 else \
            f"{'≥' if self.op == '>=' else '<'} {self.value:g}"


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the table: the figure at `key` (a path into `piece`'s figures), in `unit`, against `target`."""

    piece: str
    label: str
    key: tuple[str, ...]
    unit: str
    target: Target | None = None


def at_least(value: float) -> Target:
    """A target of at least `value`."""
    return Target(op=">=", value=value)


def below(value: float) -> Target:
    """A target below `value`."""
    return Target(op="<", value=value)


ROWS: tuple[Row, ...] = (
    Row(piece="codec", label="codec: `Codec.encode` of a Trade", key=("encode_per_s",), unit="events/s",
        target=at_least(300_000)),
    Row(piece="codec", label="codec: `Codec.decode` of a Trade", key=("decode_per_s",), unit="events/s",
        target=at_least(300_000)),
    Row(piece="file_tape", label="file tape: append, batches of 10k", key=("append_per_s",), unit="events/s",
        target=at_least(300_000)),
    Row(piece="file_tape", label="file tape: sequential read, `Record`s", key=("read_records_per_s",),
        unit="events/s", target=at_least(500_000)),
    Row(piece="kafka", label="Kafka produce, confluent-kafka", key=("kafka+rdkafka", "produce_events_per_s"),
        unit="events/s", target=at_least(100_000)),
    Row(piece="kafka", label="Kafka consume+decode, confluent-kafka", key=("kafka+rdkafka", "consume_events_per_s"),
        unit="events/s", target=at_least(100_000)),
    Row(piece="kafka", label="Kafka latency p99 at 1k/s, confluent-kafka", key=("kafka+rdkafka", "latency_p99_ms"),
        unit="ms", target=below(10)),
    Row(piece="kafka", label="Kafka produce, kafka-python", key=("kafka", "produce_events_per_s"), unit="events/s"),
    Row(piece="kafka", label="Kafka consume+decode, kafka-python", key=("kafka", "consume_events_per_s"),
        unit="events/s"),
    Row(piece="kafka", label="Kafka latency p99 at 1k/s, kafka-python", key=("kafka", "latency_p99_ms"), unit="ms"),
    Row(piece="binance_import", label="`ticktape import binance` klines", key=("klines", "rows_per_s"), unit="rows/s",
        target=at_least(300_000)),
    Row(piece="binance_import", label="`ticktape import binance` aggTrades", key=("aggTrades", "rows_per_s"),
        unit="rows/s", target=at_least(300_000)),
    Row(piece="betfair_import", label="`ticktape import betfair`, end to end in its process", key=("updates_per_s",),
        unit="updates/s", target=at_least(20_000)),
    Row(piece="betfair_import", label="`ticktape import betfair`, the whole command (issue 18: per core)",
        key=("cli_updates_per_cpu_s",), unit="updates/CPU-s", target=at_least(50_000)),
    Row(piece="betfair_import", label="`ticktape import betfair`, the whole command, wall",
        key=("cli_updates_per_s",), unit="updates/s", target=None),
    Row(piece="load", label="`ticktape load`, sealed segments from Parquet", key=("cached_events_per_cpu_s",),
        unit="events/CPU-s", target=at_least(1_000_000)),
    Row(piece="load", label="`ticktape load`, first load (block reader)", key=("blocks_events_per_cpu_s",),
        unit="events/CPU-s"),
    Row(piece="audit", label="`ticktape audit` of an `ema_cross` run, CPU vs the backtest",
        key=("cpu_ratio_to_backtest",), unit="×", target=below(2)),
)
@dataclass(frozen=True, kw_only=True)
class Piece:
    """A piece's benchmark: the module whose `figures(**kwargs)` measures it, its sizes, whether it needs
    the broker (passed as `broker`)."""

    module: str
    full: Mapping[str, Any]
    quick: Mapping[str, Any]
    needs_broker: bool = False


REGISTRY: dict[str, Piece] = {
    "codec": Piece(module="benchmarks.bench_codec", full={"n": 300_000}, quick={"n": 100_000}),
    "file_tape": Piece(module="benchmarks.bench_file_tape", full={"n": 1_000_000}, quick={"n": 200_000}),
    "kafka": Piece(module="benchmarks.bench_kafka", needs_broker=True,
                   full={"n": 200_000, "repeat": 3, "seconds": 10.0, "clients": KAFKA_CLIENTS},
                   quick={"n": 20_000, "repeat": 1, "seconds": 2.0, "clients": KAFKA_CLIENTS}),
    "binance_import": Piece(module="benchmarks.bench_binance_import", full={"rows": 2_000_000, "repeat": 3},
                            quick={"rows": 200_000, "repeat": 1}),
    "betfair_import": Piece(module="benchmarks.bench_betfair_import", full={"copies": 100, "repeat": 3},
                            quick={"copies": 25, "repeat": 1}),
    # segments small enough that most of the tape is sealed (the cached path reads sealed segments)
    "load": Piece(module="benchmarks.bench_load", full={"n": 1_000_000, "segment_mb": 8},
                  quick={"n": 200_000, "segment_mb": 2}),
    "audit": Piece(module="benchmarks.bench_audit", full={"n": 1_000_000}, quick={"n": 200_000}),
}
PIECES = tuple(REGISTRY)


def measure_piece(piece: str, sizes: Mapping[str, Any], broker: str | None = None) -> dict[str, Any]:
    """Run `piece`'s benchmark in this process at `sizes`; its figures."""
    import importlib

    spec = REGISTRY[piece]
    if spec.needs_broker and not broker:
        raise ValueError(f"the {piece} piece needs a Kafka broker (--kafka HOST:PORT)")
    figures: Callable[..., dict[str, Any]] = importlib.import_module(spec.module).figures
    return figures(**sizes, **({"broker": broker} if spec.needs_broker else {}))


# ---------------------------------------------------------------- the parent: one process per piece

Measure = Callable[[list[str]], dict[str, Any]]
"""Runs a command; its `wall_s`, `cpu_s`, `maxrss_mb` and `stdout`; raises on failure (`run.run_measured`)."""


def run_pieces(measure: Measure, *, quick: bool, kafka: Callable[[], str] | None = None,
               skip: Mapping[str, str] | None = None, pieces: tuple[str, ...] = PIECES) -> dict[str, dict[str, Any]]:
    """Each piece in its own process: {piece: its figures plus the process's wall/CPU/RSS}, or
    {piece: {"error": why}} when it failed, {piece: {"skipped": why}} when `skip` names it.

    `kafka()` gives the broker's HOST:PORT; it is called (and may start one) only when the Kafka piece
    comes up, and if it raises, that piece failed.
    """
    out: dict[str, dict[str, Any]] = {}
    for piece in pieces:
        if skip and piece in skip:
            out[piece] = {"skipped": skip[piece]}
            print(f"peers: pipeline {piece}: skipped ({skip[piece]})", file=sys.stderr)
            continue
        load = os.getloadavg()[0]
        try:
            cmd = [sys.executable, "-m", "benchmarks.peers.pipeline", piece, *(["--quick"] if quick else [])]
            if REGISTRY[piece].needs_broker:
                if kafka is None:
                    raise RuntimeError("no Kafka broker given")
                cmd += ["--kafka", kafka()]
            m = measure(cmd)
            figures = json.loads(m.pop("stdout").strip().splitlines()[-1])
        except Exception as exc:  # a failing piece is a row in the report, not the end of it
            out[piece] = {"error": _reason(exc)}
            print(f"peers: pipeline {piece}: FAILED: {exc}", file=sys.stderr)
            continue
        out[piece] = {**figures, "process": {k: round(v, 3) for k, v in m.items()}, "load_before": load}
        print(f"peers: pipeline {piece}: {m['wall_s']:.1f} s", file=sys.stderr)
    return out


def _reason(exc: BaseException) -> str:
    """The last non-empty line of an error's message (a child's traceback ends with the exception)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def lookup(figures: Mapping[str, Any], key: tuple[str, ...]) -> float | None:
    """The number at path `key` in `figures`, or None."""
    node: Any = figures
    for part in key:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _number(x: float) -> str:
    """1,234,567 for large figures, 1.23 for small ones."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def rows(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """The table's rows: piece, figure, unit, target, and met / missed / failed / skipped / no target."""
    out = []
    for row in ROWS:
        if row.piece not in results:
            continue
        res = results[row.piece]
        target = row.target.text() if row.target else "—"
        if "error" in res or "skipped" in res:
            status = f"failed: {res['error']}" if "error" in res else f"skipped: {res['skipped']}"
            out.append({"piece": row.label, "figure": "—", "unit": row.unit, "target": target, "status": status})
            continue
        figure = lookup(res, row.key)
        if figure is None:
            status, shown = f"failed: no figure {'.'.join(row.key)}", "—"
        else:
            shown = _number(figure)
            status = ("met" if row.target.met(figure) else "missed") if row.target else "no target"
        out.append({"piece": row.label, "figure": shown, "unit": row.unit, "target": target, "status": status})
    return out


def markdown(results: Mapping[str, Mapping[str, Any]], measured: Mapping[str, Any]) -> str:
    """The "Pipeline pieces" table, after a line on when and how it was measured (`measured`: date, quick,
    load min/max)."""
    size = "`--quick` sizes (a tenth to a quarter of the full runs)" if measured.get("quick") else \
        "the sizes of BENCHMARKS.md's sections"
    load = measured.get("load", {})
    lines = ["### Pipeline pieces", "",
             f"Measured {measured.get('date', '?')}, load average (1 min) {load.get('min', 0):.1f}-"
             f"{load.get('max', 0):.1f}. Each piece's own benchmark (`benchmarks/bench_*.py`) in its own process, "
             f"at {size}, against the target its section below states (rates are best-of runs by wall time, "
             "the load's per CPU second, as each section measures them).", "",
             "| piece | figure | unit | target | met/missed |", "| --- | ---: | --- | ---: | --- |"]
    lines += [f"| {r['piece']} | {r['figure']} | {r['unit']} | {r['target']} | {r['status']} |" for r in rows(results)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Child: measure one piece and print its figures as one JSON line."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.peers.pipeline")
    ap.add_argument("piece", choices=PIECES)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--kafka", help="HOST:PORT of the broker (the kafka piece)")
    args = ap.parse_args(argv)
    spec = REGISTRY[args.piece]
    figures = measure_piece(args.piece, spec.quick if args.quick else spec.full, args.kafka)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
