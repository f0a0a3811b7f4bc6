"""`ticktape mongo ...`: MongoDB views of the tape."""

from __future__ import annotations

import click

__all__ = ["mongo", "register"]


@click.group()
def mongo() -> None:
    """MongoDB as a live view of the tape: orders, positions and runs; bars."""


def register(cli: click.Group) -> None:
    """Attach `ticktape mongo` to the CLI."""
    cli.add_command(mongo)


# The commands live in their own modules (the bars store's, the view's).
from ticktape.mongo.bars_cli import export_bars  # noqa: E402
from ticktape.mongo.sync_cli import sync_command, watch_command  # noqa: E402

for _command in (export_bars, sync_command, watch_command):
    mongo.add_command(_command)
