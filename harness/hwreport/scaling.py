"""Scaling over processes: samples/s, speed-up and efficiency against the number of processes.

A **family** is one workload less its per-device batch, on one machine, in one mode
less its process count (``cpu ×1`` and ``ddp gloo ×2`` are one family). Within it:

- **weak scaling** holds the per-device batch (``config.loader.batch_size``) and lets the
  global batch grow with the processes;
- **strong scaling** holds the global batch (``throughput.global_batch_size``, else the
  per-device batch times the world size) and shrinks the per-device batch.

A series is either, over at least two process counts. Its speed-up at ``n`` processes is
samples/s at ``n`` over samples/s at the fewest processes measured (``n0``, one when
measured); its efficiency is that speed-up over ``n / n0``: 1.0 is linear scaling.
Samples/s is the whole run's (every rank's samples over the slowest rank's window).
An efficiency above 100%, or one from a contended run or from runs with other threads per
process or in all than the base's, carries its reasons (doubts.py) and is shown with them.
Runs over several nodes are points of their own: 2 processes on one node and 1 on each of
two nodes are two layouts, never replicates of one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

from harness.report.sources import Loaded
from harness.hwreport import doubts, identity
from harness.hwreport.compare_machines import Estimate, replicates
from harness.report.figures import dig

WEAK, STRONG = "weak", "strong"


@dataclass
class Point:
    processes: int
    per_device_batch: int | None
    global_batch: int | None
    samples_per_s: Estimate
    speedup: float | None = None
    efficiency: float | None = None
    nodes: int = 1
    taken: doubts.Taken = field(default_factory=doubts.Taken)
    doubts: list[str] = field(default_factory=list)
    """Why the efficiency is not a finding: above 100%, a contended run, threads that differ from the base's."""


@dataclass
class Series:
    kind: str
    """weak (fixed per-device batch) or strong (fixed global batch)."""
    batch: int
    """The batch held fixed: per device for weak scaling, global for strong."""
    points: list[Point]

    @property
    def name(self) -> str:
        if self.kind == WEAK:
            return f"weak scaling (per-device batch {self.batch})"
        return f"strong scaling (global batch {self.batch})"


@dataclass
class Family:
    title: str
    machine: str
    mode: str
    series: list[Series]
    modes: list[str]
    """The full mode labels of its runs (``cpu ×1``, ``ddp gloo ×2``): the family takes the colour of the first."""

    @property
    def key(self) -> tuple[str, str]:
        return self.machine, self.mode


def _global_batch(report: dict) -> int | None:
    """Samples per optimizer step over every rank: the ``batch`` block's (micro x accumulation
    x world), else the throughput block's, else the per-device batch times the world size."""
    g = dig(report, "batch.global_batch_size")
    if not isinstance(g, int):
        g = dig(report, "throughput.global_batch_size")
    if isinstance(g, int):
        return g
    bs = dig(report, "config.loader.batch_size")
    return bs * identity.world_size(report) if isinstance(bs, int) else None


def series_of(points: list[Point]) -> list[Series]:
    """Every weak and strong series the points hold, each with its speed-ups and efficiencies."""
    out = []
    for kind, batch_of in ((WEAK, lambda p: p.per_device_batch), (STRONG, lambda p: p.global_batch)):
        by_batch = defaultdict(list)
        for p in points:
            if batch_of(p) is not None and p.samples_per_s.median:
                by_batch[batch_of(p)].append(p)
        for batch, ps in sorted(by_batch.items()):
            if len({p.processes for p in ps}) < 2:
                continue
            ps = sorted(ps, key=lambda p: (p.processes, p.nodes))
            base = ps[0]
            scaled = []
            for p in ps:
                up = p.samples_per_s.median / base.samples_per_s.median
                eff = up / (p.processes / base.processes)
                why = doubts.efficiency(eff, p.taken, base.taken) if p is not base else []
                scaled.append(replace(p, speedup=up, efficiency=eff, doubts=why))
            out.append(Series(kind, batch, scaled))
    return out


def families(items: list[Loaded], naming: identity.MachineNaming) -> list[Family]:
    """The families that hold at least one scaling series."""
    grouped: dict[tuple, dict] = {}
    for item in items:
        r = item.report
        if r.get("status") != "completed":
            continue
        key = (identity.family_id(r), naming(r, item.path), identity.family_mode(r))
        fam = grouped.setdefault(key, {"title": identity.workload_title(r, batch=False), "cells": defaultdict(list),
                                       "modes": []})
        if identity.mode_label(r) not in fam["modes"]:
            fam["modes"].append(identity.mode_label(r))
        cell = (identity.world_size(r), dig(r, "config.loader.batch_size"), _global_batch(r), identity.node_count(r))
        fam["cells"][cell].append(r)
    out = []
    for (_, machine, mode), fam in grouped.items():
        points = [Point(ws, bs, gb, Estimate.of(replicates(reports, "samples_per_s")), nodes=nodes,
                        taken=doubts.Taken.of(reports))
                  for (ws, bs, gb, nodes), reports in fam["cells"].items()]
        found = series_of(points)
        if found:
            modes = sorted(fam["modes"], key=identity.mode_order)
            out.append(Family(fam["title"], machine, mode, found, modes))
    return sorted(out, key=lambda f: (f.title, f.machine, f.mode))
