"""The report's tables, once, for markdown, HTML and CSV.

A table is a header and rows of cells; a cell is ``(text, numeric)`` for the documents
(numeric cells align right). The CSV rows hold the same figures unrounded.
"""

from __future__ import annotations

from collections import defaultdict

from harness.hwreport import doubts
from harness.hwreport.compare_machines import Comparison, Estimate, Row, Summary, Workload
from harness.hwreport.scaling import Family, Point
from harness.report.figures import dig
from harness.report.sources import Loaded

Cell = tuple[str, bool]


def num(value, spec: str = ",.1f", prefix: str = "") -> str:
    return "-" if value is None else prefix + format(value, spec)


def rate(value) -> str:
    """Samples/s with at least three significant figures: 0.5 reads 0.5, never 1 or 0."""
    if value is None:
        return "-"
    return format(value, ",.1f") if abs(value) >= 10 else format(value, ".3g")


def interval(est: Estimate | None, spec, prefix: str = "") -> str:
    """``spec``: a format spec, or a function such as ``rate``."""
    if est is None or est.median is None:
        return "-"
    if est.low is None:
        return "one value: none"
    level = f"{est.level:.0%}"
    show = spec if callable(spec) else (lambda v: format(v, spec))
    return f"{prefix}{show(est.low)} – {prefix}{show(est.high)} ({level})"


def _replicates(row: Row) -> str:
    text = str(row.samples_per_s.n)
    return text + (f" (+{row.failed} not completed)" if row.failed else "")


def _ttt(row: Row) -> tuple[str, str]:
    if not row.ttt_tries:
        return "-", "no target"
    if not row.ttt_reached:
        return "never", f"0/{row.ttt_tries}"
    return num(row.ttt_s, ",.2f"), f"{row.ttt_reached}/{row.ttt_tries}"


WORKLOAD_HEADER = ["machine", "mode", "replicates", "samples/s", "interval (coverage)", "timing conditions", "speed-up",
                   "speed-up interval (at least)", "MFU", "peak PSS (MB)", "device peak (MB)", "data wait", "test acc",
                   "time to target (s)", "reached target"]


def workload_rows(w: Workload) -> list[list[Cell]]:
    out = []
    for r in w.rows:
        up = "reference" if r is w.reference else num(r.speedup.median if r.speedup else None, ".2f", "×")
        ttt, reached = _ttt(r)
        out.append([(r.machine, False), (r.mode, False), (_replicates(r), True),
                    (rate(r.samples_per_s.median), True), (interval(r.samples_per_s, rate), True),
                    (r.taken.tags or "quiet", False), (doubts.cell(up, r.speedup_doubts), True),
                    (interval(None if r is w.reference else r.speedup, ".2f", "×"), True),
                    (num(r.mfu, ".4f"), True), (num(r.peak_pss_mb), True), (num(r.device_peak_mb), True),
                    (num(r.data_wait_fraction, ".3f"), True), (num(r.test_accuracy, ".4f"), True), (ttt, True),
                    (reached, True)])
    return out


TOKEN_HEADER = ["tokens/s", "tokens/s interval (coverage)"]
"""Shown after samples/s for a language model's workload (its rows have tokens/s); an
image workload's table keeps WORKLOAD_HEADER as it is."""


def workload_table(w: Workload) -> tuple[list[str], list[list[Cell]]]:
    """The workload's header and rows: WORKLOAD_HEADER, with tokens/s beside samples/s where
    the workload is a language model's."""
    rows = workload_rows(w)
    if not any(r.tokens_per_s.median is not None for r in w.rows):
        return WORKLOAD_HEADER, rows
    at = WORKLOAD_HEADER.index("interval (coverage)") + 1
    for row, r in zip(rows, w.rows):
        row[at:at] = [(rate(r.tokens_per_s.median), True), (interval(r.tokens_per_s, rate), True)]
    return WORKLOAD_HEADER[:at] + TOKEN_HEADER + WORKLOAD_HEADER[at:], rows


SUMMARY_HEADER = ["machine", "mode", "geometric-mean speed-up", "lowest", "highest", "workloads",
                  "not findings"]


def summary_rows(summaries: list[Summary]) -> list[list[Cell]]:
    return [[(s.machine, False), (s.mode, False), (num(s.geomean, ".2f", "×"), True),
             (num(s.low, ".2f", "×"), True), (num(s.high, ".2f", "×"), True), (str(s.workloads), True),
             (f"{s.doubted} of {s.workloads} (see the workloads' tables)" if s.doubted else "-", False)]
            for s in summaries]


SCALING_HEADER = ["series", "processes", "per-device batch", "global batch", "threads (per process, total)",
                  "samples/s", "timing conditions", "speed-up", "efficiency"]


def _threads(p: Point) -> str:
    per, total = ("/".join(map(str, v)) or "?" for v in (p.taken.threads, p.taken.total_threads))
    return "not recorded" if per == total == "?" else f"{per}, {total}"


