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


from ticktape.mongo.bars_cli import export_bars  # noqa: E402  (the bars store's command, kept in its own module)

mongo.add_command(export_bars)
