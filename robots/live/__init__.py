"""Live trading: robots on live topics, a journal that makes their input order durable, and the gateway.

A live run is the same fold as a backtest (`robots.dispatch` decides what reaches the robot),
fed by `LiveInputs` in arrival order instead of a merged tape slice. Before an input changes
any state its reference (topic, partition, offset) is appended to the run's journal
(`journal.<run id>`); inputs that exist only in the process (a timer the wall clock fired, a
stop the process decided) are journaled inline. Replaying the journal therefore rebuilds the
run exactly: after a crash (`snapshot + journal replay + live`) and in an audit.

- `robots.live.journal`: the journal and its replay.
- `robots.live.inputs`: following topics live on any tape backend.
- `robots.live.snapshots`: the `SnapshotStore` port and its tape implementation.
- `robots.live.fold`: the live run's fold (robot, client order ids, open orders, timers).
- `robots.live.engine`: what the runner and the gateway share (journal-first loop, outputs
  written once, snapshots, stop).
- `robots.live.runner`: `ticktape run`.
- `robots.live.paper` / `robots.live.gateway`: `ticktape gateway --venue paper`.
"""
