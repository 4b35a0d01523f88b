"""SemDeDup within one concept cluster (Abbas et al. 2023; the reference code and NeMo Curator).

The cluster's samples are put in keep order (hard: farthest from the centroid first; easy: nearest
first; random: by a seeded hash of sample_id; ties by sample_id). Sample j is removed when
max_{i<j} cos(e_i, e_j) > 1 - eps, the maximum taken over ALL earlier samples, removed ones included
(the reference's column max of the upper-triangular similarity matrix). Its decision names the most
similar earlier sample (the first one on ties) and scores the cosine.

The similarities are computed in float64 over block_size x block_size tiles of that triangle, keeping
a running max per column (a later tile wins only when strictly greater, so ties go to the earliest
row as in one argmax over the whole column): memory is O(block_size²), not O(n²), and the result is
the one-block result up to float64 rounding of the dot products (~1e-16).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from pipeline.core.config import SemDedupConfig
from schemas import DECISIONS

STAGE = "semdedup"
REASON = "semantic_duplicate"
EMBEDDING_COLUMNS = {"image": ["image_emb"], "text": ["text_emb"], "image+text": ["image_emb", "text_emb"]}


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def cluster_vectors(pdf: pd.DataFrame, on: str) -> np.ndarray:
    """The vectors SemDeDup compares, float64 [n, d], unit norm: the image or text embedding, or
    for image+text both unit embeddings concatenated and scaled by 1/sqrt(2), so that the cosine
    is the mean of the image and the text cosines."""
    parts = EMBEDDING_COLUMNS[on]
    blocks = [unit_rows(np.stack(pdf[col].to_numpy())) for col in parts]
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1) / np.sqrt(len(blocks))


def random_keys(sample_ids: pd.Series, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per sample_id, independent of row order and partitioning."""
    digests = (hashlib.blake2b(f"{seed}\0{sid}".encode(), digest_size=8).digest() for sid in sample_ids)
    return np.array([int.from_bytes(d, "big") for d in digests], dtype=np.uint64)


def keep_order(pdf: pd.DataFrame, keep: str, seed: int) -> np.ndarray:
    """Row positions of `pdf` in keep order (earlier rows are kept in preference), ties by sample_id."""
    if keep == "hard":
        key = -pdf["dist_to_centroid"].to_numpy(dtype=np.float64)
    elif keep == "easy":
        key = pdf["dist_to_centroid"].to_numpy(dtype=np.float64)
    elif keep == "random":
        key = random_keys(pdf["sample_id"], seed)
    else:
        raise ValueError(f"unknown keep policy {keep!r}")
    frame = pd.DataFrame({"key": key, "sample_id": pdf["sample_id"].to_numpy(), "pos": np.arange(len(pdf))})
    return frame.sort_values(["key", "sample_id"], kind="stable")["pos"].to_numpy()


def max_similarity_to_earlier(x: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row j of `x` (unit rows): (max over i < j of x_i . x_j, the first i attaining it),
    computed over tiles of block_size rows; row 0 (no earlier row) gets (-inf, -1)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    n = len(x)
    best = np.full(n, -np.inf)
    arg = np.full(n, -1, dtype=np.int64)
    for start in range(0, n, block_size):
        cols = x[start : start + block_size]
        width = len(cols)
        for top in range(0, start + 1, block_size):
            sims = x[top : top + block_size] @ cols.T  # [earlier rows, this block's rows]
            if top == start:  # the diagonal tile: only i < j counts
                sims[np.tril_indices(width)] = -np.inf
            rows = sims.argmax(axis=0)
            tile_best = sims[rows, np.arange(width)]
            better = tile_best > best[start : start + width]
            best[start : start + width][better] = tile_best[better]
            arg[start : start + width][better] = top + rows[better]
    return best, arg


def semdedup_cluster(pdf: pd.DataFrame, cfg: SemDedupConfig, seed: int = 0, every: bool = False) -> pd.DataFrame:
    """DECISIONS rows (reason semantic_duplicate) for the samples SemDeDup removes from one cluster
    (cosine to an earlier sample > 1 - eps), or with `every` for every sample after the first in
    keep order (the candidates a keep target ranks by score).

    `pdf` columns: sample_id, uid, dist_to_centroid and the embedding column(s) `cfg.on` uses
    (image_emb, text_emb), without nulls. Pure: the same rows in any order give the same result.
    """
    if len(pdf) < 2:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in DECISIONS.names})
    ordered = pdf.iloc[keep_order(pdf, cfg.keep, seed)].reset_index(drop=True)
    best, arg = max_similarity_to_earlier(cluster_vectors(ordered, cfg.on), cfg.block_size)
    removed = np.arange(1, len(ordered)) if every else np.flatnonzero(best > 1.0 - cfg.eps)
    matched = ordered.iloc[arg[removed]]
    return pd.DataFrame(
        {
            "sample_id": ordered["sample_id"].to_numpy()[removed],
            "uid": ordered["uid"].to_numpy()[removed],
            "stage": STAGE,
            "reason": REASON,
            "score": best[removed],
            "matched_uid": matched["uid"].to_numpy(),
            "matched_sample_id": matched["sample_id"].to_numpy(),
        },
        columns=DECISIONS.names,
    )
