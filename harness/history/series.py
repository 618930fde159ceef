"""The store's entries as series: one per workload x mode x machine x figure, over commits.

A series' points are its commits in the store's order (``order``, then the report's
time); several entries of one commit pool their replicates into that commit's point.
check.py and show.py both read the store through here, so they segment one series
the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.history.changepoints import Segmentation, Settings, detect


@dataclass
class Point:
    commit: str
    order: int
    values: list[float] = field(default_factory=list)
    dirty: bool = False

    @property
    def short(self) -> str:
        return self.commit[:7] + ("+" if self.dirty else "")


@dataclass
class Series:
    workload: str
    workload_name: str
    mode: str
    machine: str
    figure: str
    unit: str
    higher_is_better: bool
    points: list[Point] = field(default_factory=list)
    segmentation: Segmentation | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.workload, self.mode, self.machine, self.figure)

    @property
    def title(self) -> str:
        return f"{self.workload_name} · {self.mode} · {self.machine} · {self.figure}"


def _replicates(fig: dict) -> list[float]:
    listed = fig.get("replicates") or [fig.get("value")]
    return [float(v) for v in listed
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def build(entries: list[dict], settings: Settings = Settings()) -> list[Series]:
    """Every series of the entries, segmented, in a fixed order (by workload name, mode, machine, figure)."""
    series: dict[tuple, Series] = {}
    for e in sorted(entries, key=lambda e: (e["order"], e.get("time") or "")):
        for name, fig in sorted((e.get("figures") or {}).items()):
            values = _replicates(fig)
            if not values:
                continue
            key = (e["workload"], e["mode"], e["machine"], name)
            s = series.get(key)
            if s is None:
                s = series[key] = Series(e["workload"], e.get("workload_name") or e["workload"][:8], e["mode"],
                                         e["machine"], name, fig.get("unit") or "",
                                         bool(fig.get("higher_is_better", True)))
            if not s.points or s.points[-1].commit != e["commit"]:
                s.points.append(Point(e["commit"], e["order"]))
            s.points[-1].values += values
            s.points[-1].dirty |= bool(e.get("dirty"))
    for s in series.values():
        s.segmentation = detect([p.values for p in s.points], [p.commit for p in s.points], settings)
    return sorted(series.values(), key=lambda s: (s.workload_name, s.workload, s.mode, s.machine, s.figure))
