"""``harness compare --calibrate RUNS...``: how noisy is this machine, and what can the gate see?

The runs are A/A: one commit, one recipe, run several times (several reports of a
cell, or one report of whole-run repeats). For each metric: the spread of the
replicates, and the smallest change the exact test detects at p < alpha when both
sides hold that many repeats with that spread (harness/gate/significance.py). A threshold
below the A/A range lets a single run against a single run look like a change.
"""

from __future__ import annotations

import math
import statistics

from harness.report import conditions
from harness.report.columns import aligned
from harness.gate.compare import group
from harness.errors import BadInput
from harness.report.sources import Loaded
from harness.gate.significance import ALPHA, detectable_shift, repeats_needed
from harness.gate.verdicts import METRICS, Metric, replicates


def _spread(metric: Metric, values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    out = {"metric": metric.name, "n": len(values), "reached": f"{len(finite)}/{len(values)}"}
    if not finite:
        return out
    med = statistics.median(finite)
    lo, hi = min(finite), max(finite)
    scale = 100.0 if metric.absolute else (100.0 / abs(med) if med else 0.0)
    out.update(median=med, min=lo, max=hi, range=(hi - lo) * scale,
               cv=(statistics.stdev(finite) * scale if len(finite) > 1 else None))
    shift = detectable_shift(finite, ALPHA, metric.higher_is_better) if not metric.absolute else None
    out["detectable"] = shift * 100.0 if shift is not None else None
    # The smallest threshold the A/A runs stay inside, rounded up to a whole unit.
    out["suggested_threshold"] = max(1.0, math.ceil(out["range"] + 1e-9))
    return out


def calibrate(loaded: list[Loaded]) -> list[tuple[str, list[dict]]]:
    """(cell label, one spread per metric) for each cell with two or more completed replicates."""
    out = []
    for cell in group(loaded).values():
        rows = []
        for metric in METRICS:
            values = replicates(cell.completed, metric) if cell.completed else []
            if len(values) >= 2:
                rows.append(_spread(metric, values))
        if rows:
            out.append((cell.label + _busy(cell.completed), rows))
    if not out:
        raise BadInput("--calibrate: no cell holds two or more completed runs (A/A runs of one recipe)")
    return out


def _busy(reports: list[dict]) -> str:
    """A spread measured on a busy machine is the machine's load, not the recipe's noise."""
    contended = sum(conditions.verdict(r) == conditions.CONTENDED for r in reports)
    unknown = sum(conditions.verdict(r) == conditions.UNKNOWN for r in reports)
    if contended:
        return (f" ({contended} of {len(reports)} runs contended: their timings' spread is the machine's load; "
                "calibrate on a quiet machine)")
    return f" (contention unknown for {unknown} of {len(reports)} runs)" if unknown else ""


def _f(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render(result: list[tuple[str, list[dict]]]) -> str:
    lines = []
    for label, rows in result:
        table = [["metric", "n", "median", "min", "max", "range", "cv", "detectable", "threshold"]]
        for r in rows:
            unit = " pt" if r["metric"] == "test_accuracy" else "%"
            detectable = r.get("detectable")
            table.append([r["metric"], r["n"], _f(r.get("median"), ",.4g"), _f(r.get("min"), ",.4g"),
                          _f(r.get("max"), ",.4g"), _f(r.get("range"), ".1f") + unit, _f(r.get("cv"), ".1f") + unit,
                          "n/a" if detectable is None else _f(detectable, ".1f") + "%",
                          _f(r.get("suggested_threshold"), "g") + unit])
        body = aligned(table, right=set(range(1, 9)))
        for i, r in enumerate(rows, start=1):
            if r["metric"] == "time_to_target_s":
                body[i] += f"  reached {r['reached']}"
        lines += [f"cell {label}", "", *body, ""]
    lines += ["range: (max - min) / median of the runs; cv: their standard deviation / median.",
              f"detectable: the smallest shift the exact Mann-Whitney test finds at p < {ALPHA:g} when each "
              f"side holds this many runs with this spread (n/a below {repeats_needed(ALPHA)} runs).",
              "threshold: the A/A range rounded up; pass it as --threshold METRIC=VALUE."]
    return "\n".join(lines) + "\n"
