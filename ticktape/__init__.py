"""ticktape: an event-sourced trading platform. Record every tick, replay every decision."""

__version__ = "0.1.0"
