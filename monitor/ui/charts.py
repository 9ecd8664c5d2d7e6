"""Charts as inline SVG, rendered on the server: no JavaScript, nothing fetched by the browser.

Three shapes: :func:`time_chart` (metric series over time with 95% confidence bands, hollow
points for partial windows, vertical alert marks), :func:`reliability_chart` (one window's
reliability diagram) and :func:`gauge` (a detector statistic against its threshold).

The markup is meant to be read by tests too: every chart is ``<svg class="chart"
data-chart=NAME data-series=N>``, every series a ``<g class="series" data-series=NAME
data-points=N>`` holding one ``circle.pt`` per point, every alert mark a ``line.alert-mark``.
Each point carries a ``<title>`` (the browser shows it on hover).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

from markupsafe import Markup, escape

__all__ = ["Point", "Series", "Mark", "time_chart", "reliability_chart", "gauge", "PALETTE"]

# colour-blind-safe (Okabe-Ito), in the order series are drawn
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")


@dataclass(frozen=True)
class Point:
    x: datetime
    y: float | None
    lo: float | None = None  # 95% CI bounds, drawn as a band
    hi: float | None = None
    hollow: bool = False  # a partial window (too little evidence to alert on)
    title: str = ""


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]


@dataclass(frozen=True)
class Mark:
    x: datetime
    label: str
    resolved: bool = False
    href: str | None = None


@dataclass
class _Frame:
    width: int
    height: int
    left: int = 46
    right: int = 22
    top: int = 26
    bottom: int = 40
    x0: float = 0.0
    x1: float = 1.0
    y0: float = 0.0
    y1: float = 1.0
    extra: list[str] = field(default_factory=list)

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - self.bottom - (y - self.y0) / span * (self.height - self.top - self.bottom)


def _num(v: float) -> str:
    return f"{v:.1f}"


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _time_label(ts: float, span: float) -> str:
    d = datetime.fromtimestamp(ts, timezone.utc)
    return d.strftime("%H:%M:%S" if span < 600 else "%H:%M" if span < 86400 else "%m-%d %H:%M")


def _open(name: str, f: _Frame, n_series: int, label: str) -> list[str]:
    return [f'<svg class="chart" data-chart="{escape(name)}" data-series="{n_series}" role="img" '
            f'aria-label="{escape(label)}" viewBox="0 0 {f.width} {f.height}" width="{f.width}" height="{f.height}" '
            'xmlns="http://www.w3.org/2000/svg">',
            f'<text class="chart-title" x="{f.left}" y="16">{escape(label)}</text>']


def _y_axis(f: _Frame, fmt: str = "{:g}") -> list[str]:
    out = []
    for t in _nice_ticks(f.y0, f.y1, 4):
        y = _num(f.py(t))
        out.append(f'<line class="grid" x1="{f.left}" x2="{f.width - f.right}" y1="{y}" y2="{y}"/>'
                   f'<text class="tick" x="{f.left - 4}" y="{y}" text-anchor="end" dy="0.32em">{fmt.format(t)}</text>')
    return out


def _x_time_axis(f: _Frame) -> list[str]:
    out = []
    span = f.x1 - f.x0
    ticks = [f.x0 + span * i / 4 for i in range(5)] if span > 0 else [f.x0]
    for t in ticks:
        x = _num(f.px(t))
        out.append(f'<text class="tick" x="{x}" y="{f.height - f.bottom + 14}" text-anchor="middle">'
                   f'{escape(_time_label(t, span))}</text>')
    return out


def _legend(f: _Frame, names: Sequence[str]) -> list[str]:
    out, x = [], f.left
    y = f.height - 8
    for i, name in enumerate(names):
        out.append(f'<g class="legend-item"><rect x="{x}" y="{y - 8}" width="10" height="10" '
                   f'fill="{PALETTE[i % len(PALETTE)]}"/><text class="legend" x="{x + 14}" y="{y}">{escape(name)}</text></g>')
        x += 22 + 7 * len(name)
    return out


def time_chart(name: str, label: str, series: Sequence[Series], marks: Sequence[Mark] = (),
               y_range: tuple[float | None, float | None] = (0.0, 1.0), width: int = 640, height: int = 230) -> Markup:
    """Series over time with CI bands; a None end of ``y_range`` fits the data (values and bands).
    Empty series are kept in the legend (and counted) but draw nothing."""
    f = _Frame(width, height)
    xs = [p.x.timestamp() for s in series for p in s.points] + [m.x.timestamp() for m in marks]
    f.x0, f.x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if f.x1 == f.x0:
        f.x0, f.x1 = f.x0 - 30, f.x1 + 30
    ys = [v for s in series for p in s.points for v in (p.y, p.lo, p.hi) if _finite(v)]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 0.05
    f.y0 = lo - pad if y_range[0] is None else y_range[0]
    f.y1 = hi + pad if y_range[1] is None else y_range[1]
    out = _open(name, f, len(series), label)
    out += _y_axis(f) + _x_time_axis(f)
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = [p for p in s.points if _finite(p.y)]
        out.append(f'<g class="series" data-series="{escape(s.name)}" data-points="{len(pts)}">')
        band = [p for p in pts if _finite(p.lo) and _finite(p.hi)]
        if len(band) >= 2:
            upper = " ".join(f"{_num(f.px(p.x.timestamp()))},{_num(f.py(min(f.y1, p.hi)))}" for p in band)  # type: ignore[arg-type]
            lower = " ".join(f"{_num(f.px(p.x.timestamp()))},{_num(f.py(max(f.y0, p.lo)))}" for p in reversed(band))  # type: ignore[arg-type]
            out.append(f'<polygon class="band" fill="{color}" points="{upper} {lower}"/>')
        if len(pts) >= 2:
            d = " ".join(f"{'M' if j == 0 else 'L'}{_num(f.px(p.x.timestamp()))},{_num(f.py(p.y))}"  # type: ignore[arg-type]
                         for j, p in enumerate(pts))
            out.append(f'<path class="line" stroke="{color}" d="{d}"/>')
        for p in pts:
            cx, cy = _num(f.px(p.x.timestamp())), _num(f.py(p.y))  # type: ignore[arg-type]
            fill = "white" if p.hollow else color
            tip = p.title or f"{s.name}: {p.y:.3f}"
            out.append(f'<circle class="pt{" partial" if p.hollow else ""}" cx="{cx}" cy="{cy}" r="3.2" '
                       f'stroke="{color}" fill="{fill}"><title>{escape(tip)}</title></circle>')
        out.append("</g>")
    for m in marks:
        x = _num(f.px(m.x.timestamp()))
        line = (f'<line class="alert-mark{" resolved" if m.resolved else ""}" x1="{x}" x2="{x}" y1="{f.top}" '
                f'y2="{f.height - f.bottom}"><title>{escape(m.label)}</title></line>')
        out.append(f'<a href="{escape(m.href)}">{line}</a>' if m.href else line)
    out += _legend(f, [s.name for s in series])
    out.append("</svg>")
    return Markup("".join(out))


def reliability_chart(name: str, label: str, table: dict, size: int = 240) -> Markup:
    """A reliability diagram: observed accuracy against mean probe score per equal-width bin
    (``monitor.report.plots.reliability_table``), bars for bin counts, the diagonal for reference."""
    f = _Frame(size, size, left=34, right=8, top=24, bottom=30)
    f.x0, f.x1, f.y0, f.y1 = 0.0, 1.0, 0.0, 1.0
    out = _open(name, f, 1, label) + _y_axis(f)
    for t in (0.0, 0.5, 1.0):
        out.append(f'<text class="tick" x="{_num(f.px(t))}" y="{size - f.bottom + 13}" text-anchor="middle">{t:g}</text>')
    out.append(f'<line class="diagonal" x1="{_num(f.px(0))}" y1="{_num(f.py(0))}" x2="{_num(f.px(1))}" y2="{_num(f.py(1))}"/>')
    counts = table.get("count") or []
    top = max(counts, default=0) or 1
    edges = table.get("edges") or []
    for i, c in enumerate(counts):
        if c and i + 1 < len(edges):
            x, w = f.px(edges[i]), f.px(edges[i + 1]) - f.px(edges[i])
            h = 0.25 * (f.py(0) - f.py(1)) * c / top
            out.append(f'<rect class="count" x="{_num(x + 1)}" y="{_num(f.py(0) - h)}" width="{_num(w - 2)}" '
                       f'height="{_num(h)}"><title>{c} samples</title></rect>')
    pts = [(mp, fr, c) for mp, fr, c in zip(table.get("mean_p") or [], table.get("freq") or [], counts) if c]
    out.append(f'<g class="series" data-series="reliability" data-points="{len(pts)}">')
    if len(pts) >= 2:
        d = " ".join(f"{'M' if j == 0 else 'L'}{_num(f.px(mp))},{_num(f.py(fr))}" for j, (mp, fr, _) in enumerate(pts))
        out.append(f'<path class="line" stroke="{PALETTE[0]}" d="{d}"/>')
    for mp, fr, c in pts:
        out.append(f'<circle class="pt" cx="{_num(f.px(mp))}" cy="{_num(f.py(fr))}" r="3.2" fill="{PALETTE[0]}" '
                   f'stroke="{PALETTE[0]}"><title>score {mp:.2f}: accuracy {fr:.2f} (n={c})</title></circle>')
    out.append("</g></svg>")
    return Markup("".join(out))


def gauge(name: str, label: str, value: float | None, threshold: float | None, width: int = 560) -> Markup:
    """A horizontal bar: the detector's statistic against its threshold (the red line)."""
    height = 46
    f = _Frame(width, height, left=8, right=8, top=20, bottom=8)
    top = max([v for v in (value, threshold) if _finite(v)], default=1.0) * 1.25 or 1.0
    f.x0, f.x1 = 0.0, top
    out = [f'<svg class="chart gauge" data-chart="{escape(name)}" data-series="1" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text class="chart-title" x="{f.left}" y="13">{escape(label)}</text>',
           f'<rect class="track" x="{f.left}" y="{f.top}" width="{width - f.left - f.right}" height="14"/>']
    n = 1 if _finite(value) else 0
    out.append(f'<g class="series" data-series="statistic" data-points="{n}">')
    if n:
        over = _finite(threshold) and value >= threshold  # type: ignore[operator]
        out.append(f'<rect class="bar{" over" if over else ""}" x="{f.left}" y="{f.top}" '
                   f'width="{_num(f.px(value) - f.left)}" height="14"><title>statistic {value:.3g}</title></rect>')  # type: ignore[arg-type]
    out.append("</g>")
    if _finite(threshold):
        x = _num(f.px(threshold))  # type: ignore[arg-type]
        out.append(f'<line class="threshold" x1="{x}" x2="{x}" y1="{f.top - 4}" y2="{f.top + 18}">'
                   f'<title>threshold {threshold:.3g}</title></line>')
    out.append("</svg>")
    return Markup("".join(out))
