"""``harness compare``: is the candidate worse than the baseline, beyond noise?

Each side is a report.yaml, a sweep.yaml (top-level ``cells:``, each naming its
``report``) or a folder (every report.yaml below it). Reports are matched into
cells by recipe and run mode: the ``config_hash`` plus the distributed type and
world size, which the config does not hold. Several reports of one cell are
repeats and are pooled.

A guarded metric regresses only when its change is beyond its threshold AND,
where samples exist on both sides, a one-sided Mann-Whitney U test says so at
p < 0.05. Reports from different hardware are a hardware comparison: the
verdicts are shown, but nothing counts as a regression.

Exit status: 0 no regression, 1 a guarded metric regressed, 2 bad input.
docs/compare.md has the details.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import BadInput
from harness.report import load_report

ALPHA = 0.05
EXIT_OK, EXIT_REGRESSED = 0, 1
_ABSENT = object()


@dataclass(frozen=True)
class Metric:
    name: str
    """What ``--threshold NAME=PCT`` calls it."""
    label: str
    keys: tuple[str, ...]
    """Dotted report keys; the first non-null one wins (v2 name first, then v1)."""
    higher_is_better: bool
    threshold: float
    """Percent of the baseline, or percentage points when ``absolute``."""
    absolute: bool = False


METRICS = (
    Metric("samples_per_s", "samples/s", ("throughput.samples_per_s", "throughput.train_samples_per_s"),
           True, 5.0),
    Metric("step_time_p50_ms", "step time p50 (ms)", ("step_time_ms.p50",), False, 5.0),
    Metric("peak_rss_mb", "peak RSS (MB)", ("memory.peak_rss_mb",), False, 10.0),
    # Accuracy moves in points, not percent: 0.97 -> 0.96 is one point whatever the baseline.
    Metric("test_accuracy", "test accuracy", ("accuracy.test_accuracy",), True, 1.0, absolute=True),
    Metric("time_to_target_s", "time to target (s)", ("accuracy.time_to_target_s",), False, 10.0),
)


# --------------------------------------------------------------------------- reading

def dig(report: dict, dotted: str, default=None):
    """``report['a']['b']`` for ``'a.b'``; ``default`` when a key is absent, None when a parent is null."""
    node = report
    for part in dotted.split("."):
        if node is None:
            return None
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def metric_value(report: dict, metric: Metric):
    """The metric's value (None when null), or ``_ABSENT`` when no key of it exists."""
    found = [dig(report, k, _ABSENT) for k in metric.keys]
    present = [v for v in found if v is not _ABSENT]
    if not present:
        return _ABSENT
    return next((v for v in present if v is not None), None)


@dataclass
class Loaded:
    path: Path
    report: dict


def _load_sweep(path: Path, data: dict) -> list[Loaded]:
    cells = data.get("cells")
    if not isinstance(cells, list):
        raise BadInput(f"{path}: not a sweep (cells is not a list)")
    out = []
    for cell in cells:
        # A cell that failed before writing anything may carry no report: nothing to compare.
        if not isinstance(cell, dict) or not cell.get("report"):
            continue
        out.append(_load_one(path.parent / str(cell["report"])))
    return out


def _load_one(path: Path) -> Loaded:
    report = load_report(path)
    return Loaded(path / "report.yaml" if path.is_dir() else path, report)


