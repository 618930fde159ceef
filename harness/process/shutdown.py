"""A harness process's way out, without the interpreter's last walk of the whole heap.

At exit CPython runs a full cyclic collection over every object still alive. In a process
that imported torch, torchvision and torch._dynamo that is about a million objects, and the
walk took ~1 s of CPU, a quarter of a short run's process, after the run had ended
(2-core VM, idle: a 2-step ``harness run`` exited 4.37 s after its start with it, 3.18 s
without). ``gc.freeze()`` as the last exit handler moves every object into the permanent
generation, which that collection skips. Everything else the interpreter does on the way out
still happens: the other exit handlers (multiprocessing's, which ends a DataLoader's
workers; loggers'), the standard streams' flush, and each module's teardown, whose
objects are freed by their reference counts as before. What the freeze leaves is garbage
in reference cycles: it is not collected, and a finalizer on such a cycle does not run.
Nothing the harness writes depends on one: reports, checkpoints and metrics files are
closed explicitly (files/atomic.py, the recorder's and trackers' ``finish``).
"""

from __future__ import annotations

import atexit
import gc


def skip_final_collection() -> None:
    """Register ``gc.freeze`` to run after every exit handler registered later (they run
    last-registered first). Only for a process started as the ``harness`` command: a
    program or a test calling ``cli.main`` goes on living after it."""
    atexit.register(gc.freeze)
