"""The optional C extensions: each has a pure-Python twin, taken when the extension is not built or
`TICKTAPE_NO_CEXT=1` (CI runs the unit and contract tests that way too)."""

from __future__ import annotations

import importlib
import os
from typing import Any


def optional_extension(module: str) -> Any:
    """The C extension `module` (e.g. "ticktape._avrovm"), or None when it is not built or
    `TICKTAPE_NO_CEXT=1`."""
    if os.environ.get("TICKTAPE_NO_CEXT") == "1":
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