def collect(path: str | Path) -> list[Loaded]:
    """Every report a report file, sweep file or folder stands for."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob("report.yaml"))
        if not found:
            raise BadInput(f"{path}: no report.yaml below this folder")
        return [_load_one(p) for p in found]
    if not path.is_file():
        raise BadInput(f"{path}: no such report, sweep or folder")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise BadInput(f"{path}: not a report (malformed YAML)") from None
    if isinstance(data, dict) and "cells" in data and "schema_version" not in data:
        return _load_sweep(path, data)
    return [_load_one(path)]


# --------------------------------------------------------------------------- cells

def machine(report: dict) -> str:
    comp = dig(report, "environment.comparability") or {}
    return comp.get("gpu_model") or comp.get("cpu_model") or "unknown machine"


def mode(report: dict) -> str:
    d = report.get("distributed") or {}
    return f"{d.get('distributed_type', '?')} x{d.get('world_size', '?')} precision {d.get('precision', '?')}"


def cell_key(report: dict) -> tuple:
    d = report.get("distributed") or {}
    return (report.get("config_hash"), d.get("distributed_type"), d.get("world_size"))


def cell_label(report: dict) -> str:
    bs = dig(report, "config.loader.batch_size")
    return (f"{report.get('name') or '?'} bs={bs if bs is not None else '?'} {mode(report)} "
            f"#{str(report.get('config_hash') or '?')[:8]}")


@dataclass
class Cell:
    key: tuple
    label: str
    loaded: list[Loaded] = field(default_factory=list)

    @property
    def completed(self) -> list[dict]:
        return [x.report for x in self.loaded if x.report.get("status") == "completed"]

    def hardware(self) -> tuple:
        r = self.loaded[0].report
        return (dig(r, "environment.comparability.cpu_model"), dig(r, "environment.comparability.gpu_model"))


def group(loaded: list[Loaded]) -> dict[tuple, Cell]:
    cells: dict[tuple, Cell] = {}
    for item in loaded:
        if item.report.get("status") == "completed":
            for metric in METRICS:
                if metric_value(item.report, metric) is _ABSENT:
                    raise BadInput(f"{item.path}: report lacks the metric {metric.keys[0]}")
        key = cell_key(item.report)
        cells.setdefault(key, Cell(key, cell_label(item.report))).loaded.append(item)
    return cells


# --------------------------------------------------------------------------- statistics

def samples(reports: list[dict], metric: Metric) -> list[float] | None:
    """Repeated observations of ``metric`` in one cell, or None where there are none.

    Per-step times serve both step time and samples/s: the U test works on ranks, and
    samples/s of a step (batch / step time) ranks the steps in exactly reverse order.
    """
    def pooled(key: str, transform=lambda v: v):
        lists = [dig(r, key) for r in reports]
        if all(isinstance(x, list) and x for x in lists):
            return [transform(float(v)) for x in lists for v in x if v is not None]
        return None

    if metric.name == "samples_per_s":
        found = pooled("repeats.samples_per_s") or pooled("raw.step_time_ms", lambda t: 1000.0 / t if t else math.inf)
        if found:
            return found
    if metric.name == "step_time_p50_ms":
        found = pooled("raw.step_time_ms")
        if found:
            return found
    if len(reports) >= 2:
        values = [metric_value(r, metric) for r in reports]
        if all(isinstance(v, (int, float)) for v in values):
            return [float(v) for v in values]
    return None


def can_reach(n1: int, n2: int, alpha: float = ALPHA) -> bool:
    """Whether a one-sided U test on n1 and n2 samples can give p < alpha at all."""
    return n1 > 0 and n2 > 0 and 1.0 / math.comb(n1 + n2, n1) < alpha


def one_sided_p(candidate: list[float], baseline: list[float], candidate_greater: bool) -> float:
    from scipy.stats import mannwhitneyu

    alternative = "greater" if candidate_greater else "less"
    return float(mannwhitneyu(candidate, baseline, alternative=alternative).pvalue)


# --------------------------------------------------------------------------- verdicts

@dataclass
class Row:
    cell: str
    metric: str
    baseline: float | None
    candidate: float | None
    change: str
    threshold: str
    verdict: str
    note: str
    guarded: bool = True


def _median(reports: list[dict], metric: Metric) -> float | None:
    values = [v for v in (metric_value(r, metric) for r in reports) if isinstance(v, (int, float))]
    return float(statistics.median(values)) if values else None


def judge(metric: Metric, base: list[dict], cand: list[dict], threshold: float) -> tuple[str, str, str]:
    """(change, verdict, note) for one metric of one cell."""
    b, c = _median(base, metric), _median(cand, metric)
    if b is None and c is None:
        return "-", "n/a", "null on both sides"
    if c is None:
        if metric.name == "time_to_target_s":
            return "-", "worse", "the candidate never reached the target"
        return "-", "n/a", "null in the candidate"
    if b is None:
        return "-", "n/a", "null in the baseline"
    delta = c - b
    if metric.absolute:
        size, change = abs(delta) * 100.0, f"{delta * 100.0:+.2f} pt"
    else:
        size = abs(delta) / abs(b) * 100.0 if b else (0.0 if delta == 0 else math.inf)
        change = f"{(delta / abs(b) * 100.0) if b else 0.0:+.1f}%"
    if delta == 0 or size <= threshold:
        return change, "within noise", "inside the threshold"
    improved = (delta > 0) == metric.higher_is_better
    direction = "better" if improved else "worse"
    sb, sc = samples(base, metric), samples(cand, metric)
    if sb is None or sc is None:
        return change, direction, "threshold only (no repeated samples)"
    if not can_reach(len(sc), len(sb)):
        return change, direction, f"threshold only (n={len(sb)}/{len(sc)} too few for a test)"
    p = one_sided_p(sc, sb, candidate_greater=delta > 0)
    note = f"Mann-Whitney p={p:.3g} (n={len(sb)}/{len(sc)})"
    if p < ALPHA:
        return change, direction, note
    return change, "within noise", note + ", not significant"


@dataclass
class Comparison:
    baseline: str
    candidate: str
    rows: list[Row]
    unmatched_baseline: list[str]
    unmatched_candidate: list[str]
    not_completed: list[str]
    hardware: list[str]
    """One line per matched cell whose baseline and candidate ran on different hardware."""

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.guarded and r.verdict == "worse"]

    @property
    def exit_status(self) -> int:
        return EXIT_REGRESSED if self.regressions else EXIT_OK


def compare(baseline: list[Loaded], candidate: list[Loaded], thresholds: dict[str, float],
            names: tuple[str, str] = ("baseline", "candidate")) -> Comparison:
    bcells, ccells = group(baseline), group(candidate)
    rows, hardware, not_completed = [], [], []
    for key in [k for k in bcells if k in ccells]:
        bc, cc = bcells[key], ccells[key]
        base, cand = bc.completed, cc.completed
        if not base or not cand:
            side = names[0] if not base else names[1]
            not_completed.append(f"{bc.label}: no completed report in the {side}")
            continue
        different = bc.hardware() != cc.hardware()
        if different:
            hardware.append(f"{bc.label}: {_hw(bc.hardware())} vs {_hw(cc.hardware())}")
        for metric in METRICS:
            limit = thresholds.get(metric.name, metric.threshold)
            change, verdict, note = judge(metric, base, cand, limit)
            rows.append(Row(bc.label, metric.label, _median(base, metric), _median(cand, metric), change,
                            f"{limit:g} pt" if metric.absolute else f"{limit:g}%", verdict, note,
                            guarded=not different))
    unmatched_b = [f"{c.label} ({c.loaded[0].path})" for k, c in bcells.items() if k not in ccells]
    unmatched_c = [f"{c.label} ({c.loaded[0].path})" for k, c in ccells.items() if k not in bcells]
    return Comparison(names[0], names[1], rows, unmatched_b, unmatched_c, not_completed, hardware)


def _hw(hw: tuple) -> str:
    cpu, gpu = hw
    return gpu or cpu or "unknown"


# --------------------------------------------------------------------------- output

HEADER = ("cell", "metric", "baseline", "candidate", "change", "threshold", "verdict", "note")


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"


def _cells(row: Row) -> list[str]:
    return [row.cell, row.metric, _fmt(row.baseline), _fmt(row.candidate), row.change, row.threshold,
            row.verdict, row.note]


def _summary(c: Comparison) -> str:
    if c.hardware and not c.regressions:
        return "hardware comparison, not a regression check: differences are the hardware's"
    if c.regressions:
        return f"REGRESSED: {len(c.regressions)} guarded metric(s) worse beyond threshold and noise"
    return "no regression"


def _notes(c: Comparison) -> list[tuple[str, list[str]]]:
    """(title, items) for everything beside the table: hardware pairs, unmatched and skipped cells."""
    sections = [("hardware comparison, not a regression check", c.hardware),
                (f"only in {c.baseline}", c.unmatched_baseline),
                (f"only in {c.candidate}", c.unmatched_candidate),
                ("not compared", c.not_completed)]
    return [(title, items) for title, items in sections if items]


def render_table(c: Comparison) -> str:
    body = [list(HEADER)] + [_cells(r) for r in c.rows]
    widths = [max(len(row[i]) for row in body) for i in range(len(HEADER))]
    lines = [f"baseline: {c.baseline}", f"candidate: {c.candidate}", ""]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in body]
    for title, items in _notes(c):
        lines += ["", f"{title}:"] + [f"  {i}" for i in items]
    return "\n".join(lines + ["", _summary(c)]) + "\n"


def render_markdown(c: Comparison) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"**baseline** `{c.baseline}` — **candidate** `{c.candidate}`", "",
             "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(esc(v) for v in _cells(r)) + " |" for r in c.rows]
    for title, items in _notes(c):
        lines += ["", f"{title}:", ""] + [f"- {esc(i)}" for i in items]
    return "\n".join(lines + ["", f"**{_summary(c)}**"]) + "\n"


def render_json(c: Comparison) -> str:
    return json.dumps({
        "baseline": c.baseline, "candidate": c.candidate,
        "rows": [r.__dict__ for r in c.rows],
        "unmatched": {"baseline": c.unmatched_baseline, "candidate": c.unmatched_candidate},
        "not_compared": c.not_completed,
        "hardware_comparison": c.hardware,
        "regressions": len(c.regressions),
        "summary": _summary(c),
        "exit_status": c.exit_status,
    }, indent=2) + "\n"


RENDERERS = {"table": render_table, "markdown": render_markdown, "json": render_json}


# --------------------------------------------------------------------------- command

def parse_thresholds(items: list[str]) -> dict[str, float]:
    by_name = {m.name: m for m in METRICS}
    by_key = {k: m for m in METRICS for k in m.keys}
    out = {}
    for item in items:
        name, sep, pct = item.partition("=")
        metric = by_name.get(name) or by_key.get(name)
        if not sep or metric is None:
            raise BadInput(f"--threshold {item}: expected METRIC=PCT with METRIC one of {', '.join(by_name)}")
        try:
            value = float(pct.rstrip("%"))
        except ValueError:
            raise BadInput(f"--threshold {item}: {pct!r} is not a number") from None
        if not value >= 0:
            raise BadInput(f"--threshold {item}: must be >= 0")
        out[metric.name] = value
    return out


def cmd_compare(args) -> int:
    thresholds = parse_thresholds(args.threshold or [])
    result = compare(collect(args.baseline), collect(args.candidate), thresholds,
                     names=(args.baseline, args.candidate))
    sys.stdout.write(RENDERERS[args.format](result))
    return result.exit_status


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare a candidate's reports with a baseline's; exit 1 on a regression",
        description="Compare reports cell by cell. Exit 0 no regression, 1 a guarded metric "
                    "regressed, 2 bad input.")
    p.add_argument("baseline", help="report.yaml, sweep.yaml or a folder of reports")
    p.add_argument("candidate", help="report.yaml, sweep.yaml or a folder of reports")
    p.add_argument("--threshold", action="append", metavar="METRIC=PCT",
                   help="override a threshold: " + ", ".join(
                       f"{m.name} (default {m.threshold:g}{' pt' if m.absolute else '%'})" for m in METRICS))
    p.add_argument("--format", choices=tuple(RENDERERS), default="table")
    p.set_defaults(func=cmd_compare)
