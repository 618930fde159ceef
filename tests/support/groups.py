"""One pytest-xdist worker for a module whose module-scoped fixture trains.

xdist builds a module-scoped fixture once on every worker that runs one of the module's
tests: spread over the workers, the gate's baseline runs of tests/test_compare_runs.py
were made twice (40 s of CPU each time, with three workers). `make test` runs
`--dist loadgroup`, which sends every test of one ``xdist_group`` to the same worker, so
the fixture is built once.
"""

from __future__ import annotations

import pytest


def one_worker(module_name: str) -> pytest.MarkDecorator:
    """The mark for a module's ``pytestmark``: ``one_worker(__name__)``."""
    return pytest.mark.xdist_group(module_name)
