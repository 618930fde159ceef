"""The wall-clock time every file of a run stamps: UTC, ISO 8601, to the second.

One function so that a report's ``started_at``, a sweep's ``updated_at`` and a lock's
``since`` read alike and sort as text; durations use ``time.monotonic`` instead, which
no clock change moves.
"""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> str:
    """``2026-12-06T17:30:36+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
