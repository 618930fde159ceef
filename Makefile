# Two entry points: `make run` and `make test`. Both create .venv when missing
# and (re)install the project when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/digits_cnn.yaml

.PHONY: run test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# `make run` is "train the default recipe now": its folder (the config's output.dir)
# is the target's own, so a second `make run` replaces the first run (--overwrite);
# `harness run` by hand refuses a folder holding a run.
run: $(STAMP)
	$(VENV)/bin/harness run $(CONFIG) --overwrite

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m pytest benchmarks

clean:
	rm -rf runs .pytest_cache .benchmarks
