"""The "Peers" section of BENCHMARKS.md (replaced between markers on each run) and the README check."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BEGIN = "<!-- peers:begin (written by `python -m benchmarks peers`; edits inside are overwritten) -->"
END = "<!-- peers:end -->"
README_MARK = re.compile(r"<!--\s*peers:(?P<key>[\w.]+)\s*-->\s*(?P<value>[\d,]+(?:\.\d+)?)")
"""A figure in README.md that follows `<!-- peers:KEY -->`, e.g. `<!-- peers:ema.ticktape.run_eps --> 1,234,000`;
KEY is a dotted path into the `figures` of the JSON file."""
TOLERANCE = 0.20


def replace_section(text: str, body: str) -> str:
    """`text` with the part between the markers replaced by `body` (appended with markers if absent)."""
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 and end < 0:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    if start < 0 or end < start:
        raise ValueError("BENCHMARKS.md: the peers markers are broken (one missing or out of order)")
    return text[:start] + block + text[end + len(END):]


def lookup(figures: Mapping[str, Any], key: str) -> float | None:
    """The number at dotted `key` in `figures`, or None."""
    node: Any = figures
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def check_readme(readme: str, figures: Mapping[str, Any], tolerance: float = TOLERANCE) -> list[str]:
    """Messages for README figures more than `tolerance` away from the measured ones (or unknown)."""
    flags: list[str] = []
    for mo in README_MARK.finditer(readme):
        key, quoted = mo.group("key"), float(mo.group("value").replace(",", ""))
        measured = lookup(figures, key)
        if measured is None:
            flags.append(f"README quotes {key} = {quoted:,.0f} but the last run measured no such figure")
        elif measured == 0 or abs(quoted - measured) / measured > tolerance:
            flags.append(f"README quotes {key} = {quoted:,.0f}, last measured {measured:,.0f} "
                         f"(more than {tolerance:.0%} apart)")
    return flags


def check_readme_files(readme: Path, results: Path) -> list[str]:
    """`check_readme` on the files; a missing results file is itself a flag."""
    import json

    if not results.exists():
        return [f"{results}: no measured figures yet (run `python -m benchmarks peers`)"]
    return check_readme(readme.read_text(), json.loads(results.read_text())["figures"])
