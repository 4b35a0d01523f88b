"""Table schemas. Arrow is the source of truth; Spark StructTypes are derived, never written by hand."""

from __future__ import annotations

import pyarrow as pa

SAMPLES = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),  # "<source shard name>/<key>", unique per input row
        pa.field("uid", pa.string()),  # sha256 of the image bytes; null when there is no image
        pa.field("shard", pa.string(), nullable=False),  # source tar path or URL
        pa.field("shard_name", pa.string(), nullable=False),  # short name of the shard, as in sample_id
        pa.field("key", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("url", pa.string()),
        pa.field("image_ext", pa.string()),  # jpg | png | webp ...
        pa.field("image_offset", pa.int64()),  # byte offset of the image data inside the tar
        pa.field("image_bytes", pa.int64()),  # size of the encoded image
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("phash", pa.int64()),  # 64-bit DCT perceptual hash, as a signed integer
        pa.field("quarantine_reason", pa.string()),  # null when the sample is usable
        # JSON object: every column of the source parquet row and every field of the .json member
        pa.field("source", pa.string()),
    ]
)

DECISIONS = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("uid", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("score", pa.float64()),  # the value the rule compared, when there is one
        pa.field("matched_uid", pa.string()),  # the sample this one duplicates or matches
        pa.field("matched_sample_id", pa.string()),
    ]
)

EMBEDDINGS = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("uid", pa.string(), nullable=False),
        pa.field("image_emb", pa.list_(pa.float32())),  # L2-normalised
        pa.field("text_emb", pa.list_(pa.float32())),  # L2-normalised
        pa.field("clip_score", pa.float32()),  # cosine(image_emb, text_emb)
    ]
)

ASSIGNMENTS = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("uid", pa.string(), nullable=False),
        pa.field("cluster_id", pa.int32(), nullable=False),
        pa.field("dist_to_centroid", pa.float32(), nullable=False),  # 1 - cos(x, centroid)
    ]
)

CENTROIDS = pa.schema(
    [
        pa.field("cluster_id", pa.int32(), nullable=False),
        pa.field("centroid", pa.list_(pa.float32()), nullable=False),  # unit norm
    ]
)

CLUSTER_STATS = pa.schema(
    [
        pa.field("cluster_id", pa.int32(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mean_dist", pa.float64()),  # d_intra: mean(1 - cos(x, c_j)) over the cluster
        pa.field("max_dist", pa.float64()),
        pa.field("d_inter", pa.float64()),  # mean(1 - cos(c_j, c_k)) over the k nearest other centroids
        pa.field("complexity", pa.float64()),  # DBP: d_intra * d_inter
    ]
)

SCORES = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("uid", pa.string(), nullable=False),
        pa.field("score", pa.float32()),  # a filtering network's cos(image, caption)
    ]
)

EVAL_SAMPLES = pa.schema(  # decontaminate/eval_samples/: the usable images of the evaluation sets
    [
        pa.field("eval_id", pa.string(), nullable=False),  # "eval:<set path>/<shard name>/<key>" or "eval:<set path>/<file>"
        pa.field("uid", pa.string(), nullable=False),  # sha256 of the image bytes
        pa.field("phash", pa.int64(), nullable=False),
        pa.field("image_emb", pa.list_(pa.float32())),  # null unless the semantic method ran
    ]
)

EVAL_MATCHES = pa.schema(  # decontaminate/matches/: every pool sample matched, per method, best eval sample
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("uid", pa.string()),
        pa.field("eval_id", pa.string(), nullable=False),
        pa.field("eval_uid", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),  # exact | phash | semantic
        pa.field("score", pa.float64()),  # phash: Hamming distance; semantic: cosine; exact: null
    ]
)

CONTAINMENT_BY_SHARD = pa.schema(  # `curate contain A B`: how much of each shard of A is in B
    [
        pa.field("shard", pa.string(), nullable=False),  # shard name in A
        pa.field("samples", pa.int64(), nullable=False),  # usable samples of the shard
        pa.field("exact", pa.int64(), nullable=False),  # of them, with the same bytes in B
        pa.field("perceptual", pa.int64(), nullable=False),  # pHash within the threshold of one in B
        pa.field("semantic", pa.int64()),  # image cosine >= the threshold to one in B (null: not measured)
        pa.field("exact_fraction", pa.float64()),
        pa.field("perceptual_fraction", pa.float64()),
        pa.field("semantic_fraction", pa.float64()),
    ]
)

DBP_QUOTAS = pa.schema(
    [
        pa.field("cluster_id", pa.int32(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),  # samples of the cluster in the step's pool
        pa.field("d_intra", pa.float64(), nullable=False),  # mean(1 - cos(x, c_j)) over those samples
        pa.field("d_inter", pa.float64()),
        pa.field("complexity", pa.float64(), nullable=False),  # d_intra * d_inter (0 when d_inter is null)
        pa.field("target", pa.float64(), nullable=False),  # softmax(complexity / tau) * N_keep
        pa.field("quota", pa.int64(), nullable=False),  # samples kept
    ]
)

EXPORT_ROWS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # key inside the output tar (no dots)
        pa.field("uid", pa.string(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source_shard", pa.string(), nullable=False),
        pa.field("orig_key", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("url", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("image_ext", pa.string(), nullable=False),
        pa.field("cluster_id", pa.int32()),  # null when the run did not cluster
        pa.field("clip_score", pa.float32()),  # null when the run did not embed
        pa.field("passed", pa.list_(pa.string())),  # the run's steps (a kept sample passed them all)
        pa.field("source", pa.string()),  # JSON: the source parquet row + .json fields (an object in the .json member)
        pa.field("image_emb", pa.list_(pa.float32())),  # only with export.include_embeddings
        pa.field("text_emb", pa.list_(pa.float32())),  # only with export.include_embeddings
    ]
)


def spark_schema(schema: pa.Schema):
    """The Spark StructType equivalent of an Arrow schema (same names, types and nullability)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)
