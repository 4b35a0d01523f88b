VENV ?= .venv
PY := $(VENV)/bin/python
CURATE := $(VENV)/bin/curate

.PHONY: install demo demo-dbp test test-slow minicomp minicomp-quick

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
