"""Per-step counts that no machine load can move: aten ops dispatched and Python calls made
per optimizer step, for the hand loop and every variant of the harness side of
benchmarks/step_cost.py (marginal, as there: an epoch of 2N steps less one of N).

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.step_counts

On a busy machine the step-cost benchmark's timings spread by hundreds of µs; these counts
say what a change to the loop did to its work all the same (docs/performance.md, "Host
cost per step"). Ops are counted by a TorchDispatchMode (a ``detach`` counts, as it is a
dispatch), calls by ``sys.setprofile`` (Python and C functions alike) in epochs of their
own, without the mode, whose Python would be counted with every op.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import step_cost


class OpCount(TorchDispatchMode):
    """Counts the aten ops dispatched inside it (tests/test_step_calls.py uses it too)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _counted(epoch) -> tuple[float, float]:
    """A stand-in for ``step_cost._marginal``: (ops, calls) per step instead of times."""
    calls = [0]

    def count(frame, event, arg):
        if event in ("call", "c_call"):
            calls[0] += 1

    epoch(step_cost.WARM_STEPS)
    ops_seen, calls_seen = [], []
    for n in (step_cost.STEPS, 2 * step_cost.STEPS):
        with OpCount() as ops:
            epoch(n)
        ops_seen.append(ops.n)
    for n in (step_cost.STEPS, 2 * step_cost.STEPS):
        calls[0] = 0
        sys.setprofile(count)
        try:
            epoch(n)
        finally:
            sys.setprofile(None)
        calls_seen.append(calls[0])
    return tuple((b - a) / step_cost.STEPS for a, b in (ops_seen, calls_seen))


def main() -> None:
    torch.set_num_threads(1)
    step_cost._marginal = _counted
    folder = Path(tempfile.mkdtemp())
    print(f"{'per optimizer step':24s} {'aten ops':>9s} {'Python calls':>13s}")
    (ops, calls), _ = step_cost.hand_side()
    print(f"{'hand loop':24s} {ops:9.1f} {calls:13.1f}")
    for v in step_cost.VARIANTS:
        (ops, calls), _ = step_cost.harness_side(v, folder / v.replace(" ", "_"))
        print(f"{'harness: ' + v:24s} {ops:9.1f} {calls:13.1f}")


if __name__ == "__main__":
    main()
