VENV ?= .venv
PY := $(VENV)/bin/python
CURATE := $(VENV)/bin/curate

.PHONY: install demo demo-dbp test test-slow minicomp minicomp-quick dist venv-pack wheel-check

install: $(VENV)/.installed

# The venv is reused while pyproject.toml and constraints.txt are unchanged (the full install is ~6 GB).
# constraints.txt pins every package to the versions CI passed with.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

demo: install
	$(CURATE) demo-data build/demo
	$(CURATE) run examples/demo.yaml

demo-dbp: install
	$(CURATE) demo-data build/demo
	$(CURATE) make-tiny-model build/tiny.pt
	$(CURATE) run examples/demo-dbp.yaml

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# Mini-DataComp (bench/minicomp/RESULTS.md): curate a synthetic pool, train a small CLIP on each output.
minicomp-quick: install
	$(PY) -m bench.minicomp.run --quick --out build/minicomp-quick

minicomp: install
	$(PY) -m bench.minicomp.run --out build/minicomp

# What a cluster needs when its nodes don't have the code (README "Shipping the code to a cluster"):
# dist/curate_pipeline-*.whl, dist/curate_pipeline.zip (--py-files) and dist/curate.py (the job).
dist: install
	PYTHON=$(PY) deploy/build-dist.sh dist

# dist/curate-env.tar.gz: a venv with the wheel and every dependency, for --archives ...#env
venv-pack: dist
	PYTHON=python3 deploy/pack-venv.sh dist/curate_pipeline-*.whl dist/curate-env.tar.gz

# The wheel with no extras in a new venv outside the checkout: the demo and every step (.ci/wheel-check).
wheel-check: install
	DEV_PY=$(PY) .ci/wheel-check
