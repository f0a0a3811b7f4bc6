"""`ticktape import ...` and `ticktape record ...`: one group each, venues attach their commands.

Each venue's `cli.register(import_group, record_group)` attaches its commands; a venue module that
cannot be imported fails the CLI loudly (`ticktape.cli`), naming the module.
"""

from __future__ import annotations

import importlib
import logging

import click

log = logging.getLogger(__name__)

VENUES = ("producers.binance.cli", "producers.betfair.cli", "producers.frames_cli")


def register(cli: click.Group) -> None:
    """Attach the `import` and `record` groups and every venue's commands under them."""

    @cli.group("import")
    def import_group() -> None:
        """Import history (files, REST) onto the tape; the same input twice adds nothing."""

    @cli.group("record")
    def record_group() -> None:
        """Record a live venue feed onto the tape."""

    for module in VENUES:  # a venue module that fails to import is an error, never a silently missing command
        importlib.import_module(module).register(import_group, record_group)
