"""`make test`'s `--dist loadgroup` keeps an xdist_group on one worker (support/groups.py).

When it does not (pytest 9.2 with pytest-xdist 3.8, pytest-dev/pytest-xdist#1386), nothing
fails: the modules that train in a module-scoped fixture train once per worker, and the
suite is slower for it. So the grouping is checked on a session of its own.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

GROUPED = r'''
import os
import pytest

pytestmark = pytest.mark.xdist_group("one")


@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    with open(os.path.join(os.path.dirname(__file__), "workers.log"), "a") as log:
        log.write(f"grouped {os.environ['PYTEST_XDIST_WORKER']}\n")
'''

FREE = r'''
import os
import time

import pytest


@pytest.mark.parametrize("i", range(6))
def test_free(i):
    time.sleep(0.05)
    with open(os.path.join(os.path.dirname(__file__), "workers.log"), "a") as log:
        log.write(f"free {os.environ['PYTEST_XDIST_WORKER']}\n")
'''


def test_a_group_runs_on_one_worker_and_the_rest_spreads(tmp_path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_free.py").write_text(FREE)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
                           "-q", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    workers = defaultdict(list)
    for line in (tmp_path / "workers.log").read_text().splitlines():
        kind, worker = line.split()
        workers[kind].append(worker)
    assert len(workers["grouped"]) == 6 and len(set(workers["grouped"])) == 1, workers
    assert len(workers["free"]) == 6
