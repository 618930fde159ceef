"""``harness history check STORE [--strict]``: the gate for a CI job that keeps a history.

For each series (workload x mode x machine x figure) the newest commit is judged
against the level before it, with ``harness compare``'s test and verdict words
(harness/gate/verdicts.py) and its exit codes:

- when change points split the series, the newest commit lies in the last segment:
  that segment (from the change to the newest commit) is judged against the segment
  before it, and a regression is named by the commit that started it, the change's
  first point. A level that fell and stayed fallen fails every check until it
  recovers, as a failing test does;
- with no change, the newest commit's points are judged against every earlier point
  (a change needs ``min_segment`` commits on each side, so a fall at the newest
  commit is judged here first).

As in compare, a side of several commits gives one value per commit (its median),
a side of one commit its replicates. Exit 0 pass; 1 a regression (or, with
--strict, a suspicious change); 2 bad input.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import EXIT_FAILED, EXIT_OK
from harness.gate.verdicts import BY_NAME, IMPROVED, INSUFFICIENT, REGRESSION, SUSPICIOUS, Metric, judge_values
from harness.history.series import Point, Series, build
from harness.report.columns import aligned

ALIASES = {"step_time_ms_p50": "step_time_p50_ms"}
"""The store's figure names that the gate calls otherwise."""
OTHER_THRESHOLD = 2.0
"""Percent, for a figure the gate has no threshold for (test_loss)."""
HEADER = ("workload", "mode", "machine", "figure", "baseline", "baseline commits", "newest", "change",
          "verdict", "note")


@dataclass
class Row:
    series: Series
    baseline: float | None
    baseline_commits: str
    newest: float | None
    change: str
    verdict: str
    note: str
    started: str | None
    """The commit that started the judged segment, when a change point began it."""


def metric(s: Series) -> Metric:
    m = BY_NAME.get(ALIASES.get(s.figure, s.figure))
    if m is not None:
        return m
    return Metric(s.figure, s.figure, s.higher_is_better, OTHER_THRESHOLD)


def _side(points: list[Point]) -> list[float]:
    if len(points) == 1:
        return list(points[0].values)
    return [float(statistics.median(p.values)) for p in points]


def _span(points: list[Point]) -> str:
    if not points:
        return "-"
    if len(points) == 1:
        return points[0].short
    return f"{points[0].short}..{points[-1].short} ({len(points)})"


def judge_series(s: Series) -> Row:
    pts = s.points
    newest = float(statistics.median(pts[-1].values))
    if len(pts) < 2:
        return Row(s, None, "-", newest, "-", INSUFFICIENT, "one commit: nothing before it", None)
    changes = s.segmentation.changes if s.segmentation else []
    if changes:
        last = changes[-1]
        start = changes[-2].index if len(changes) > 1 else 0
        base, cand = pts[start:last.index], pts[last.index:]
        where = (f"since {last.commit[:7]} ({len(cand)} commit(s); change point {last.size * 100:+.1f}%, "
                 f"p={last.p_value:.3g} over {last.permutations} permutations, seed {last.seed})")
        started = last.commit
    else:
        base, cand = pts[:-1], pts[-1:]
        reason = s.segmentation.reason if s.segmentation and s.segmentation.reason else "no change point"
        where = f"newest commit alone ({reason})"
        started = pts[-1].commit
    j = judge_values(metric(s), _side(base), _side(cand), metric(s).threshold)
    return Row(s, j.baseline, _span(base), newest, j.change, j.verdict, f"{where}; {j.note}",
               started if j.verdict in (REGRESSION, SUSPICIOUS, IMPROVED) else None)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"


def render(rows: list[Row], strict: bool) -> tuple[str, int]:
    table = [list(HEADER)] + [[r.series.workload_name, r.series.mode, r.series.machine, r.series.figure,
                               _fmt(r.baseline), r.baseline_commits, _fmt(r.newest), r.change, r.verdict, r.note]
                              for r in rows]
    lines = aligned(table)
    fails = {REGRESSION} | ({SUSPICIOUS} if strict else set())
    failing = [r for r in rows if r.verdict in fails]
    lines.append("")
    for r in rows:
        if r.verdict in (REGRESSION, SUSPICIOUS) and r.started:
            lines.append(f"{r.verdict}: {r.series.title} {r.change}, started at commit {r.started}")
    count = sum(r.verdict == REGRESSION for r in rows), sum(r.verdict == SUSPICIOUS for r in rows)
    tail = "" if strict or not count[1] else "; --strict would fail the suspicious"
    lines.append(f"{'FAIL' if failing else 'PASS'}: {len(rows)} series checked: {count[0]} regressed, "
                 f"{count[1]} suspicious{tail}")
    return "\n".join(lines) + "\n", EXIT_FAILED if failing else EXIT_OK


def check(entries: list[dict], strict: bool) -> tuple[str, int]:
    """(the printed table, the exit status) of the entries' series."""
    if not entries:
        return "no entries: nothing to check\n", EXIT_OK
    newest = max(entries, key=lambda e: e["order"])["commit"]
    rows = [judge_series(s) for s in build(entries)]
    for r in rows:
        if r.series.points[-1].commit != newest:  # a workload the newest commit did not run
            r.note = f"not run at the store's newest commit {newest[:7]}; {r.note}"
    return render(rows, strict)


def run_check(store: Path, strict: bool) -> int:
    from harness.history.store import read_entries  # the store's reader, owned by harness history add

    entries, warnings = read_entries(store)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    text, status = check(entries, strict)
    sys.stdout.write(text)
    return status
