"""The numbers behind a run's report, read back from the tables the stages wrote.

Aggregations run in Spark (a few small jobs, no shuffle of the samples table); only per-group counts,
one row per cluster and the locations of a capped number of thumbnail samples per reason reach the
driver. Kept samples are read from the export's Parquet files (they carry cluster id and CLIP score). Every function
returns plain data (what `report.json` holds); a section a run has no data for is None or empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipeline.core import io
from pipeline.core.sample_columns import aspect_ratio, caption_chars, short_side
from pipeline.core.stage import RunContext, Stage
from pipeline.core.tables import cluster_stats_df, decisions_df, embeddings_df, samples_df
from pipeline.language import caption_language, detector_available
from pipeline.prune.select import seeded_hash
from schemas import EXPORT_ROWS, spark_schema

BINS = 30
THUMBS_PER_GROUP = 12


def ledger_flow(ledger: dict[str, Any], decision_stages: Sequence[str]) -> list[dict[str, Any]]:
    """From input to kept: the samples that reached each step and what it removed, by reason
    (ingest removes the quarantined ones)."""
    rows = [{"stage": "ingest", "in": ledger["input"], "removed": dict(ledger["quarantined"])}]
    alive = ledger["input"] - sum(ledger["quarantined"].values())
    for stage in decision_stages:
        removed = dict(ledger["removed"].get(stage, {}))
        rows.append({"stage": stage, "in": alive, "removed": removed})
        alive -= sum(removed.values())
    rows.append({"stage": "kept", "in": alive, "removed": {}})
    return rows


def stage_times(stages: Sequence[Stage], manifests: dict[str, dict[str, Any]], ledger: dict[str, Any]) -> list[dict]:
    """Per stage in run order: seconds, the samples it processed (those alive when it ran; the
    input for ingest) and the throughput."""
    alive = ledger["input"]
    rows = []
    for stage in stages:
        seconds = manifests[stage.name]["seconds"]
        rows.append({"stage": stage.name, "seconds": seconds, "samples": alive,
                     "samples_per_s": round(alive / seconds, 1) if seconds else None})
        if stage.name == "ingest":
            alive -= sum(ledger["quarantined"].values())
        elif stage.removes_samples:
            alive -= sum(ledger["removed"].get(stage.name, {}).values())
    return rows


def _in_group(keys: Sequence[str], values: tuple) -> Column:
    return reduce(lambda a, b: a & b, [F.col(k) == v for k, v in zip(keys, values)], F.lit(True))


def histograms(df: DataFrame, keys: Sequence[str], value: str, split: str | None = None, bins: int = BINS,
               include: dict[tuple, Sequence[float]] | None = None) -> dict[tuple, dict[str, Any]]:
    """Per group of `keys` (one group if none): {"edges", "counts": {split value: counts}} of the
    non-null `value`s, in `bins` equal bins over the group's range widened to `include[group]`
    (thresholds, so their lines fall on the plot). Two Spark jobs whatever the number of groups."""
    include = include or {}
    values = df.where(F.col(value).isNotNull())
    spans: dict[tuple, tuple[float, float]] = {}
    for r in values.groupBy(*keys).agg(F.min(value).alias("lo"), F.max(value).alias("hi")).collect():
        group = tuple(r[k] for k in keys)
        extra = list(include.get(group, ()))
        lo, hi = min([float(r["lo"]), *extra]), max([float(r["hi"]), *extra])
        spans[group] = (lo, hi if hi > lo else lo + 1.0)
    if not spans:
        return {}
    lo_col = hi_col = None
    for group, (lo, hi) in spans.items():
        cond = _in_group(keys, group)
        lo_col = F.when(cond, lo) if lo_col is None else lo_col.when(cond, lo)
        hi_col = F.when(cond, hi) if hi_col is None else hi_col.when(cond, hi)
    scaled = (F.col(value) - lo_col) / (hi_col - lo_col) * bins
    bucket = F.least(F.floor(scaled), F.lit(bins - 1)).cast("int").alias("_bin")
    split_col = (F.col(split) if split else F.lit("all")).alias("_split")
    out = {g: {"edges": [lo + (hi - lo) * i / bins for i in range(bins + 1)], "counts": {}} for g, (lo, hi) in spans.items()}
    for r in values.groupBy(*keys, split_col, bucket).count().collect():
        counts = out[tuple(r[k] for k in keys)]["counts"].setdefault(r["_split"], [0] * bins)
        counts[r["_bin"]] = r["count"]
    return out


def kept_df(ctx: RunContext) -> DataFrame:
    """The exported samples (EXPORT_ROWS), read from the shard Parquet files export's manifest lists."""
    export_dir = ctx.stage_dir("export")
    paths = [f"{export_dir}/{s['parquet']}" for s in io.read_json(f"{export_dir}/manifest.json")["shards"]]
    schema = spark_schema(EXPORT_ROWS)
    return ctx.spark.read.schema(schema).parquet(*paths) if paths else ctx.spark.createDataFrame([], schema)


