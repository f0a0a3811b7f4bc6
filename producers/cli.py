"""`ticktape import ...` and `ticktape record ...`: one group each, venues attach their commands.

Each venue's `cli.register(import_group, record_group)` is called on its own, so a venue whose
package (or optional dependency) is missing does not take the others down.
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

    for module in VENUES:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            log.debug("producer commands %s unavailable: %s", module, exc)
            continue
        mod.register(import_group, record_group)