def scaling_rows(fam: Family) -> list[list[Cell]]:
    out = []
    for s in fam.series:
        base = s.points[0].processes
        for p in s.points:
            procs = str(p.processes) if p.nodes == 1 else f"{p.processes} ({p.nodes} nodes)"
            out.append([(s.name, False), (procs, True), (num(p.per_device_batch, "d"), True),
                        (num(p.global_batch, "d"), True), (_threads(p), True), (rate(p.samples_per_s.median), True),
                        (p.taken.tags or "quiet", False),
                        (num(p.speedup, ".2f", "×") + ("" if base == 1 else f" over {base}"), True),
                        (doubts.cell(num(p.efficiency, ".0%"), p.doubts), True)])
    return out


def environment_rows(items: list[Loaded]) -> list[tuple[str, str]]:
    """Each comparability key with every value seen on this machine (one, unless versions differ)."""
    seen: dict[str, list] = defaultdict(list)
    for item in items:
        block = dict(dig(item.report, "environment.comparability") or {})
        info = dig(item.report, "environment.info") or {}
        for key in ("hostname", "os", "cpu_physical_cores", "ram_total_mb", "gpu_driver"):
            block.setdefault(key, info.get(key))
        for key, value in block.items():
            if value not in seen[key]:
                seen[key].append(value)
    return [(k, ", ".join("-" if v is None else str(v) for v in vs)) for k, vs in seen.items()]


def machines_table(environments: dict[str, list[Loaded]]) -> tuple[list[str], list[list[Cell]]]:
    """One column per machine, one row per environment key; a row whose values differ is marked."""
    per = {m: dict(environment_rows(items)) for m, items in environments.items()}
    keys = list(dict.fromkeys(k for values in per.values() for k in values))
    rows = []
    for k in keys:
        values = [per[m].get(k, "-") for m in per]
        mark = "differs" if len(set(values)) > 1 else ""
        rows.append([(k, False), *((v, False) for v in values), (mark, False)])
    return ["environment", *per, ""], rows


# --------------------------------------------------------------------------- CSV

CSV_ROWS = ["workload", "workload_id", "scenario", "machine", "mode", "reference", "replicates", "not_completed",
            "samples_per_s", "samples_per_s_low", "samples_per_s_high", "samples_per_s_coverage", "speedup",
            "speedup_low", "speedup_high", "speedup_coverage_at_least", "mfu_measured_peak", "mfu_datasheet",
            "peak_pss_mb", "device_peak_allocated_mb", "data_wait_fraction", "test_accuracy", "time_to_target_s",
            "time_to_target_reached", "time_to_target_tries", "reports", "timing_conditions", "speedup_doubts",
            # Last, so the columns above keep their places; empty for an image workload.
            "tokens_per_s", "tokens_per_s_low", "tokens_per_s_high", "tokens_per_s_coverage"]


def csv_rows(comp: Comparison) -> list[list]:
    out = []
    for w in comp.workloads:
        for r in w.rows:
            sp, up = r.samples_per_s, r.speedup or Estimate(None)
            out.append([w.title, w.id, w.scenario, r.machine, r.mode, r is w.reference, sp.n, r.failed,
                        sp.median, sp.low, sp.high, sp.level, up.median, up.low, up.high, up.level, r.mfu,
                        r.mfu_datasheet, r.peak_pss_mb, r.device_peak_mb, r.data_wait_fraction, r.test_accuracy,
                        r.ttt_s, r.ttt_reached, r.ttt_tries, ";".join(str(p) for p in r.paths),
                        r.taken.tags or "quiet", "; ".join(r.speedup_doubts), r.tokens_per_s.median,
                        r.tokens_per_s.low, r.tokens_per_s.high, r.tokens_per_s.level])
    return out


CSV_SUMMARY = ["machine", "mode", "reference_machine", "reference_mode", "geomean_speedup", "lowest_speedup",
               "highest_speedup", "workloads", "speedups_not_findings"]


def csv_summary(comp: Comparison, summaries: list[Summary]) -> list[list]:
    ref = comp.baseline or (None, None)
    return [[s.machine, s.mode, ref[0], ref[1], s.geomean, s.low, s.high, s.workloads, s.doubted] for s in summaries]


CSV_SCALING = ["workload", "machine", "mode", "scaling", "fixed_batch", "processes", "nodes", "per_device_batch",
               "global_batch", "samples_per_s", "speedup", "efficiency", "threads_per_process", "total_threads",
               "timing_conditions", "efficiency_doubts"]


def csv_scaling(fams: list[Family]) -> list[list]:
    return [[f.title, f.machine, f.mode, s.kind, s.batch, p.processes, p.nodes, p.per_device_batch, p.global_batch,
             p.samples_per_s.median, p.speedup, p.efficiency, "/".join(map(str, p.taken.threads)),
             "/".join(map(str, p.taken.total_threads)), p.taken.tags or "quiet", "; ".join(p.doubts)]
            for f in fams for s in f.series for p in s.points]
