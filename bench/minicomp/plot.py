"""A hand-written SVG plot of a score vs keep fraction, one series per method."""

from __future__ import annotations

from pathlib import Path

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def write_svg(cells: list[dict], path: Path, chance: float, metric: str = "average") -> None:
    """Plot each cell's mean `metric` (error bar = std over seeds) against the fraction of the usable
    pool it kept, one series per method."""
    ok = [c for c in cells if metric in c]
    w, h, m = 560, 360, 50
    legend = 90  # room right of the plot for the method names
    top = max([c[metric]["mean"] + c[metric]["std"] for c in ok] + [chance]) * 1.1 or 1.0

    def xy(frac: float, acc: float) -> tuple[float, float]:
        return m + frac * (w - 2 * m), h - m - acc / top * (h - 2 * m)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + legend}" height="{h}" font-family="sans-serif" '
           f'font-size="11">', f'<rect width="{w + legend}" height="{h}" fill="white"/>',
           f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">fraction of the usable pool kept</text>',
           f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">{metric} score</text>']
    for i in range(6):
        x, _ = xy(i / 5, 0)
        _, y = xy(0, top * i / 5)
        out.append(f'<text x="{x}" y="{h - m + 14}" text-anchor="middle">{i / 5:.1f}</text>')
        out.append(f'<text x="{m - 4}" y="{y + 4}" text-anchor="end">{top * i / 5:.2f}</text>')
    x0, yc = xy(0, chance)
    out.append(f'<line x1="{x0}" y1="{yc}" x2="{w - m}" y2="{yc}" stroke="grey" stroke-dasharray="4"/>')
    methods = sorted({c["method"] for c in ok})
    for i, method in enumerate(methods):
        colour = COLOURS[i % len(COLOURS)]
        pts = sorted((c["keep_fraction"], c[metric]["mean"], c[metric]["std"]) for c in ok if c["method"] == method)
        coords = [xy(f, a) for f, a, _ in pts]
        if len(coords) > 1:
            path_d = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(f'<polyline points="{path_d}" fill="none" stroke="{colour}"/>')
        for (f, a, s), (x, y) in zip(pts, coords):
            _, lo = xy(f, a - s)
            _, hi = xy(f, a + s)
            out.append(f'<line x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}" stroke="{colour}"/>')
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>')
        out.append(f'<text x="{w - m + 4}" y="{m + 14 * i}" fill="{colour}">{method}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
