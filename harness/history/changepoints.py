"""Change points in a series of benchmark points over commits: e-divisive means.

The method is Matteson & James's e-divisive (2014) as Apache Otava (formerly
Hunter) and MongoDB's CI use it, because a fixed threshold on noisy timings raises
false alarms: a split of the series is scored by the energy distance between the
points before and after it (Q-hat, alpha = 1: absolute differences), the best split
is kept when a permutation test says a split that strong is rare in the same points
shuffled, and each side is split again (binary segmentation) until no split passes.

Replicates are used, and kept together: a point is one commit's values (its
reports' timed windows or repeats), taken as their mean, so r replicates make the
point sqrt(r) times steadier; a split falls only between commits, and the
permutation test shuffles whole commits, so values that share one run's machine
state are never treated as independent of each other (shuffling single values
would make them so and inflate the significance). The energy distance over the
single values (commits still shuffled whole) was tried first: it found no more (a 6%
step under 8% noise per value, 8 replicates a commit: 2 of 6 seeds, against 3 of 6
with the means) at a cost growing with the square of the values' count.

Each verdict can be rerun exactly: the permutations come from a generator seeded
with ``seed`` and the segment's bounds, so one series gives one answer.
A split must also move the mean by ``min_size`` (relative) to count: a quiet series
makes a 0.5% drift significant, which is no regression worth a person's time.
numpy only; no scipy, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_SEGMENT = 3
"""Commits on each side of a change at least: one or two odd commits are not a level."""
ALPHA = 0.01
"""A split is a change when its permutation p-value is below this."""
PERMUTATIONS = 499
"""Shuffles per test: p = (shuffles scoring >= the split + 1) / 500, so 0.002 at best."""
MIN_SIZE = 0.02
"""Smallest relative change of the mean (after/before - 1, either way) raised."""
SEED = 0
CHUNK = 1_000_000
"""Floats per batch of shuffled distance matrices (8 MB, a few such arrays at once): a
long series is tested in batches."""


@dataclass(frozen=True)
class Settings:
    min_segment: int = MIN_SEGMENT
    alpha: float = ALPHA
    permutations: int = PERMUTATIONS
    min_size: float = MIN_SIZE
    seed: int = SEED

    def __post_init__(self):
        if self.min_segment < 1:
            raise ValueError(f"min_segment must be >= 1, got {self.min_segment}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.permutations < 1:
            raise ValueError(f"permutations must be >= 1, got {self.permutations}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")


@dataclass(frozen=True)
class Change:
    index: int
    """The first point after the change."""
    commit: str
    size: float
    """Relative change of the mean: the mean after / the mean before - 1 (adjacent segments)."""
    p_value: float
    permutations: int
    seed: int
    before: float
    after: float


@dataclass
class Segmentation:
    changes: list[Change] = field(default_factory=list)
    reason: str = ""
    """Why no change could be looked for (too short a series), else empty."""

    def bounds(self, n: int) -> list[tuple[int, int]]:
        """The segments as [start, end) point indexes."""
        cuts = [0] + [c.index for c in self.changes] + [n]
        return list(zip(cuts[:-1], cuts[1:]))


def _q_hat(dist: np.ndarray, min_segment: int) -> np.ndarray:
    """Q-hat of every split t (first point after it), for a batch of distance matrices.

    ``dist``: (R, K, K), |x_i - x_j|. Returns (R, K + 1), -inf where a side would be
    shorter than ``min_segment``. Q(t, k) = m n / (m + n) * (2 mean|a - b| -
    mean|a - a'| - mean|b - b'|) for a = points [0, t) and b = [t, k), m and n their
    sizes, the within-side means over distinct pairs; a split scores its best k, as in
    Matteson & James: with k fixed at the end, a dip that recovers (100, 85, 100)
    hides, since its two outer levels look like one."""
    r, k, _ = dist.shape
    p = np.zeros((r, k + 1, k + 1))
    p[:, 1:, 1:] = dist.cumsum(1).cumsum(2)
    idx = np.arange(k + 1)
    diag = p[:, idx, idx]  # the first t points against themselves
    # Q is linear in the prefix sums: Q = A p[t, k] + B diag[t] + C diag[k], with A, B, C
    # from m and n alone, computed once for the batch.
    short, a, b, c = _weights(k, min_segment)
    q = a * p
    q += b * diag[:, :, None]
    q += c * diag[:, None, :]
    q[:, short] = -np.inf
    return q.max(axis=2)


def _weights(k: int, min_segment: int) -> tuple[np.ndarray, ...]:
    """(too short, A, B, C): where a side would be under ``min_segment``, and Q's coefficients
    on p[t, k], diag[t] and diag[k] (m n/(m+n) times the energy distance, expanded)."""
    idx = np.arange(k + 1, dtype=float)
    m = idx[:, None]
    n = idx[None, :] - m
    with np.errstate(divide="ignore", invalid="ignore"):
        s = m + n
        wa = np.where(m > 1, n / (s * (m - 1)), 0.0)  # within a: m n/(m+n) / (m (m-1))
        wb = np.where(n > 1, m / (s * (n - 1)), 0.0)
        a = 2 / s + 2 * wb
        b = -2 / s - wa - wb
        c = -wb
    short = (m < min_segment) | (n < min_segment)
    return short, *(np.where(short, 0.0, w) for w in (a, b, c))


def _best_split(values: np.ndarray, s: Settings, rng: np.random.Generator) -> tuple[int, float]:
    """(split, p-value) of the strongest split of ``values``."""
    dist = np.abs(values[:, None] - values[None, :])
    q = _q_hat(dist[None], s.min_segment)[0]
    t = int(np.argmax(q))
    k = len(values)
    batch = max(1, CHUNK // (k * k))
    beaten, done = 0, 0
    while done < s.permutations:
        n = min(batch, s.permutations - done)
        perm = np.argsort(rng.random((n, k)), axis=1)
        best = _q_hat(dist[perm[:, :, None], perm[:, None, :]], s.min_segment).max(axis=1)
        beaten += int((best >= q[t] - 1e-12 * abs(q[t])).sum())
        done += n
    return t, (beaten + 1) / (s.permutations + 1)


def _rel(before: float, after: float) -> float:
    return after / before - 1 if before else (0.0 if after == before else float("inf"))


def detect(points: list[list[float]], commits: list[str], settings: Settings = Settings()) -> Segmentation:
    """The changes in a series of points (each its replicates) ordered by commit."""
    s = settings
    if len(points) != len(commits):
        raise ValueError(f"{len(points)} points but {len(commits)} commits")
    if any(len(p) == 0 for p in points):
        raise ValueError("a point without a value")
    if len(points) < 2 * s.min_segment:
        return Segmentation(reason=f"{len(points)} point(s): a change needs {s.min_segment} on each side "
                                   f"(min segment {s.min_segment})")
    # Each commit is its replicates' mean: r values make a point sqrt(r) times steadier,
    # and the energy distance over single values would be dominated by their spread.
    means = np.array([np.mean(np.asarray(p, dtype=float)) for p in points])
    found: dict[int, float] = {}
    todo = [(0, len(means))]
    while todo:
        lo, hi = todo.pop()
        seg = means[lo:hi]
        if hi - lo < 2 * s.min_segment or np.ptp(seg) == 0:
            continue
        rng = np.random.default_rng([s.seed, lo, hi])
        t, p = _best_split(seg, s, rng)
        if p >= s.alpha or abs(_rel(seg[:t].mean(), seg[t:].mean())) < s.min_size:
            continue
        found[lo + t] = p
        todo += [(lo, lo + t), (lo + t, hi)]
    cuts = sorted(found)
    edges = [0, *cuts, len(points)]
    changes = []
    for i, cut in enumerate(cuts):
        before, after = float(means[edges[i]:cut].mean()), float(means[cut:edges[i + 2]].mean())
        changes.append(Change(cut, commits[cut], _rel(before, after), found[cut], s.permutations, s.seed,
                              before, after))
    return Segmentation(changes)
