"""spark-submit entry point: `spark-submit jobs/curate.py --config CONFIG [--set key=value ...]`."""

import argparse
import sys

from pipeline.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    argv = ["run", args.config] + [f"--set={kv}" for kv in args.set] + (["--force"] if args.force else [])
    sys.exit(main(argv))