def all_decisions(ctx: RunContext) -> DataFrame | None:
    """Every decision row of the run's finished decision stages (None when there are none)."""
    tables = [decisions_df(ctx, stage) for stage in ctx.decision_stages]
    return reduce(DataFrame.unionByName, tables) if tables else None


def _ordered(groups: dict[tuple[str, str], Any], decision_stages: Sequence[str]) -> list[tuple[tuple[str, str], Any]]:
    order = {name: i for i, name in enumerate(decision_stages)}
    return sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][1]))


def decision_scores(ctx: RunContext, stages: Sequence[Stage]) -> list[dict[str, Any]]:
    """Per (stage, reason) that has scores: histograms of the removed samples' `score` and, where
    the stage's rule scores a sample on its own (`Stage.kept_scores`), of the kept samples' score
    under the same rule, on the same bins; the threshold the stage compared it to when it declares
    one (`Stage.thresholds(cfg)`), and what the score measures (`Stage.score_labels`)."""
    decisions = all_decisions(ctx)
    if decisions is None:
        return []
    kept = kept_df(ctx).select("sample_id", "uid")
    parts = [decisions.select("stage", "reason", "score", F.lit("removed").alias("set"))]
    kept_scored = set()
    for stage in stages:
        if stage.name not in ctx.decision_stages:
            continue
        for reason, scores in stage.kept_scores(ctx, kept).items():
            kept_scored.add((stage.name, reason))
            parts.append(scores.select(F.lit(stage.name).alias("stage"), F.lit(reason).alias("reason"), "score",
                                       F.lit("kept").alias("set")))
    scored = reduce(DataFrame.unionByName, parts)
    thresholds = {(s.name, reason): value for s in stages for reason, value in s.thresholds(ctx.cfg).items()}
    labels = {(s.name, reason): label for s in stages for reason, label in s.score_labels.items()}
    hists = histograms(scored, ["stage", "reason"], "score", split="set",
                       include={k: [v] for k, v in thresholds.items()})
    out = []
    for (stage, reason), h in _ordered(hists, ctx.decision_stages):
        if "removed" not in h["counts"]:
            continue  # the rule removed nothing with a score: no histogram of it
        zeros = [0] * (len(h["edges"]) - 1)
        out.append({"stage": stage, "reason": reason, "edges": h["edges"], "counts": h["counts"]["removed"],
                    "kept": h["counts"].get("kept", zeros) if (stage, reason) in kept_scored else None,
                    "threshold": thresholds.get((stage, reason)),
                    "label": labels.get((stage, reason), "score the rule compared")})
    return out


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

# the numbers that describe a sample, as columns of the samples table
SAMPLE_METRICS: dict[str, tuple[str, Callable[[], Column]]] = {
    "short_side": ("shorter side (pixels)", short_side),
    "aspect_ratio": ("aspect ratio (long side / short side)", aspect_ratio),
    "caption_chars": ("caption length (characters)", lambda: caption_chars(F.col("caption"))),
}


