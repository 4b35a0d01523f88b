"""Embed: open_clip image and caption embeddings of the alive samples, one Spark task per work unit
of a source shard (`pipeline.embedding.shards`), or precomputed clip-retrieval embeddings imported
(`pipeline.embedding.precomputed`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.core import io
from pipeline.core.config import RunConfig
from pipeline.core.config_loader import check
from pipeline.core.decisions import no_decisions, write_decisions
from pipeline.core.stage import RunContext, Stage
from pipeline.core.tables import alive_df
from pipeline.embedding.precomputed import import_precomputed
from pipeline.embedding.shards import EncodeSettings, encode_alive
from schemas import EMBEDDINGS

if TYPE_CHECKING:
    from pipeline.models import EncodedBatch


def embeddings_table(rows: list[dict[str, Any]], out: EncodedBatch) -> pa.Table:
    """EMBEDDINGS rows: both embeddings and their cosine."""
    return pa.table(
        {
            "sample_id": [r["sample_id"] for r in rows],
            "uid": [r["uid"] for r in rows],
            "image_emb": list(out.image_emb),
            "text_emb": list(out.text_emb),
            "clip_score": out.clip_score,
        },
        schema=EMBEDDINGS,
    )


class Embed(Stage):
    """Alive samples -> `embed/parts/*.parquet` (EMBEDDINGS); samples that get no embedding are
    removed with reason `no_embedding` (only possible with precomputed embeddings)."""

    name = "embed"
    reads = ("pool",)
    writes = ("embeddings",)
    resumable = True
    removes_samples = True

    def check_config(self, cfg: RunConfig) -> None:
        check((cfg.embed.model is None) != (cfg.embed.precomputed is None), "embed.model",
              "set exactly one of 'model' and 'precomputed' (the run embeds)")

    def external_files(self, cfg: RunConfig) -> list[str]:
        if cfg.embed.precomputed is None:
            return super().external_files(cfg)
        fs, root = io.filesystem(cfg.embed.precomputed)
        return sorted(io.with_protocol(fs, path, cfg.embed.precomputed) for path in fs.find(root))

    def execute(self, ctx: RunContext, out_dir: str) -> dict[str, Any]:
        cfg = ctx.cfg.embed
        alive = alive_df(ctx)
        if cfg.precomputed is not None:
            return import_precomputed(ctx, alive, out_dir)
        counts = encode_alive(ctx, alive, out_dir, EncodeSettings.of(cfg, self.name), embeddings_table)
        write_decisions(ctx, no_decisions(ctx), out_dir)
        return {"embedded": counts["encoded"], "shards": counts["shards"], "units": counts["units"],
                "images_per_s": counts["images_per_s"], "removed": {}}
