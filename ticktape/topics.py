"""Names of the shared topics every part of ticktape agrees on (the live runner writes them, the
analyzer and the MongoDB view read them)."""

from __future__ import annotations

__all__ = ["CONTROLS_TOPIC", "EVENT_TOPIC", "INTENT_TOPIC", "RUNS_TOPIC"]

INTENT_TOPIC = "orders.intent"
"""Intents of every run, keyed by run id (backtests write here too)."""
EVENT_TOPIC = "orders.event"
"""Venue answers and control rejections, keyed by run id."""
RUNS_TOPIC = "runs"
"""`RunStarted` / `RunFinished` of every run, keyed by run id."""
CONTROLS_TOPIC = "controls"
"""Operator commands (`ticktape control`), keyed by target (a run id, or `*`)."""