def sample_statistics(ctx: RunContext) -> dict[str, Any]:
    """The output set beside what the steps removed (usable samples only): per metric of
    SAMPLE_METRICS a histogram of kept and removed with their exact quantiles, the image format
    mix, and the caption languages when the run detected them (basic_filter.languages)."""
    kept_ids = kept_df(ctx).select("sample_id", F.lit("kept").alias("set"))
    usable = (samples_df(ctx).where("quarantine_reason IS NULL")
              .join(kept_ids, "sample_id", "left").withColumn("set", F.coalesce("set", F.lit("removed"))))
    metric = F.explode(F.array(*[F.struct(F.lit(name).alias("metric"), column().cast("double").alias("value"))
                                 for name, (_, column) in SAMPLE_METRICS.items()])).alias("m")
    long = usable.select("set", metric).select("set", "m.metric", "m.value")
    hists = histograms(long, ["metric"], "value", split="set")
    quantiles = {(r["metric"], r["set"]): [float(v) for v in r["q"]] for r in long.where(F.col("value").isNotNull())
                 .groupBy("metric", "set").agg(F.percentile("value", list(QUANTILES)).alias("q")).collect()}
    metrics = []
    for name, (label, _) in SAMPLE_METRICS.items():
        h = hists.get((name,))
        if h is None:
            continue
        zeros = [0] * (len(h["edges"]) - 1)
        metrics.append({"metric": name, "label": label, "edges": h["edges"],
                        "kept": h["counts"].get("kept", zeros), "removed": h["counts"].get("removed", zeros),
                        "quantiles": {s: dict(zip(map(str, QUANTILES), quantiles[(name, s)]))
                                      for s in ("kept", "removed") if (name, s) in quantiles}})
    formats: dict[str, dict[str, int]] = {}
    for r in usable.groupBy("set", F.coalesce("image_ext", F.lit("none")).alias("ext")).count().collect():
        formats.setdefault(r["ext"], {"kept": 0, "removed": 0})[r["set"]] = r["count"]
    languages = None
    if "basic_filter" in ctx.decision_stages and ctx.cfg.basic_filter.languages and detector_available():
        languages = {}
        rows = usable.select("set", caption_language(F.col("caption")).lang.alias("lang"))
        for r in rows.groupBy("set", F.coalesce("lang", F.lit("none")).alias("lang")).count().collect():
            languages.setdefault(r["lang"], {"kept": 0, "removed": 0})[r["set"]] = r["count"]
    return {"metrics": metrics, "formats": dict(sorted(formats.items())),
            "languages": dict(sorted(languages.items())) if languages is not None else None}


def duplicate_groups(ctx: RunContext) -> list[dict[str, Any]]:
    """Per (stage, reason) whose decisions name a matched sample: how many groups (a kept sample and
    the samples removed as its duplicates) there are of each size."""
    decisions = all_decisions(ctx)
    if decisions is None:
        return []
    sizes = (
        decisions.where(F.col("matched_sample_id").isNotNull())
        .groupBy("stage", "reason", "matched_sample_id").count()
        .groupBy("stage", "reason", (F.col("count") + 1).alias("size")).count()
        .collect()
    )
    groups: dict[tuple[str, str], dict[int, int]] = {}
    for r in sizes:
        groups.setdefault((r["stage"], r["reason"]), {})[r["size"]] = r["count"]
    return [{"stage": stage, "reason": reason, "groups": sum(by_size.values()),
             "removed": sum((size - 1) * n for size, n in by_size.items()),
             "sizes": {str(size): by_size[size] for size in sorted(by_size)}}
            for (stage, reason), by_size in _ordered(groups, ctx.decision_stages)]


def clip_scores(ctx: RunContext) -> dict[str, Any] | None:
    """Histogram of the embedded samples' CLIP scores: kept, and removed by a later step (None
    without embed)."""
    if "embed" not in ctx.fingerprints:
        return None
    scores = embeddings_df(ctx).select("clip_score", F.lit("all").alias("set")).unionByName(
        kept_df(ctx).select("clip_score", F.lit("kept").alias("set")))
    hist = histograms(scores, [], "clip_score", split="set").get(())
    if hist is None:
        return None
    zeros = [0] * (len(hist["edges"]) - 1)
    every, kept = hist["counts"].get("all", zeros), hist["counts"].get("kept", zeros)
    return {"edges": hist["edges"], "kept": kept, "removed": [a - k for a, k in zip(every, kept)]}


