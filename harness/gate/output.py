"""``harness compare``'s output: a table, Markdown for a pull request, or JSON for a script."""

from __future__ import annotations

import json
import math

from harness.gate.compare import FAILED, MISSING, NEW, Comparison, Row
from harness.gate.verdicts import REGRESSION, SUSPICIOUS
from harness.report.columns import aligned

HEADER = ("cell", "metric", "baseline", "candidate", "change", "threshold", "verdict", "note")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "never"
    return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"


def _cells(row: Row) -> list[str]:
    verdict = row.verdict if row.guarded else f"{row.verdict} (other hardware)"
    note = row.note
    if row.contended:
        # Beside the figure it qualifies: a busy machine's timing is no verdict on the change.
        verdict += " (contended)"
        note = f"{row.conditions}: rerun on a quiet machine; {note}"
    elif row.conditions:
        note = f"{row.conditions}; {note}"
    return [row.cell, row.metric, _fmt(row.baseline), _fmt(row.candidate), row.change, row.threshold,
            verdict, note]


def summary(c: Comparison) -> str:
    """One line: how many cells were compared, regressed, failed, missing, new; pass or fail."""
    counts = (f"{c.cells} cell(s) compared: {c.count(REGRESSION)} regressed, {c.count(SUSPICIOUS)} suspicious, "
              f"{c.count(FAILED)} failed, {c.count(MISSING)} missing, {c.count(NEW)} new")
    verdict = "FAIL" if c.failing else "PASS"
    allowed = [w for w, on in (("missing", c.options.allow_missing), ("new", c.options.allow_new)) if on]
    tail = f" ({', '.join(allowed)} allowed)" if allowed else ""
    if c.hardware:
        tail += "; hardware comparison for some cells: their verdicts are the hardware's, not counted"
    if c.contended:
        fails = "; --strict fails them" if c.options.strict else "; --strict would fail them"
        tail += (f"; {c.contended} cell(s) timed on a contended machine: their timing verdicts are the "
                 f"machine's load, not the change{fails}")
    return f"{verdict}: {counts}{tail}"


def render_table(c: Comparison) -> str:
    lines = [f"baseline: {c.baseline}", f"candidate: {c.candidate}", ""]
    lines += aligned([list(HEADER)] + [_cells(r) for r in c.rows])
    if c.hardware:
        lines += ["", "hardware comparison, not a regression check:"] + [f"  {h}" for h in c.hardware]
    return "\n".join(lines + ["", summary(c)]) + "\n"


def render_markdown(c: Comparison) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"**baseline** `{c.baseline}` — **candidate** `{c.candidate}`", "",
             "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(esc(v) for v in _cells(r)) + " |" for r in c.rows]
    if c.hardware:
        lines += ["", "hardware comparison, not a regression check:", ""] + [f"- {esc(h)}" for h in c.hardware]
    return "\n".join(lines + ["", f"**{summary(c)}**"]) + "\n"


def _json_value(v):
    return None if v is None else ("inf" if math.isinf(v) else v)


def render_json(c: Comparison) -> str:
    rows = [{**r.__dict__, "baseline": _json_value(r.baseline), "candidate": _json_value(r.candidate)}
            for r in c.rows]
    return json.dumps({
        "baseline": c.baseline, "candidate": c.candidate, "rows": rows,
        "counts": {"compared": c.cells, "regressed": c.count(REGRESSION), "suspicious": c.count(SUSPICIOUS),
                   "failed": c.count(FAILED), "missing": c.count(MISSING), "new": c.count(NEW),
                   "contended": c.contended},
        "hardware_comparison": c.hardware,
        "summary": summary(c),
        "exit_status": c.exit_status,
    }, indent=2) + "\n"


RENDERERS = {"table": render_table, "markdown": render_markdown, "json": render_json}
