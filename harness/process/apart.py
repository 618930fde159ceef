"""Run one function in a forked child that imports what it needs (torch) and exits.

A parent that only starts other processes (``harness sweep``, whole-run repeats) must not
hold torch: PSS splits each page of a shared library between the processes on the machine
that map it, so a parent mapping libtorch would lower every child's measured PSS by its
share (~150 MB). The child validates, computes what the parent needs, and sends it back
pickled; the parent stays torch-free.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, Callable

from harness.errors import BadInput


def call_apart(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a forked child; its BadInput is raised here as the same one line.

    Where torch is already loaded (the tests' own process), or there is no fork, it is a
    plain call: nothing would be saved.
    """
    if "torch" in sys.modules or not hasattr(os, "fork"):
        return fn(*args)
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()  # else text buffered before the fork would be written twice
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            payload = ("ok", fn(*args))
        except BadInput as err:
            payload = ("bad", str(err))
        except BaseException as err:  # noqa: BLE001 -- anything else is the parent's to raise
            payload = ("error", f"{type(err).__name__}: {err}")
        try:
            with os.fdopen(write, "wb") as pipe:
                pickle.dump(payload, pipe)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)  # no atexit handlers, no second flush of the parent's buffers
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"{fn.__name__} in a child process ended without an answer (wait status {status})")
    kind, value = pickle.loads(data)
    if kind == "bad":
        raise BadInput(value)
    if kind == "error":
        raise RuntimeError(f"{fn.__name__}: {value}")
    return value
