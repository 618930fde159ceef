"""Per workload, one row per machine and mode, and each row's speed-up over a reference.

Samples/s of a row are its independent replicates: the whole-run or window repeats
one report lists, or one figure per report when a row holds several reports (the
rule ``harness compare`` uses, harness/gate/verdicts.py). The median carries an
order-statistic interval (measure/stats.py) with its exact coverage.

The speed-up of a row is its median over the reference row's median. Its interval
takes each end from the ends of the two medians' intervals (low over high, high over
low), so it holds both medians' uncertainty; by Bonferroni it covers the true ratio
with probability at least ``level_a + level_b - 1``, the level shown beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.report.sources import Loaded
from harness.errors import BadInput
from harness.hwreport import doubts, identity
from harness.measure.stats import median_ci
from harness.report.figures import REPLICATES, dig, figure, token_repeats


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def replicates(reports: list[dict], name: str) -> list:
    """Independent values of figure ``name`` (None where a replicate has none)."""
    if len(reports) == 1:
        listed = token_repeats(reports[0]) if name == "tokens_per_s" else \
            dig(reports[0], REPLICATES[name]) if name in REPLICATES else None
        if isinstance(listed, list) and listed:
            return [v if _number(v) else None for v in listed]
    return [figure(r, name) for r in reports]


@dataclass
class Estimate:
    median: float | None
    low: float | None = None
    high: float | None = None
    level: float | None = None
    """The interval's exact coverage; None with one value (no interval)."""
    n: int = 0

    @classmethod
    def of(cls, values: list) -> "Estimate":
        v = [float(x) for x in values if _number(x)]
        if not v:
            return cls(None)
        ci = median_ci(v)
        if len(v) == 1:
            return cls(ci["median"], n=1)
        return cls(ci["median"], ci["ci_low"], ci["ci_high"], ci["ci_level"], len(v))


@dataclass
class Row:
    machine: str
    mode: str
    reports: list[dict]
    paths: list[Path]
    failed: int = 0
    """Reports of this machine and mode that did not complete."""
    samples_per_s: Estimate = field(default_factory=lambda: Estimate(None))
    tokens_per_s: Estimate = field(default_factory=lambda: Estimate(None))
    """A language model's rows only (its samples are windows of data.seq_len tokens)."""
    mfu: float | None = None
    mfu_datasheet: float | None = None
    peak_pss_mb: float | None = None
    device_peak_mb: float | None = None
    data_wait_fraction: float | None = None
    test_accuracy: float | None = None
    ttt_s: float | None = None
    """Median time to target over the replicates that reached it."""
    ttt_reached: int = 0
    ttt_tries: int = 0
    """Replicates that had a target to reach."""
    speedup: Estimate | None = None
    taken: doubts.Taken = field(default_factory=doubts.Taken)
    """Contention and threads of the row's replicates (harness/hwreport/doubts.py)."""
    speedup_doubts: list[str] = field(default_factory=list)
    """Why the speed-up is not a finding (a side contended, threads differ); empty when none is known."""

    @property
    def key(self) -> tuple[str, str]:
        return self.machine, self.mode

    def measure(self) -> None:
        done = self.reports
        self.taken = doubts.Taken.of(done)
        self.samples_per_s = Estimate.of(replicates(done, "samples_per_s"))
        self.tokens_per_s = Estimate.of(replicates(done, "tokens_per_s"))
        for attr, name in (("mfu", "mfu"), ("peak_pss_mb", "peak_pss_mb"), ("device_peak_mb", "device_peak_mb"),
                           ("data_wait_fraction", "data_wait_fraction"), ("test_accuracy", "test_accuracy")):
            setattr(self, attr, Estimate.of(replicates(done, name)).median)
        self.mfu_datasheet = Estimate.of([dig(r, "compute.mfu_datasheet") for r in done]).median
        targets = [r for r in done if _number(dig(r, "accuracy.target_accuracy"))]
        if targets:
            times = replicates(targets, "time_to_target_s")
            reached = [t for t in times if _number(t)]
            self.ttt_tries, self.ttt_reached = len(times), len(reached)
            self.ttt_s = Estimate.of(reached).median


def ratio(a: Estimate, b: Estimate) -> Estimate | None:
    """a / b with the conservative interval of the module docstring."""
    if not (_number(a.median) and _number(b.median)) or b.median <= 0:
        return None
    out = Estimate(a.median / b.median, n=min(a.n, b.n))
    if a.level is not None and b.level is not None and b.low and b.low > 0:
        out.low, out.high = a.low / b.high, a.high / b.low
        out.level = max(0.0, a.level + b.level - 1.0)
    return out


