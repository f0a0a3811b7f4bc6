"""MongoDB as a live, queryable view of the tape (pymongo), never its record.

- `client`: open the database a `mongodb://` URI names.
- `sync`: project the tape's orders, positions and runs into collections, resumably.
- `snapshots`: a `SnapshotStore` for live runs' snapshots.
- `bars`: the bar API's MongoDB backend.

Written to the MongoDB API, not to one server's quirks: tests run on FerretDB (built by
`scripts/mongo`), `TICKTAPE_MONGO` points them at any real MongoDB. FerretDB has no change
streams, no multi-document transactions and no Decimal128, so nothing here relies on them.
"""
