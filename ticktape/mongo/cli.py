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
