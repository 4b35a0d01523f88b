"""Import precomputed embeddings in the clip-retrieval layout (as LAION publishes for LAION-5B).

`<dir>/img_emb/img_emb_<i>.npy`, `<dir>/text_emb/text_emb_<i>.npy` (optional) and
`<dir>/metadata/metadata_<i>.parquet` hold the same rows in the same order. One Spark task per part
reads them (`np.load(allow_pickle=False)`: never unpickles input) and the rows are joined to the
alive samples on `url` or `key`; a sample with no row is removed with reason `no_embedding`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.core import io
from pipeline.core.decisions import write_decisions
from pipeline.core.stage import RunContext
from schemas import EMBEDDINGS

_PART = re.compile(r"metadata_(\d+)\.parquet$")

IMPORTED = T.StructType(
    [
        T.StructField("join_key", T.StringType()),
        T.StructField("part", T.IntegerType()),
        T.StructField("row", T.IntegerType()),
        T.StructField("image_emb", T.ArrayType(T.FloatType())),
        T.StructField("text_emb", T.ArrayType(T.FloatType())),
    ]
)


class PrecomputedError(ValueError):
    """The precomputed folder does not have the clip-retrieval layout."""


def list_parts(root: str) -> list[int]:
    """Part numbers present under metadata/, each checked to have its img_emb file."""
    fs, p = io.filesystem(root)
    parts = sorted(int(m.group(1)) for f in fs.glob(posixpath.join(p, "metadata", "metadata_*.parquet"))
                   if (m := _PART.search(f)))
    if not parts:
        raise PrecomputedError(f"{root}: no metadata/metadata_<i>.parquet files")
    for i in parts:
        if not fs.exists(posixpath.join(p, "img_emb", f"img_emb_{i}.npy")):
            raise PrecomputedError(f"{root}: metadata_{i}.parquet has no img_emb/img_emb_{i}.npy")
    return parts


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _load_npy(root: str, folder: str, i: int) -> np.ndarray | None:
    fs, p = io.filesystem(posixpath.join(root, folder, f"{folder}_{i}.npy"))
    if not fs.exists(p):
        return None
    with fs.open(p, "rb") as f:
        return _normalise(np.load(f, allow_pickle=False))


def read_part(root: str, i: int, join_on: str) -> Iterator[tuple]:
    """Rows (join key, part, row, image_emb, text_emb) of one part."""
    fs, p = io.filesystem(posixpath.join(root, "metadata", f"metadata_{i}.parquet"))
    keys = pq.read_table(p, filesystem=fs, columns=[join_on]).column(join_on).to_pylist()
    img = _load_npy(root, "img_emb", i)
    txt = _load_npy(root, "text_emb", i)
    if len(keys) != len(img) or (txt is not None and len(txt) != len(img)):
        raise PrecomputedError(f"{root}: part {i} has {len(keys)} metadata rows but {len(img)} embeddings")
    for row, key in enumerate(keys):
        yield (None if key is None else str(key), i, row, img[row].tolist(),
               None if txt is None else txt[row].tolist())


def import_precomputed(ctx: RunContext, alive: DataFrame, out_dir: str) -> dict[str, Any]:
    """Join the precomputed rows to `alive`; write EMBEDDINGS parts and `no_embedding` decisions."""
    cfg = ctx.cfg.embed
    root, join_on = cfg.precomputed, cfg.join_on
    parts = list_parts(root)
    rows = ctx.spark.sparkContext.parallelize(parts, len(parts)).flatMap(lambda i: read_part(root, i, join_on))
    first = Window.partitionBy("join_key").orderBy("part", "row")
    imported = (
        ctx.spark.createDataFrame(rows, IMPORTED)
        .where("join_key IS NOT NULL")
        .withColumn("rank", F.row_number().over(first))
        .where("rank = 1")
        .drop("rank", "part", "row")
    )
    joined = alive.select("sample_id", "uid", F.col(join_on).alias("join_key")).join(imported, "join_key", "left")
    score = F.aggregate(F.zip_with("image_emb", "text_emb", lambda a, b: a * b), F.lit(0.0).cast("float"),
                        lambda acc, v: acc + v)
    found = joined.where("image_emb IS NOT NULL").withColumn("clip_score", score.cast("float"))
    found.select(*EMBEDDINGS.names).write.mode("overwrite").parquet(f"{out_dir}/parts")
    missing = (
        joined.where("image_emb IS NULL")
        .select("sample_id", "uid")
        .withColumn("stage", F.lit("embed"))
        .withColumn("reason", F.lit("no_embedding"))
        .withColumn("score", F.lit(None).cast("double"))
        .withColumn("matched_uid", F.lit(None).cast("string"))
        .withColumn("matched_sample_id", F.lit(None).cast("string"))
    )
    removed = write_decisions(ctx, missing, out_dir)
    return {"embedded": ctx.spark.read.parquet(f"{out_dir}/parts").count(), "parts": len(parts), "removed": removed}
