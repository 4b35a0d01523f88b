#!/usr/bin/env bash
# A relocatable venv with the wheel and every dependency, for `spark-submit --archives` (`make
# venv-pack`): executors unpack it as ./env and run ./env/bin/python. venv-pack keeps the venv's
# link to its base interpreter, so every node needs that same Python at the same path (use
# conda-pack, which bundles the interpreter, where they differ).
#   deploy/pack-venv.sh WHEEL OUT.tar.gz [EXTRAS (default s3)]    PYTHON: the base interpreter
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheel="$1"; out="$2"; extras="${3:-s3}"
venv="$(mktemp -d)/env"
"${PYTHON:-python3}" -m venv "${venv}"
"${venv}/bin/pip" install -q -c "${root}/constraints.txt" "${wheel}${extras:+[${extras}]}" venv-pack==0.2.0
rm -f "${out}"
"${venv}/bin/venv-pack" -q -p "${venv}" -o "${out}"
rm -rf "$(dirname "${venv}")"
echo "${out}"
