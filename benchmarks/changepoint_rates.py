"""False alarms and power of harness/history/changepoints.py at its defaults, on seeded series.

    PYTHONPATH=. python benchmarks/changepoint_rates.py [--series 200]

Each row draws that many seeded synthetic series (Gaussian noise, relative to the
level; seeds 1000, 1001, ...) and counts the series with any change, and those whose
changes are exactly the true step. Deterministic: the same numbers on every machine
(docs/history.md quotes them); only the seconds depend on the machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harness.history.changepoints import detect

ROWS = (
    ("A/A, 40 points, 2% noise", [100.0] * 40, 0.02, 1, None),
    ("A/A, 20 points, 2% noise", [100.0] * 20, 0.02, 1, None),
    ("A/A, 40 points, 2% noise, 5 replicates", [100.0] * 40, 0.02, 5, None),
    ("10% step at point 10 of 20, 2% noise", [100.0] * 10 + [90.0] * 10, 0.02, 1, 10),
    ("5% step at point 10 of 20, 2% noise", [100.0] * 10 + [95.0] * 10, 0.02, 1, 10),
    ("30% fall at point 6 of 12, 2% noise", [100.0] * 6 + [70.0] * 6, 0.02, 1, 6),
)


def series(levels, noise, seed, replicates):
    rng = np.random.default_rng(seed)
    return [list(level * (1 + noise * rng.standard_normal(replicates))) for level in levels]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=200)
    n = ap.parse_args().series
    for name, levels, noise, reps, at in ROWS:
        commits = [str(i) for i in range(len(levels))]
        t = time.perf_counter()
        found = [[c.index for c in detect(series(levels, noise, 1000 + i, reps), commits).changes] for i in range(n)]
        exact = "" if at is None else f", exactly [{at}]: {sum(f == [at] for f in found)}/{n}"
        print(f"{name}: any change {sum(bool(f) for f in found)}/{n}{exact} ({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