def cluster_numbers(ctx: RunContext) -> dict[str, Any] | None:
    """Per cluster: size, kept samples, kept fraction and DBP complexity; and the histogram of
    cluster sizes (None when the run did not cluster)."""
    if "cluster" not in ctx.fingerprints:
        return None
    kept_by_cluster = {r["cluster_id"]: r["count"] for r in kept_df(ctx).groupBy("cluster_id").count().collect()}
    clusters = []
    for r in sorted(cluster_stats_df(ctx).select("cluster_id", "size", "complexity").collect()):
        kept = kept_by_cluster.get(r["cluster_id"], 0)
        clusters.append({"cluster_id": r["cluster_id"], "size": r["size"], "kept": kept,
                         "kept_fraction": kept / r["size"] if r["size"] else None, "complexity": r["complexity"]})
    sizes = np.array([c["size"] for c in clusters], dtype=np.int64)
    counts, edges = np.histogram(sizes, bins=min(BINS, max(len(set(sizes.tolist())), 1)))
    return {"k": len(clusters), "empty": int((sizes == 0).sum()), "clusters": clusters,
            "size_histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}


def _group_sizes(ledger: dict[str, Any]) -> dict[str, int]:
    """Thumbnail group -> its number of samples, from the ledger."""
    sizes = {"kept": ledger["kept"]}
    sizes.update({f"{stage}: {reason}": n for stage, reasons in ledger["removed"].items() for reason, n in reasons.items()})
    sizes.update({f"quarantined: {reason}": n for reason, n in ledger["quarantined"].items()})
    return sizes


def thumbnail_rows(ctx: RunContext, ledger: dict[str, Any], per_group: int = THUMBS_PER_GROUP) -> list[dict[str, Any]]:
    """Up to `per_group` samples for "kept", for each "stage: reason" removed and each
    "quarantined: reason", with where to read their image bytes. The pick is seeded: each group's
    rows pass a hash filter sized from the ledger to ~4x `per_group`, and the smallest hashes win,
    so no task ever sorts a whole group."""
    parts = [kept_df(ctx).select("sample_id", F.lit("kept").alias("group"), F.lit(None).cast("double").alias("score"))]
    decisions = all_decisions(ctx)
    if decisions is not None:
        parts.append(decisions.select("sample_id", F.concat_ws(": ", "stage", "reason").alias("group"), "score"))
    samples = samples_df(ctx)
    parts.append(samples.where(F.col("quarantine_reason").isNotNull()).select(
        "sample_id", F.concat(F.lit("quarantined: "), F.col("quarantine_reason")).alias("group"),
        F.lit(None).cast("double").alias("score")))
    draw = (F.pmod(seeded_hash(ctx.cfg.seed), F.lit(1 << 40)) / float(1 << 40))
    keep_below = None
    for group, size in _group_sizes(ledger).items():
        share = min(1.0, 4.0 * per_group / size) if size else 0.0
        cond = F.col("group") == group
        keep_below = F.when(cond, share) if keep_below is None else keep_below.when(cond, share)
    picked = (
        reduce(DataFrame.unionByName, parts)
        .withColumn("_draw", draw)
        .where(F.col("_draw") < keep_below)
        .withColumn("_rank", F.row_number().over(Window.partitionBy("group").orderBy("_draw", "sample_id")))
        .where(F.col("_rank") <= per_group)
    )
    columns = ["sample_id", "shard", "image_offset", "image_bytes", "caption", "width", "height", "image_ext"]
    rows = samples.select(*columns).join(F.broadcast(picked), "sample_id").collect()
    return [r.asDict() for r in sorted(rows, key=lambda r: (r["group"], r["_rank"]))]
