"""Hypothesis strategies derived from the Avro schemas (so every type is covered)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ticktape.events import RECORD_TYPES

_LONG = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
_INT = st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1)
_DOUBLE = st.floats(allow_nan=False, width=64)
_TEXT = st.text(max_size=20)


def strategy_for(schema: Any, named: dict[str, st.SearchStrategy[Any]] | None = None,
                 ns: str = "ticktape") -> st.SearchStrategy[Any]:
    """Values of the Python event types for an Avro schema."""
    named = {} if named is None else named
    if isinstance(schema, str):
        simple = {"long": _LONG, "int": _INT, "double": _DOUBLE, "float": st.floats(allow_nan=False, width=32),
                  "string": _TEXT, "boolean": st.booleans(), "null": st.none(), "bytes": st.binary(max_size=20)}
        if schema in simple:
            return simple[schema]
        return named[schema if "." in schema else f"{ns}.{schema}"]
    if isinstance(schema, list):
        return st.one_of(*[strategy_for(b, named, ns) for b in schema])
    kind = schema["type"]
    if kind == "enum":
        s: st.SearchStrategy[Any] = st.sampled_from(schema["symbols"])
        named[f"{ns}.{schema['name']}"] = s
        return s
    if kind == "array":
        return st.lists(strategy_for(schema["items"], named, ns), max_size=4).map(tuple)
    if kind == "record":
        full = f"{schema.get('namespace', ns)}.{schema['name']}"
        cls = RECORD_TYPES[full]
        fields = [strategy_for(f["type"], named, ns) for f in schema["fields"]]
        s = st.tuples(*fields).map(lambda values: cls(*values))
        named[full] = s
        return s
    if isinstance(kind, str | dict | list):
        return strategy_for(kind, named, ns)
    raise ValueError(schema)
