#!/usr/bin/env bash
# Shared by the submit-*.sh wrappers (sourced, not run). Sets:
#   CURATE_HOME  the checkout or image folder holding jobs/ and deploy/ (the same path on every node)
#   JOB          the spark-submit application: jobs/curate.py
#   COMMON_CONF  --conf pairs every deployment wants (Arrow transfers, the Python executables)
#   SHIP_CONF    how the code reaches executors that don't have it (empty: they have it installed)
#   GPU_CONF     GPU scheduling --conf pairs when GPUS_PER_EXECUTOR > 0, else empty
# Environment knobs (all optional): PYTHON (the executors' Python), DRIVER_PYTHON (the driver's;
# default PYTHON), PY_FILES, ENV_ARCHIVE, GPUS_PER_EXECUTOR, GPU_PER_TASK, GPU_DISCOVERY,
# EXECUTOR_CORES, SPARK_SUBMIT.
# Shipping the code (README "Shipping the code to a cluster"):
#   PY_FILES=dist/curate_pipeline.zip    --py-files (`make dist`); PYTHON must have the dependencies
#   ENV_ARCHIVE=dist/curate-env.tar.gz   --archives ...#env (`make venv-pack`): executors run
#                                        ./env/bin/python; DRIVER_PYTHON is a local Python with the package
set -euo pipefail

CURATE_HOME="${CURATE_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
JOB="${CURATE_HOME}/jobs/curate.py"
SPARK_SUBMIT="${SPARK_SUBMIT:-spark-submit}"
EXECUTOR_CORES="${EXECUTOR_CORES:-8}"

SHIP_CONF=()
if [ -n "${PY_FILES:-}" ]; then
  SHIP_CONF+=(--py-files "${PY_FILES}")
fi
if [ -n "${ENV_ARCHIVE:-}" ]; then
  SHIP_CONF+=(--archives "${ENV_ARCHIVE}#env")
  PYTHON="${PYTHON:-./env/bin/python}"
fi
PYTHON="${PYTHON:-python3}"
DRIVER_PYTHON="${DRIVER_PYTHON:-${PYTHON}}"

COMMON_CONF=(
  --conf spark.sql.execution.arrow.pyspark.enabled=true
  --conf "spark.pyspark.python=${PYTHON}"
  --conf "spark.pyspark.driver.python=${DRIVER_PYTHON}"
)

# Every task reserves GPU_PER_TASK of a GPU, CPU stages included: with the default 1/EXECUTOR_CORES
# all cores stay busy and the embed tasks of one executor share its GPU; with 1 an executor runs one
# task at a time. Each embed task binds to the GPU address Spark assigns it.
GPU_CONF=()
if [ "${GPUS_PER_EXECUTOR:-0}" -gt 0 ]; then
  GPU_PER_TASK="${GPU_PER_TASK:-$(awk -v c="${EXECUTOR_CORES}" -v g="${GPUS_PER_EXECUTOR}" 'BEGIN { printf "%.4g", g / c }')}"
  GPU_CONF=(
    --conf "spark.executor.resource.gpu.amount=${GPUS_PER_EXECUTOR}"
    --conf "spark.task.resource.gpu.amount=${GPU_PER_TASK}"
    --conf "spark.executor.resource.gpu.discoveryScript=${GPU_DISCOVERY:-${CURATE_HOME}/deploy/gpu_discovery.sh}"
  )
fi

usage() {
  echo "usage: $0 CONFIG.yaml [--set key=value ...] [--force]" >&2
  exit 2
}