@dataclass
class Workload:
    id: str
    title: str
    scenario: str
    names: list[str]
    rows: list[Row]
    reference: Row | None = None


@dataclass
class Comparison:
    workloads: list[Workload]
    machines: list[str]
    """In the order first seen, the baseline first."""
    baseline: tuple[str, str] | None
    """(machine, mode) every speed-up is measured against."""
    pairs: list[tuple[str, str]]
    """Every (machine, mode) in the report, in one fixed order: colours follow it."""


def build(items: list[Loaded], naming: identity.MachineNaming, baseline_machine: str | None = None,
          baseline_mode: str | None = None) -> Comparison:
    rows: dict[tuple, Row] = {}
    meta: dict[str, dict] = {}
    machines: list[str] = []
    for item in items:
        r = item.report
        wid = identity.workload_id(r)
        m = naming(r, item.path)
        if m not in machines:
            machines.append(m)
        info = meta.setdefault(wid, {"title": identity.workload_title(r), "scenario": identity.scenario(r),
                                     "names": [], "config": r.get("config") or {}})
        if r.get("name") not in info["names"]:
            info["names"].append(r.get("name"))
        row = rows.setdefault((wid, m, identity.mode_label(r)), Row(m, identity.mode_label(r), [], []))
        if r.get("status") == "completed":
            row.reports.append(r)
            row.paths.append(item.path)
        else:
            row.failed += 1
    if baseline_machine is not None:
        if baseline_machine not in machines:
            raise BadInput(f"--baseline-machine: {baseline_machine!r} is not among the machines: "
                           + ", ".join(machines))
        machines.remove(baseline_machine)
        machines.insert(0, baseline_machine)
    for row in rows.values():
        row.measure()
    order = {m: i for i, m in enumerate(machines)}
    pairs = sorted({row.key for row in rows.values()}, key=lambda k: (order[k[0]], identity.mode_order(k[1])))
    base_modes = [mode for machine, mode in pairs if machines and machine == machines[0]]
    if baseline_mode is not None and baseline_mode not in base_modes:
        raise BadInput(f"--baseline-mode: {baseline_mode!r} is not a mode of {machines[0]}: " + ", ".join(base_modes))
    baseline = (machines[0], baseline_mode or base_modes[0]) if base_modes else None
    identity.tell_apart(meta)
    workloads = []
    for wid, info in meta.items():
        wrows = sorted((row for (w, _, _), row in rows.items() if w == wid), key=lambda x: pairs.index(x.key))
        ref = next((x for x in wrows if x.key == baseline and x.samples_per_s.median), None)
        if ref is None and baseline is not None and baseline_mode is None:
            # A workload whose settings show in its mode (channels-last, a device-resident loader:
            # the hardware suite's mobilenet) never runs in the plain reference mode: it is measured
            # against the reference machine's own first mode there (fewest processes, plainest).
            ref = next((x for x in wrows if x.machine == baseline[0] and x.samples_per_s.median), None)
        for x in wrows:
            if x is ref:  # exactly 1: its own noise divides out
                x.speedup = Estimate(1.0, n=x.samples_per_s.n)
            else:
                x.speedup = ratio(x.samples_per_s, ref.samples_per_s) if ref else None
                x.speedup_doubts = doubts.speedup(x.taken, ref.taken, x.machine == ref.machine) if ref else []
        workloads.append(Workload(wid, info["title"], info["scenario"], info["names"], wrows, ref))
    workloads.sort(key=lambda w: (w.scenario != "training", w.title, w.id))
    return Comparison(workloads, machines, baseline, pairs)


@dataclass
class Summary:
    machine: str
    mode: str
    geomean: float
    low: float
    high: float
    """The smallest and largest speed-up over the workloads (not an interval)."""
    workloads: int
    doubted: int = 0
    """Of those speed-ups, how many are not findings (each workload's table says why)."""


def geomean_speedups(comp: Comparison) -> list[Summary]:
    """Per machine and mode, the geometric mean of its speed-ups over the workloads it shares with the reference."""
    out = []
    for machine, mode in comp.pairs:
        rows = [row for w in comp.workloads for row in w.rows
                if row.key == (machine, mode) and row.speedup and _number(row.speedup.median)
                and row.speedup.median > 0]
        ups = [row.speedup.median for row in rows]
        if ups:
            g = math.exp(sum(math.log(u) for u in ups) / len(ups))
            out.append(Summary(machine, mode, g, min(ups), max(ups), len(ups),
                               sum(bool(row.speedup_doubts) for row in rows)))
    return out
