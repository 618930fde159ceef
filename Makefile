# Two entry points: `make run` and `make test`. Both create .venv when missing
# and (re)install the project when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/digits_cnn.yaml

.PHONY: run test bench clean

# scripts/install-venv.sh installs with uv where it can be had (about half pip's time), else pip.
$(STAMP): pyproject.toml constraints.txt scripts/install-venv.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	scripts/install-venv.sh $(PY)
	@touch $(STAMP)

# `make run` is "train the default recipe now": its folder (the config's output.dir)
# is the target's own, so a second `make run` replaces the first run (--overwrite);
# `harness run` by hand refuses a folder holding a run.
run: $(STAMP)
	$(VENV)/bin/harness run $(CONFIG) --overwrite

# Three worker processes (pytest-xdist) on the 2-core machine: the suite's time is mostly
# processes starting, which takes the CPUs, and the Slurm tests waiting on their jobs,
# which does not. The Slurm tests run on one worker, one after another from the start
# (tests/test_slurm.py), and the other two keep both CPUs busy meanwhile: 627-686 s in
# three runs against 673 s with two, 0.69-0.72 s of wall per second of user CPU against
# 0.78 (docs/performance.md). `--dist loadgroup` keeps the tests of one
# xdist_group on one worker: a module whose module-scoped fixture trains is one group
# (tests/support/groups.py), so it trains once, not once per worker (this needs
# pytest<9.2, see constraints.txt). The 25 slowest tests are listed at the end, so a CI
# log shows where the minutes went.
TEST_WORKERS ?= 3
# The bytecode is compiled first: where PYTHONDONTWRITEBYTECODE is set, every harness
# process the tests start would otherwise compile its ~120 modules from source again.
test: $(STAMP)
	$(PY) -m compileall -q harness tests
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

bench: $(STAMP)
	$(PY) -m pytest benchmarks

clean:
	rm -rf runs .pytest_cache .benchmarks
