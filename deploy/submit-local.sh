#!/usr/bin/env bash
# spark-submit on this machine (local[N]): the same job as `curate run`, through spark-submit.
#   deploy/submit-local.sh run.yaml [--set key=value ...]
# Knobs: CORES (default *), DRIVER_MEMORY (default 8g).
# Local mode has no GPU scheduling (embed runs on the CPU). To embed on this machine's GPUs, start a
# one-node standalone cluster (a master and a worker, as tests/test_standalone_cluster.py does) and
# use deploy/submit-standalone.sh with GPUS_PER_EXECUTOR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -ge 1 ] || usage
config="$1"; shift

exec "${SPARK_SUBMIT}" \
  --master "local[${CORES:-*}]" \
  --driver-memory "${DRIVER_MEMORY:-8g}" \
  "${COMMON_CONF[@]}" \
  "${SHIP_CONF[@]}" \
  "${JOB}" --config "${config}" "$@"
