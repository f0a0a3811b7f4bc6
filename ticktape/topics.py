"""Names of the shared topics every part of ticktape agrees on (the live runner writes them, the
analyzer and the MongoDB view read them)."""

from __future__ import annotations

__all__ = ["CONTROLS_TOPIC", "EVENT_TOPIC", "INTENT_TOPIC", "RUNS_TOPIC", "topic_kind"]

INTENT_TOPIC = "orders.intent"
"""Intents of every run, keyed by run id (backtests write here too)."""
EVENT_TOPIC = "orders.event"
"""Venue answers and control rejections, keyed by run id."""
RUNS_TOPIC = "runs"
"""`RunStarted` / `RunFinished` of every run, keyed by run id."""
CONTROLS_TOPIC = "controls"
"""Operator commands (`ticktape control`), keyed by target (a run id, or `*`)."""


def topic_kind(topic: str) -> str | None:
    """The kind of a market-data style topic, its venue part starred: `md.binance.trade` -> `md.*.trade`.

    Names are hierarchical `<family>.<venue>.<what>[...]`; topics of one kind carry the same event
    type from different venues. A name of fewer than three parts has no kind (None).
    """
    parts = topic.split(".")
    if len(parts) < 3:
        return None
    return ".".join([parts[0], "*", *parts[2:]])
