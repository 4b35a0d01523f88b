"""Small inline-SVG charts for the run report: no plotting library, no scripts, no network.

Every function returns one `<svg>` element as a string, sized in pixels, with a `<title>` on each
mark so a browser shows the exact number on hover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 1100
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#8c564b", "#17becf", "#bcbd22")
KEPT_COLOR = "#59a14f"
GRID = "#e3e3e3"
TEXT = "#333"


def color(i: int) -> str:
    """The i-th categorical colour (cycling)."""
    return PALETTE[i % len(PALETTE)]


def fmt(value: float) -> str:
    """A short axis / label form of a number: 12, 0.25, 3.4k, 1.2M."""
    if value != value:  # NaN
        return "n/a"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.3g}M"
    if a >= 1e4:
        return f"{value / 1e3:.3g}k"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 12) for i in range(max(count, 1))]


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="12">'
            f"<title>{escape(title)}</title>{''.join(body)}</svg>")


def _text(x: float, y: float, s: str, anchor: str = "start", size: int = 12, extra: str = "", fill: str = TEXT) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}"{extra}>'
            f"{escape(s)}</text>")


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str) -> str:
    return (f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(w, 0):.2f}" height="{max(h, 0):.2f}" fill="{fill}">'
            f"<title>{escape(tip)}</title></rect>")


def legend(items: Sequence[tuple[str, str]], x: float, y: float, width: float) -> tuple[list[str], float]:
    """Colour swatches with labels, wrapped to `width`; (elements, height used)."""
    out, cx, cy = [], x, y
    for label, fill in items:
        w = 22 + 7 * len(label)
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 18
        out += [f'<rect x="{cx:.1f}" y="{cy:.1f}" width="12" height="12" fill="{fill}"/>', _text(cx + 16, cy + 10, label)]
        cx += w + 10
    return out, cy + 18 - y


@dataclass
class Frame:
    """A plotting area inside an SVG: data ranges mapped to pixels, with axes drawn on request."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = WIDTH
    height: int = 300
    left: int = 70
    right: int = 30
    top: int = 20
    bottom: int = 45

    def x(self, v: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (v - self.x0) / span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - self.bottom - (v - self.y0) / span * (self.height - self.top - self.bottom)

    def axes(self, xlabel: str, ylabel: str, xticks: bool = True) -> list[str]:
        out = []
        for t in nice_ticks(self.y0, self.y1):
            if self.y0 <= t <= self.y1:
                out += [f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{self.y(t):.1f}" '
                        f'y2="{self.y(t):.1f}" stroke="{GRID}"/>', _text(self.left - 6, self.y(t) + 4, fmt(t), "end")]
        if xticks:
            for t in nice_ticks(self.x0, self.x1, 8):
                if self.x0 <= t <= self.x1:
                    out.append(_text(self.x(t), self.height - self.bottom + 16, fmt(t), "middle"))
        base = self.height - self.bottom
        out += [
            f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{base}" y2="{base}" stroke="{TEXT}"/>',
            f'<line x1="{self.left}" x2="{self.left}" y1="{self.top}" y2="{base}" stroke="{TEXT}"/>',
            _text((self.left + self.width - self.right) / 2, self.height - 8, xlabel, "middle"),
            _text(14, (self.top + base) / 2, ylabel, "middle",
                  extra=f' transform="rotate(-90 14 {(self.top + base) / 2:.1f})"'),
        ]
        return out


def flow_chart(rows: Sequence[dict], title: str) -> str:
    """The ledger as a funnel: one bar per step, as long as the samples that reached it, split into
    what went on (grey) and what the step removed, by reason (colours, in the legend)."""
    total = max((r["in"] for r in rows), default=0) or 1
    label_w, bar_w, row_h = 190, WIDTH - 190 - 90, 34
    reasons: dict[str, tuple[str, int]] = {}  # "stage: reason" -> (colour, count)
    body = []
    for i, row in enumerate(rows):
        y = 10 + i * row_h
        removed = sum(row["removed"].values())
        body.append(_text(label_w - 8, y + 17, f"{row['stage']}  {row['in']:,}", "end"))
        x = label_w
        width = (row["in"] - removed) / total * bar_w
        body.append(_rect(x, y, width, 24, KEPT_COLOR if row["stage"] == "kept" else "#9aa7b1",
                          f"{row['stage']}: {row['in'] - removed:,} go on"))
        x += width
        for reason, count in row["removed"].items():
            name = f"{row['stage']}: {reason}"
            fill = color(len(reasons))
            reasons[name] = (fill, count)
            width = count / total * bar_w
            body.append(_rect(x, y, width, 24, fill, f"{name}: {count:,} removed"))
            x += width
        if removed:
            body.append(_text(x + 6, y + 17, f"-{removed:,}"))
    items, legend_h = legend([(f"{name} ({count:,})", fill) for name, (fill, count) in reasons.items()],
                             label_w, 20 + len(rows) * row_h, bar_w)
    height = int(30 + len(rows) * row_h + legend_h)
    return _svg(WIDTH, height, title, body + items)


def histogram_chart(edges: Sequence[float], series: Sequence[tuple[str, Sequence[int], str]],
                    thresholds: Sequence[tuple[str, float]], xlabel: str, ylabel: str, title: str,
                    height: int = 260) -> str:
    """Stacked histogram over bins `edges` (len = bins + 1) of one or more series, with dashed
    vertical lines at the thresholds."""
    tops = [sum(s[1][i] for s in series) for i in range(len(edges) - 1)]
    lo = min([edges[0], *(t for _, t in thresholds)])
    hi = max([edges[-1], *(t for _, t in thresholds)])
    pad = (hi - lo) * 0.02
    frame = Frame(lo - pad, hi + pad, 0, max(tops, default=0) * 1.1 or 1, height=height)
    body = frame.axes(xlabel, ylabel)
    for i in range(len(edges) - 1):
        base = 0
        for name, counts, fill in series:
            if counts[i]:
                x, w = frame.x(edges[i]), frame.x(edges[i + 1]) - frame.x(edges[i])
                body.append(_rect(x + 0.5, frame.y(base + counts[i]), w - 1, frame.y(base) - frame.y(base + counts[i]),
                                  fill, f"{name}: {counts[i]:,} in [{fmt(edges[i])}, {fmt(edges[i + 1])})"))
                base += counts[i]
    for label, value in thresholds:
        x = frame.x(value)
        right = x > frame.width * 0.75  # label on the left of a line near the right edge
        body += [f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{frame.y(0):.1f}" stroke="#c00" '
                 f'stroke-width="2" stroke-dasharray="6 4"><title>{escape(label)}: {fmt(value)}</title></line>',
                 _text(x - 4 if right else x + 4, frame.top + 12, f"{label} = {fmt(value)}", "end" if right else "start",
                       fill="#c00")]
    if len(series) > 1:
        items, _ = legend([(name, fill) for name, _, fill in series], frame.left + 10, frame.top, 600)
        body += items
    return _svg(WIDTH, height, title, body)


def scatter_chart(points: Sequence[tuple[float, float, str]], xlabel: str, ylabel: str, title: str,
                  y_range: tuple[float, float] | None = None, height: int = 320) -> str:
    """Points (x, y, hover text)."""
    xs = [p[0] for p in points] or [0.0]
    ys = [p[1] for p in points] or [0.0]
    pad = (max(xs) - min(xs)) * 0.05 or 0.5
    y0, y1 = y_range or (min(ys), max(ys))
    frame = Frame(min(xs) - pad, max(xs) + pad, y0, y1, height=height)
    body = frame.axes(xlabel, ylabel)
    for x, y, tip in points:
        body.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="4" fill="{PALETTE[0]}" '
                    f'fill-opacity="0.7"><title>{escape(tip)}</title></circle>')
    return _svg(WIDTH, height, title, body)


