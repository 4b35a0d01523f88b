"""Spark jobs of one pipeline run from a fresh run dir, and the sha256 of every export file (to
compare outputs across code versions).

    python bench/spark_jobs.py examples/demo-dbp.yaml --set input=build/demo/shards \
        --set embed.model.pretrained=build/tiny.pt --run-dir /tmp/jobs-run

Counts come from Spark's status tracker: every job the run starts (none runs in a job group).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.core.runner import run_pipeline
from pipeline.core.spark import get_spark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], help="key=value config override")
    parser.add_argument("--run-dir", required=True, help="a fresh run dir (deleted first)")
    args = parser.parse_args()
    shutil.rmtree(args.run_dir, ignore_errors=True)
    cfg = load_config(args.config, [*args.set, f"run_dir={args.run_dir}"])
    spark = get_spark(cfg.spark)
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup(None))
    result = run_pipeline(cfg)
    jobs = set(tracker.getJobIdsForGroup(None)) - before
    export = Path(result.export_dir)
    files = sorted(p for p in export.iterdir() if p.suffix in (".tar", ".parquet") or p.name == "sizes.json")
    print(json.dumps({"jobs": len(jobs), "ledger": result.ledger,
                      "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}},
                     indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
