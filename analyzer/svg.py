"""Small, dependency-free SVG charts for the self-contained HTML report (no CDN, no JavaScript)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

W, H = 880, 260
PAD_L, PAD_R, PAD_T, PAD_B = 72, 16, 30, 34
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]


@dataclass
class Series:
    """One line: x (ns since the epoch, or any number) and y values."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    color: str = ""
    step: bool = False  # draw as a step function (positions)
    fill: bool = False  # shade between the line and zero (drawdown)


@dataclass
class Markers:
    """Points drawn as triangles (buys up, sells down)."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    up: bool
    color: str


@dataclass
class Chart:
    """What a line chart shows."""

    title: str
    series: list[Series] = field(default_factory=list)
    markers: list[Markers] = field(default_factory=list)
    y_label: str = ""
    time_axis: bool = True


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        if v >= lo - step * 1e-9:
            ticks.append(round(v, 12))
        v += step
    return ticks


def _fmt_num(v: float) -> str:
    if v == 0:
        return "0"  # not "-0" from a tick computed as -0.0
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.4g}k"
    return f"{v:.6g}"


def _fmt_time(ns: float, span_ns: float) -> str:
    dt = datetime.fromtimestamp(ns / 1e9, UTC)
    if span_ns > 3 * 86_400e9:
        return dt.strftime("%Y-%m-%d")
    if span_ns > 86_400e9:
        return dt.strftime("%m-%d %H:%M")
    if span_ns > 120e9:
        return dt.strftime("%H:%M")
    return dt.strftime("%H:%M:%S")


def downsample(x: Sequence[float], y: Sequence[float], limit: int = 1500) -> tuple[list[float], list[float]]:
    """At most ~2*limit points, keeping each bucket's min and max so spikes stay visible."""
    n = len(x)
    if n <= 2 * limit:
        return list(x), list(y)
    size = math.ceil(n / limit)
    xs: list[float] = []
    ys: list[float] = []
    for i in range(0, n, size):
        chunk = range(i, min(n, i + size))
        lo = min(chunk, key=lambda j: y[j])
        hi = max(chunk, key=lambda j: y[j])
        for j in sorted({lo, hi}):
            xs.append(x[j])
            ys.append(y[j])
    return xs, ys


