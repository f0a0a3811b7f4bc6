"""`ticktape report --sweep ID --db FILE`: the runs of one sweep, best first, and a heat map of the objective.

The rows come from the loaded `run_started` (its `sweep_id`) and `run_finished` (its summary)
tables, so the report shows what the tape holds: every finished run of the sweep, whichever
engine ran it and in how many goes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from analyzer.api import Analyzer
from robots.sweep_walk import TEST_SUFFIX
from ticktape.errors import TicktapeError

__all__ = ["build_sweep_report", "sweep_rows", "test_rows", "text_table"]

COLUMNS = ("pnl", "fees", "max_drawdown", "fills", "intents", "intents_sha256", "run_id")


def sweep_rows(a: Analyzer, sweep_id: str, objective: str = "pnl") -> tuple[list[dict[str, Any]], list[str]]:
    """Finished runs of `sweep_id`, best `objective` first (ties by params), and the params that vary."""
    try:
        df = a.sql("""SELECT s.run_id, s.params, f.summary FROM run_started s JOIN run_finished f USING (run_id)
                      WHERE s.sweep_id = ?""", [sweep_id])
    except Exception as exc:  # duckdb's CatalogException / BinderException: no runs (or no sweeps) loaded
        raise TicktapeError(f"no sweep runs in this database ({str(exc).splitlines()[0]}): "
                            "`ticktape load` a tape holding the sweep first") from exc
    rows = []
    for run_id, params, summary in zip(df.run_id, df.params, df.summary, strict=True):
        s = json.loads(summary)
        rows.append({"run_id": run_id, "params": json.loads(params), **{k: s.get(k) for k in COLUMNS if k != "run_id"},
                     objective: s.get(objective)})
    if not rows:
        raise TicktapeError(f"no finished run of sweep {sweep_id!r} in this database")
    if not isinstance(rows[0][objective], int | float):
        raise TicktapeError(f"objective {objective!r} is not a number in the runs' summaries")
    rows.sort(key=lambda r: (-float(r[objective]), json.dumps(r["params"], sort_keys=True)))
    names = list(rows[0]["params"])
    varying = [n for n in names if len({json.dumps(r["params"].get(n)) for r in rows}) > 1]
    return rows, varying


def test_rows(a: Analyzer, sweep_id: str, objective: str = "pnl") -> list[dict[str, Any]]:
    """A walk-forward's test runs (sweep `<sweep_id>.test`), each with its params' training score as
    `train_<objective>`; [] when the sweep has no test runs."""
    try:
        tested, _ = sweep_rows(a, sweep_id + TEST_SUFFIX, objective)
    except TicktapeError:
        return []
    trained, _ = sweep_rows(a, sweep_id, objective)
    train_score = {json.dumps(r["params"], sort_keys=True): r.get(objective) for r in trained}
    for row in tested:
        row[f"train_{objective}"] = train_score.get(json.dumps(row["params"], sort_keys=True))
    return tested


def text_table(rows: Sequence[dict[str, Any]], varying: Sequence[str], objective: str, top: int = 10) -> str:
    """The best `top` runs as plain text: varying params, the objective, then the result columns."""
    cols = [*varying, *dict.fromkeys([objective, *COLUMNS])]
    lines = [cols]
    for r in rows[:top]:
        vals = [r["params"].get(n) for n in varying] + [r.get(c) for c in cols[len(varying):]]
        lines.append([f"{v:.2f}" if isinstance(v, float) else str(v)[:16] if isinstance(v, str) and len(v) == 64
                      else str(v) for v in vals])
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _color(v: float, lo: float, hi: float) -> str:
    """Red (worst) through white to green (best)."""
    t = 0.5 if hi == lo else (v - lo) / (hi - lo)
    if t < 0.5:
        k = int(255 * t * 2)
        return f"rgb(230,{k},{k})"
    k = int(255 * (1 - t) * 2)
    return f"rgb({k},200,{k})"


def heat_map(rows: Sequence[dict[str, Any]], x: str, y: str, objective: str) -> str:
    """An SVG grid: `x` across, `y` down, each cell the best `objective` among runs with those two values."""
    def order(name: str) -> list[str]:
        def key(text: str) -> tuple[int, float, str]:
            v = json.loads(text)
            return (0, float(v), text) if isinstance(v, int | float) else (1, 0.0, text)

        return sorted({json.dumps(r["params"][name]) for r in rows}, key=key)

    xs, ys = order(x), order(y)
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        k = (json.dumps(r["params"][x]), json.dumps(r["params"][y]))
        best[k] = max(best.get(k, float("-inf")), float(r[objective]))
    lo, hi = min(best.values()), max(best.values())
    cw, ch, left, top = 64, 26, 70, 40
    w, h = left + cw * len(xs) + 10, top + ch * len(ys) + 10
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-size='11'>",
           f"<text x='{left}' y='14'>{escape(objective)} by {escape(x)} (across) and {escape(y)} (down)</text>"]
    for i, xv in enumerate(xs):
        out.append(f"<text x='{left + i * cw + cw / 2}' y='{top - 6}' text-anchor='middle'>{escape(xv)}</text>")
    for j, yv in enumerate(ys):
        out.append(f"<text x='{left - 6}' y='{top + j * ch + ch / 2 + 4}' text-anchor='end'>{escape(yv)}</text>")
        for i, xv in enumerate(xs):
            v = best.get((xv, yv))
            fill = "#eee" if v is None else _color(v, lo, hi)
            label = "" if v is None else f"{v:.4g}"
            out.append(f"<rect x='{left + i * cw}' y='{top + j * ch}' width='{cw - 1}' height='{ch - 1}' "
                       f"fill='{fill}'><title>{escape(x)}={escape(xv)} {escape(y)}={escape(yv)}: {label}</title></rect>"
                       f"<text x='{left + i * cw + cw / 2}' y='{top + j * ch + ch / 2 + 4}' "
                       f"text-anchor='middle'>{label}</text>")
    out.append("</svg>")
    return "".join(out)


def build_sweep_report(a: Analyzer, sweep_id: str, objective: str = "pnl", top: int = 20) -> str:
    """A self-contained HTML page: the heat map over the first two varying params, and the best `top` runs."""
    from analyzer.report import _CSS

    rows, varying = sweep_rows(a, sweep_id, objective)
    cols = [*varying, *dict.fromkeys([objective, *COLUMNS])]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = []
    for r in rows[:top]:
        vals = [r["params"].get(n) for n in varying] + [r.get(c) for c in cols[len(varying):]]
        body.append("<tr>" + "".join(f"<td>{escape(f'{v:.6g}' if isinstance(v, float) else str(v))}</td>"
                                     for v in vals) + "</tr>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>sweep {escape(sweep_id)}</title>"
             f"<style>{_CSS}</style></head><body><h1>sweep {escape(sweep_id)}</h1>",
             f"<p class='sub'>{len(rows)} finished runs; varying: {escape(', '.join(varying) or 'nothing')}</p>"]
    if len(varying) >= 2:
        parts.append(f"<h2>{escape(objective)}</h2>" + heat_map(rows, varying[0], varying[1], objective))
    parts.append(f"<h2>best {min(top, len(rows))} runs by {escape(objective)}</h2>"
                 f"<table><tr>{head}</tr>{''.join(body)}</table>")
    tested = test_rows(a, sweep_id, objective)
    if tested:
        tcols = [*varying, f"train_{objective}", objective, "run_id"]
        thead = "".join(f"<th>{escape(c if c != objective else f'test {objective}')}</th>" for c in tcols)
        tbody = "".join("<tr>" + "".join(
            f"<td>{escape(f'{v:.6g}' if isinstance(v, float) else str(v))}</td>"
            for v in [r["params"].get(n) for n in varying] + [r.get(c) for c in tcols[len(varying):]]) + "</tr>"
            for r in tested)
        parts.append(f"<h2>walk-forward: the chosen sets on the test window (sweep {escape(sweep_id + TEST_SUFFIX)})"
                     f"</h2><table><tr>{thead}</tr>{tbody}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
