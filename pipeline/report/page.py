"""The report's HTML page: one self-contained file (inline CSS, inline SVG, base64 thumbnails).

Each plot is a `<section id="plot-...">` (ids and order in SECTIONS); a section whose data the run does not
have says so instead of being left out.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

from pipeline.report import svg

CSS = """
body { font-family: sans-serif; color: #222; margin: 24px auto; max-width: 1140px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin: 0 0 8px; }
h3 { font-size: 14px; margin: 14px 0 4px; color: #444; }
section { border: 1px solid #ddd; border-radius: 6px; padding: 14px 16px; margin: 16px 0; }
table { border-collapse: collapse; font-size: 13px; }
td, th { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; }
td:first-child, th:first-child { text-align: left; }
.meta { color: #555; font-size: 13px; }
.empty { color: #777; font-style: italic; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; }
figure { margin: 0; width: 112px; font-size: 10px; color: #444; }
figure img, figure .noimg { width: 112px; height: 112px; object-fit: contain; background: #f3f3f3; display: block; }
figure .noimg { display: flex; align-items: center; justify-content: center; color: #999; font-size: 11px; }
figcaption { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
"""


def _empty(message: str) -> str:
    return f'<p class="empty">{escape(message)}</p>'


def _ledger(r: dict[str, Any]) -> str:
    ledger = r["ledger"]
    rows = [("input", ledger["input"]), ("kept", ledger["kept"])]
    rows += [(f"removed by {stage}: {reason}", n) for stage, reasons in ledger["removed"].items()
             for reason, n in reasons.items()]
    rows += [(f"quarantined: {reason}", n) for reason, n in ledger["quarantined"].items()]
    table = "".join(f"<tr><td>{escape(k)}</td><td>{v:,}</td></tr>" for k, v in rows)
    return svg.flow_chart(r["flow"], "ledger flow") + f"<table>{table}</table>"


def _stage_times(r: dict[str, Any]) -> str:
    rows = r["stages"]
    notes = [f"{row['seconds']:.1f} s, {row['samples']:,} samples"
             + (f", {row['samples_per_s']:,.1f}/s" if row["samples_per_s"] else "") for row in rows]
    return svg.hbar_chart([row["stage"] for row in rows], [row["seconds"] for row in rows], notes,
                          "seconds (as recorded in each stage's manifest)", "stage times")


def _cluster_sizes(r: dict[str, Any]) -> str:
    c = r["clusters"]
    if c is None:
        return _empty("This run has no cluster stage (cluster.enabled is false).")
    h = c["size_histogram"]
    chart = svg.histogram_chart(h["edges"], [("clusters", h["counts"], svg.PALETTE[0])], [],
                                "cluster size (samples assigned)", "clusters", "cluster sizes")
    return chart + f'<p class="meta">{c["k"]} clusters, {c["empty"]} empty.</p>'


def _cluster_kept(r: dict[str, Any]) -> str:
    c = r["clusters"]
    if c is None:
        return _empty("This run has no cluster stage (cluster.enabled is false).")
    points = [(x["complexity"], x["kept_fraction"],
               f"cluster {x['cluster_id']}: {x['kept']}/{x['size']} kept, complexity {svg.fmt(x['complexity'])}")
              for x in c["clusters"] if x["complexity"] is not None and x["kept_fraction"] is not None]
    if not points:
        return _empty("No cluster has both samples and a complexity.")
    return svg.scatter_chart(points, "complexity (DBP: d_intra x d_inter)", "kept fraction", "kept vs complexity",
                             y_range=(0.0, 1.05))


def _clip_score(r: dict[str, Any]) -> str:
    c = r["clip_score"]
    if c is None:
        return _empty("This run has no embeddings (embed.enabled is false), so no CLIP scores.")
    series = [("kept", c["kept"], svg.KEPT_COLOR), ("removed after embedding", c["removed"], svg.PALETTE[2])]
    return svg.histogram_chart(c["edges"], series, [], "CLIP score (cosine of image and caption embeddings)",
                               "samples", "clip score")


def _scores(r: dict[str, Any]) -> str:
    if not r["scores"]:
        return _empty("No decision in this run recorded a score.")
    out = []
    for i, h in enumerate(r["scores"]):
        thresholds = [("threshold", h["threshold"])] if h["threshold"] is not None else []
        series = [("removed", h["counts"], svg.color(i + 1))]
        note = "kept samples have no score under this rule (it scores pairs or matches)"
        if h["kept"] is not None:
            series.append(("kept (in the output)", h["kept"], svg.KEPT_COLOR))
            note = f"{sum(h['kept']):,} kept samples scored by the same rule"
        out.append(f"<h3>{escape(h['stage'])}: {escape(h['reason'])} ({sum(h['counts']):,} removed; "
                   f"{escape(note)})</h3>")
        out.append(svg.histogram_chart(h["edges"], series, thresholds, h["label"], "samples",
                                       f"{h['stage']} {h['reason']}", height=220))
    return "".join(out)


def _quantile_table(quantiles: dict[str, dict[str, float]]) -> str:
    if not quantiles:
        return ""
    levels = list(next(iter(quantiles.values())))
    head = "".join(f"<th>q{float(q) * 100:g}</th>" for q in levels)
    rows = "".join(f"<tr><td>{escape(s)}</td>" + "".join(f"<td>{svg.fmt(v)}</td>" for v in qs.values()) + "</tr>"
                   for s, qs in quantiles.items())
    return f"<table><tr><th></th>{head}</tr>{rows}</table>"


def _mix(title: str, mix: dict[str, dict[str, int]]) -> str:
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{v['kept']:,}</td><td>{v['removed']:,}</td></tr>" for k, v in mix.items())
    return f"<h3>{escape(title)}</h3><table><tr><th></th><th>kept</th><th>removed</th></tr>{rows}</table>"


def _samples(r: dict[str, Any]) -> str:
    s = r["samples"]
    if not s["metrics"]:
        return _empty("No usable sample in this run.")
    out = []
    for m in s["metrics"]:
        series = [("kept", m["kept"], svg.KEPT_COLOR), ("removed by a step", m["removed"], svg.PALETTE[2])]
        out.append(f"<h3>{escape(m['label'])}</h3>")
        out.append(svg.histogram_chart(m["edges"], series, [], m["label"], "samples", m["metric"], height=220))
        out.append(_quantile_table(m["quantiles"]))
    out.append(_mix("image format", s["formats"]))
    if s["languages"] is None:
        out.append('<p class="meta">Caption languages were not detected in this run (basic_filter.languages is '
                   "empty, or the [lang] extra is not installed).</p>")
    else:
        out.append(_mix("caption language", s["languages"]))
    return "".join(out)


def _duplicates(r: dict[str, Any]) -> str:
    if not r["duplicates"]:
        return _empty("No decision in this run names a matched sample (nothing was removed as a duplicate).")
    out = []
    for i, d in enumerate(r["duplicates"]):
        out.append(f"<h3>{escape(d['stage'])}: {escape(d['reason'])} ({d['groups']:,} groups, "
                   f"{d['removed']:,} removed)</h3>")
        out.append(svg.column_chart(list(d["sizes"]), list(d["sizes"].values()),
                                    "group size (the kept sample and its duplicates)", "groups",
                                    f"{d['stage']} groups", fill=svg.color(i)))
    return "".join(out)


def _thumbnails(r: dict[str, Any], images: dict[str, list[str | None]]) -> str:
    out = []
    for group, samples in r["thumbnails"].items():
        tiles = []
        for sample, uri in zip(samples, images[group]):
            tip = f"{sample['sample_id']}: {sample['caption'] or ''}"
            if sample["score"] is not None:
                tip += f" (score {svg.fmt(sample['score'])})"
            pic = f'<img src="{uri}" alt="">' if uri else '<div class="noimg">no image</div>'
            tiles.append(f'<figure title="{escape(tip)}">{pic}<figcaption>{escape(sample["caption"] or "")}'
                         f"</figcaption></figure>")
        out.append(f"<h3>{escape(group)}</h3><div class=\"grid\">{''.join(tiles)}</div>")
    return "".join(out) or _empty("No samples to show.")


Renderer = Callable[[dict[str, Any], dict[str, list[str | None]]], str]

# section id -> (heading, renderer of report data and thumbnails); the page shows them in this order
SECTIONS: dict[str, tuple[str, Renderer]] = {
    "plot-ledger": ("Ledger: from input to kept", lambda r, _: _ledger(r)),
    "plot-stage-times": ("Stage times and throughput", lambda r, _: _stage_times(r)),
    "plot-cluster-sizes": ("Cluster sizes", lambda r, _: _cluster_sizes(r)),
    "plot-cluster-kept": ("Kept fraction per cluster vs. cluster complexity", lambda r, _: _cluster_kept(r)),
    "plot-clip-score": ("CLIP score", lambda r, _: _clip_score(r)),
    "plot-samples": ("The output set: kept beside removed", lambda r, _: _samples(r)),
    "plot-scores": ("Decision scores and thresholds: removed beside kept", lambda r, _: _scores(r)),
    "plot-duplicates": ("Duplicate group sizes", lambda r, _: _duplicates(r)),
    "plot-thumbnails": ("Samples: kept, and removed per reason", _thumbnails),
}


def render(r: dict[str, Any], images: dict[str, list[str | None]]) -> str:
    """The page for report data `r` (report.json's content) and thumbnails by group."""
    sections = "".join(f'<section id="{sid}"><h2>{escape(title)}</h2>{part(r, images)}</section>'
                       for sid, (title, part) in SECTIONS.items())
    ledger = r["ledger"]
    share = f"{ledger['kept'] / ledger['input']:.1%}" if ledger["input"] else "n/a"
    header = (f"<h1>curate run report</h1><p class=\"meta\">{escape(r['run_dir'])}<br>input {escape(r['input'])}"
              f"<br>{ledger['kept']:,} of {ledger['input']:,} samples kept ({share}) in {r['export']['shards']} shards"
              f" &middot; config {r['export']['config_hash'][:12]}</p>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>curate report: '
            f"{escape(r['run_dir'])}</title><style>{CSS}</style></head><body>{header}{sections}</body></html>\n")