def line_chart(chart: Chart, width: int = W, height: int = H) -> str:
    """An SVG line chart with axes, grid, legend and optional buy/sell markers."""
    xs = [v for s in chart.series for v in s.x] + [v for m in chart.markers for v in m.x]
    ys = [v for s in chart.series for v in s.y] + [v for m in chart.markers for v in m.y]
    if any(s.fill for s in chart.series):
        ys.append(0.0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<text x="{PAD_L}" y="18" font-size="13" font-weight="bold">{escape(chart.title)}</text>']
    if not xs:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#888">no data</text></svg>')
        return "".join(out)
    x0, x1 = min(xs), max(xs)
    if x1 <= x0:  # one instant: widen by a visible amount (ns times are ~1e18, where +1 is lost)
        x0, x1 = x0 - max(abs(x0) * 1e-9, 1.0), x1 + max(abs(x1) * 1e-9, 1.0)
    yt = nice_ticks(min(ys), max(ys))
    y0, y1 = min(yt[0], min(ys)), max(yt[-1], max(ys))
    if y1 <= y0:
        y0, y1 = y0 - max(abs(y0) * 1e-6, 1.0), y1 + max(abs(y1) * 1e-6, 1.0)
    pw, ph = width - PAD_L - PAD_R, height - PAD_T - PAD_B

    def px(v: float) -> float:
        return PAD_L + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return PAD_T + (1 - (v - y0) / (y1 - y0)) * ph

    for t in yt:
        out.append(f'<line x1="{PAD_L}" x2="{width - PAD_R}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{PAD_L - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt_num(t)}</text>')
    for t in nice_ticks(x0, x1, 6):
        label = _fmt_time(t, x1 - x0) if chart.time_axis else _fmt_num(t)
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{PAD_T}" y2="{height - PAD_B}" stroke="#f0f0f0"/>'
                   f'<text x="{px(t):.1f}" y="{height - PAD_B + 16}" text-anchor="middle">{escape(label)}</text>')
    out.append(f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    if y0 < 0 < y1:
        out.append(f'<line x1="{PAD_L}" x2="{width - PAD_R}" y1="{py(0):.1f}" y2="{py(0):.1f}" stroke="#666" '
                   'stroke-dasharray="3,3"/>')
    legend_x = PAD_L + 16 + 7.5 * len(chart.title)  # legends sit in the title row, clear of the data
    for i, s in enumerate(chart.series):
        color = s.color or COLORS[i % len(COLORS)]
        sx, sy = downsample(s.x, s.y)
        pts: list[str] = []
        for j, (a, b) in enumerate(zip(sx, sy, strict=True)):
            if s.step and j:
                pts.append(f"{px(a):.1f},{py(sy[j - 1]):.1f}")
            pts.append(f"{px(a):.1f},{py(b):.1f}")
        if s.fill and pts:
            poly = [f"{px(sx[0]):.1f},{py(0):.1f}", *pts, f"{px(sx[-1]):.1f},{py(0):.1f}"]
            out.append(f'<polygon points="{" ".join(poly)}" fill="{color}" fill-opacity="0.25" stroke="none"/>')
        out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color}" stroke-width="1.4"/>')
        out.append(f'<rect x="{legend_x:.0f}" y="13" width="10" height="3" fill="{color}"/>'
                   f'<text x="{legend_x + 14:.0f}" y="18">{escape(s.name)}</text>')
        legend_x += 24 + 7 * len(s.name)
    for m in chart.markers:
        for a, b in zip(m.x, m.y, strict=True):
            cx, cy = px(a), py(b)
            pts3 = (f"{cx - 4:.1f},{cy + 4:.1f} {cx + 4:.1f},{cy + 4:.1f} {cx:.1f},{cy - 4:.1f}" if m.up else
                    f"{cx - 4:.1f},{cy - 4:.1f} {cx + 4:.1f},{cy - 4:.1f} {cx:.1f},{cy + 4:.1f}")
            out.append(f'<polygon class="marker-{"buy" if m.up else "sell"}" points="{pts3}" fill="{m.color}"/>')
        tip, base = (10, 18) if m.up else (18, 10)
        label = f"{m.name} ({len(m.x)})"
        out.append(f'<polygon points="{legend_x:.0f},{base} {legend_x + 8:.0f},{base} {legend_x + 4:.0f},{tip}" '
                   f'fill="{m.color}"/><text x="{legend_x + 12:.0f}" y="18">{escape(label)}</text>')
        legend_x += 24 + 7 * len(label)
    if chart.y_label:
        out.append(f'<text x="14" y="{PAD_T + ph / 2}" transform="rotate(-90 14 {PAD_T + ph / 2})" '
                   f'text-anchor="middle">{escape(chart.y_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], width: int = W) -> str:
    """Horizontal bars (green gains, red losses) with their values."""
    row = 22
    height = PAD_T + row * max(len(labels), 1) + 20
    label_w = min(260, 12 + 7 * max((len(label) for label in labels), default=4))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    if not labels:
        out.append('<text x="8" y="44" fill="#888">no data</text></svg>')
        return "".join(out)
    lo, hi = min(0.0, *values), max(0.0, *values)
    span = (hi - lo) or 1.0
    plot_w = width - label_w - 90
    zero = label_w + (0 - lo) / span * plot_w
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = PAD_T + i * row
        x_end = label_w + (v - lo) / span * plot_w
        color = "#2ca02c" if v >= 0 else "#d62728"
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
                   f'<rect x="{min(zero, x_end):.1f}" y="{y + 3}" width="{abs(x_end - zero):.1f}" height="{row - 6}" '
                   f'fill="{color}"/><text x="{max(zero, x_end) + 4:.1f}" y="{y + 14}">{_fmt_num(v)}</text>')
    out.append(f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{PAD_T}" y2="{height - 20}" stroke="#666"/></svg>')
    return "".join(out)
