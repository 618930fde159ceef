"""Threads against cores: the ``threads`` report block, and the warning at a run's start.

OpenMP threads beyond the cores that are free spin at their barriers and collapse a
step's speed (docs/performance.md has the measured cost), so a report says how many
threads the run ran against the CPUs it could use, and against the CPUs that were
free during its window (capacity minus the foreign share, measure/contention.py).
"""

from __future__ import annotations

import os
import sys


def threads_block(capacity: float, processes: int, foreign: float | None = None) -> dict:
    import torch

    per = torch.get_num_threads()
    total = per * processes
    free = capacity * (1.0 - foreign) if foreign is not None else None
    return {"torch_threads": per, "interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "processes": processes, "total_threads": total, "cpus_available": capacity,
            "oversubscribed": total > capacity,
            "free_cpus": free, "oversubscribed_free": (total > free) if free is not None else None}


def start_warning(block: dict) -> str | None:
    if not block["oversubscribed"]:
        return None
    return (f"warning: {block['processes']} process(es) x {block['torch_threads']} torch threads = "
            f"{block['total_threads']} threads on {block['cpus_available']:g} CPUs this run may use: "
            "threads beyond the cores spin and slow every step (lower OMP_NUM_THREADS)")


def warn_at_start(block: dict) -> None:
    line = start_warning(block)
    if line:
        print(line, file=sys.stderr, flush=True)