def column_chart(categories: Sequence[str], values: Sequence[float], xlabel: str, ylabel: str, title: str,
                 fill: str = PALETTE[0], height: int = 240) -> str:
    """Vertical bars, one per category (labels under them)."""
    frame = Frame(0, max(len(categories), 1), 0, max(values, default=0) * 1.15 or 1, height=height)
    body = frame.axes(xlabel, ylabel, xticks=False)
    step = max(1, math.ceil(len(categories) / 40))
    for i, (cat, value) in enumerate(zip(categories, values)):
        x, w = frame.x(i), frame.x(i + 1) - frame.x(i)
        bar = min(w * 0.7, 90)
        body.append(_rect(x + (w - bar) / 2, frame.y(value), bar, frame.y(0) - frame.y(value), fill, f"{cat}: {fmt(value)}"))
        if i % step == 0:
            body.append(_text(x + w / 2, frame.height - frame.bottom + 16, cat, "middle"))
        if len(categories) <= 40:
            body.append(_text(x + w / 2, frame.y(value) - 4, fmt(value), "middle", size=11))
    return _svg(WIDTH, height, title, body)


def hbar_chart(labels: Sequence[str], values: Sequence[float], notes: Sequence[str], xlabel: str, title: str,
               fill: str = PALETTE[0]) -> str:
    """Horizontal bars with a label on the left and a note at the end of each bar."""
    label_w, row_h = 150, 28
    height = 20 + len(labels) * row_h + 40
    frame = Frame(0, max(values, default=0) * 1.25 or 1, 0, 1, height=height, left=label_w, top=10, bottom=40)
    body = []
    for t in nice_ticks(frame.x0, frame.x1, 8):
        if t <= frame.x1:
            body += [f'<line x1="{frame.x(t):.1f}" x2="{frame.x(t):.1f}" y1="10" y2="{height - 40}" stroke="{GRID}"/>',
                     _text(frame.x(t), height - 24, fmt(t), "middle")]
    for i, (label, value, note) in enumerate(zip(labels, values, notes)):
        y = 14 + i * row_h
        body += [_text(label_w - 8, y + 15, label, "end"),
                 _rect(label_w, y, frame.x(value) - label_w, 20, fill, f"{label}: {note}"),
                 _text(frame.x(value) + 6, y + 15, note)]
    body.append(_text((label_w + WIDTH) / 2, height - 6, xlabel, "middle"))
    return _svg(WIDTH, height, title, body)
