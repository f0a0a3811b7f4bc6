"""Codec: single-event encode and decode of `Trade` (Avro single-object encoding).

    python -m benchmarks.bench_codec [N]
"""

from __future__ import annotations

import copy
import io
import sys

import fastavro

from benchmarks.common import best_rate, machine, report
from ticktape import codec as codec_mod
from ticktape.codec import default_codec, to_python
from ticktape.demo import synthetic_trades


def figures(n: int = 300_000) -> dict[str, float]:
    """Events/s of `Codec.encode`/`decode` of `n` Trades, and fastavro's per-record path on dicts."""
    codec = default_codec()
    events = synthetic_trades(n)
    encoded = [codec.encode(e) for e in events]
    encode = codec.encode
    decode = codec.decode
    out: dict[str, float] = {"encode_per_s": round(best_rate(n, lambda: [encode(e) for e in events])),
           "decode_per_s": round(best_rate(n, lambda: [decode(b) for b in encoded]))}
    # The reference point: fastavro's per-record schemaless path on dicts.
    schema = fastavro.parse_schema(copy.deepcopy(codec.registry.current["Trade"].schema))
    dicts = [to_python(e) for e in events]
    bodies = [b[10:] for b in encoded]

    def fa_encode() -> None:
        for d in dicts:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, d)

    def fa_decode() -> None:
        for b in bodies:
            fastavro.schemaless_reader(io.BytesIO(b), schema, None)

    out["fastavro_encode_per_s"] = round(best_rate(n, fa_encode))
    out["fastavro_decode_per_s"] = round(best_rate(n, fa_decode))
    return out


def main(n: int = 300_000) -> None:
    engine = "C (_avrovm)" if codec_mod.VM is not None else "pure Python"
    f = figures(n)
    report("codec.encode", engine=engine, events_per_s=f["encode_per_s"])
    report("codec.decode", engine=engine, events_per_s=f["decode_per_s"])
    report("fastavro.schemaless_writer", events_per_s=f["fastavro_encode_per_s"])
    report("fastavro.schemaless_reader", events_per_s=f["fastavro_decode_per_s"])
    report("machine", machine=machine())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300_000)
