"""Betfair stream times (`pt`, and the feed times of the race stream) in ticktape's integer ns.

One rule for every stream time, so a publish time and a feed time of one line can never be read in
different units. Kept apart from `parse` so the per-stream parsers (`sports`) share it without a cycle.
"""

from __future__ import annotations

MS = 1_000_000  # Betfair times are ms since the epoch; ticktape's are ns

PT_SECONDS = (10**9, 10**11)
"""A `pt` in this range is in seconds (2001-09-09 .. 5138), not ms (it would be 1970-01-12 .. 1973-03-03):
Betfair's race stream files (`rcm`) were written with seconds; every other stream uses ms."""


def pt_ns(pt: int) -> int:
    """A stream `pt` (ms, or seconds in `PT_SECONDS`) in ns since the epoch."""
    if PT_SECONDS[0] <= pt < PT_SECONDS[1]:
        return pt * 1_000_000_000
    return pt * MS  # smaller values too: hand-written streams (tests, samples) count ms from 0
