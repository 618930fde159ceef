"""Helpers the test files share, one job per module; ``conftest.py`` holds only fixtures and hooks.

Imported as ``support.<module>``: ``tests/`` is on ``sys.path`` (``pythonpath`` in
pyproject.toml), so the same import works under ``make test`` and ``pytest tests/test_x.py``.
"""
