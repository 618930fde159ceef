"""``harness sweep``'s closing table: every cell with its figures and the conditions they were
timed under, then the best cell per workload for throughput, memory and time to accuracy.

"Best" never crosses workloads: resnet50's samples/s against digits' says nothing. A
workload here is what the cells compute less the per-device batch (identity.family_id),
so a sweep over batch size, workers, precision or processes has one best, and a sweep over
models one per model. The conditions come from each cell's report (harness/report/conditions.py);
the table reads them, never sweep.yaml's rows, which stay the figures alone.
"""

from __future__ import annotations

from pathlib import Path

from harness.report import conditions
from harness.errors import BadInput
from harness.hwreport import identity
from harness.report.columns import aligned
from harness.report.io import load_report


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


COLUMNS = [  # header, row key, format
    ("samples/s", "samples_per_s", ",.1f"), ("step p50 ms", "step_time_p50_ms", ".2f"),
    ("data wait", "data_wait_fraction", ".3f"), ("peak PSS MB", "peak_pss_mb", ",.0f"),
    ("test acc", "test_accuracy", ".4f"), ("to target s", "time_to_target_s", ".2f"),
    ("seconds", "seconds", ".1f"),
]


TOKENS = ("tokens/s", "tokens_per_s", ",.0f")
"""After samples/s where a row has it (a language model's cell): samples of another data.seq_len are
other samples, tokens are not."""


def _columns(rows: list[dict]) -> list[tuple[str, str, str]]:
    if not any(isinstance(r.get("tokens_per_s"), (int, float)) for r in rows):
        return COLUMNS
    return [COLUMNS[0], TOKENS, *COLUMNS[1:]]


def _reports(rows: list[dict], folder: Path | None) -> dict[str, dict]:
    """Each row's report by cell id, where it can be read (YAML only, the raw lists left out)."""
    out = {}
    for r in rows:
        if folder is None or not isinstance(r.get("report"), str):
            continue
        try:
            out[r["id"]] = load_report(folder / r["report"], raw=False)
        except (BadInput, OSError):
            continue  # a report gone since: its row keeps its figures, without conditions
    return out


def _conditions(row: dict, report: dict | None) -> str:
    if row["status"] != "completed" or report is None:
        return "-"
    return conditions.tags(report) if conditions.caveats(report) else "quiet"


def _best_lines(done: list[dict], reports: dict[str, dict], indent: str) -> list[str]:
    def best(key: str, pick, unit: str, spec: str) -> str:
        have = [r for r in done if isinstance(r.get(key), (int, float))]
        if not have:
            return "-"
        r = pick(have, key=lambda r: r[key])
        text = f"{r['id']} ({format(r[key], spec)} {unit})"
        report = reports.get(r["id"])
        caveat = _conditions(r, report)
        if key == "peak_pss_mb" or caveat in ("quiet", "-"):  # memory is no timing
            return text
        if conditions.verdict(report) == conditions.CONTENDED:
            return f"{text}; timed {caveat}: not a finding, rerun on a quiet machine"
        return f"{text}; timed {caveat}"

    lm = bool(done) and all(isinstance(r.get("tokens_per_s"), (int, float)) for r in done)
    key, unit, spec = ("tokens_per_s", "tokens/s", ",.0f") if lm else ("samples_per_s", "samples/s", ",.1f")
    return [f"{indent}best throughput        {best(key, max, unit, spec)}",
            f"{indent}best memory            {best('peak_pss_mb', min, 'MB peak PSS', ',.0f')}",
            f"{indent}best time-to-accuracy  {best('time_to_target_s', min, 's', '.2f')}"]


def _workloads(done: list[dict], reports: dict[str, dict]) -> dict[str, list[dict]]:
    """Completed rows by workload, keyed by a title (with its id: two may read alike)."""
    groups: dict[str, list[dict]] = {}
    for r in done:
        report = reports.get(r["id"])
        key = f"{identity.workload_title(report, batch=False)} #{identity.family_id(report)[:8]}" if report else ""
        groups.setdefault(key, []).append(r)
    return groups


def summary_table(rows: list[dict], folder: Path | None = None) -> str:
    """Every cell, then the best cells per workload; ``folder`` (the sweep's) holds the reports."""
    reports = _reports(rows, folder)
    columns = _columns(rows)
    header = ["cell", "status", *(c[0] for c in columns), "timing conditions"]
    body = [[r["id"], r["status"], *(_fmt(r.get(k), f) for _, k, f in columns),
             _conditions(r, reports.get(r["id"]))] for r in rows]
    lines = aligned([header, *body])

    done = [r for r in rows if r["status"] == "completed"]
    groups = _workloads(done, reports)
    lines.append("")
    if len(groups) <= 1:
        lines += _best_lines(done, reports, "")
    else:
        for title, members in groups.items():
            lines += [f"{title or 'cells without a readable report'}:", *_best_lines(members, reports, "  ")]
    failed = sum(r["status"] == "failed" for r in rows)
    lines.append(f"failed cells           {failed} of {len(rows)}")
    return "\n".join(lines)
