"""The analyzer: load tapes into DuckDB, metrics, reports, replay and audit of robot runs."""
