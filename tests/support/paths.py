"""Where the repository and the tests live, for commands run from the repository root."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent

# A run's process imports the fixture models (``model.name: fixtures.custom_models:Slow``)
# when this folder is on its PYTHONPATH.
TESTS_PATH = str(TESTS)
