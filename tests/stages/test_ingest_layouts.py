"""Property: whatever valid layout a shard has, ingest reads exactly the samples that were fed.

Random layouts (tests/layouts.py: dotted keys, folders, `./`, member order, missing sidecars,
integer parquet keys, concatenated archives) go through ingest's per-shard reader, `read_shard`.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.config import IngestConfig
from pipeline.core.shard_reader import ShardTask, read_shard
from tests.layouts import random_layout


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_every_fed_sample_is_read_once_with_its_fate(rng: random.Random) -> None:
    layout = random_layout(rng)
    with tempfile.TemporaryDirectory() as tmp:
        path = layout.write(Path(tmp), "s")
        rows, stats = read_shard(ShardTask(str(path), "s"), IngestConfig())
    got = {r["sample_id"]: (r["quarantine_reason"], r["uid"]) for r in rows}
    assert len(got) == len(rows) == stats["input"]  # each sample once
    assert got == layout.expected_ids("s")  # exactly the samples fed, each with its fate
    assert stats["tar_error"] is None and stats["parquet_error"] is None
