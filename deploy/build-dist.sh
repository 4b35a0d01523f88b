#!/usr/bin/env bash
# What a cluster needs to run the code when its nodes don't have it (`make dist`):
#   OUT/curate_pipeline-<version>-py3-none-any.whl  pip install it (an image, a venv to pack)
#   OUT/curate_pipeline.zip   the same wheel named .zip, for --py-files (Spark puts .zip and .egg
#                             files on the executors' path, not .whl; a pure wheel is such a zip)
#   OUT/curate.py             the spark-submit entry point (jobs/curate.py)
#   deploy/build-dist.sh [OUT (default dist)]      PYTHON: the interpreter with `build` (python3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
rm -f "${out}"/curate_pipeline-*.whl "${out}/curate_pipeline.zip"
"${PYTHON:-python3}" -m build --wheel --no-isolation --outdir "${out}" "${root}" >"${out}/build.log" 2>&1 \
  || { cat "${out}/build.log" >&2; exit 1; }
cp "${out}"/curate_pipeline-*.whl "${out}/curate_pipeline.zip"
cp "${root}/jobs/curate.py" "${out}/curate.py"
ls "${out}"/curate_pipeline-*.whl "${out}/curate_pipeline.zip" "${out}/curate.py"
