"""``harness report``: how much faster is machine B than machine A on each workload, and how sure are we.

Reports are grouped by workload (identity.py: what is computed, never the run's
``name``), then by machine and mode; each row's samples/s is compared with one
reference machine and mode (compare_machines.py), and runs that differ only in their
process count make scaling series (scaling.py). Written: report.md, report.html
(self-contained: charts embedded, nothing fetched), report.csv, summary.csv,
scaling.csv and plots/*.svg. Charts need matplotlib (the ``plots`` extra); without
it the documents hold the tables alone. Reads YAML only: no torch import.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from harness.files.atomic import write_text_atomic
from harness.report.sources import Loaded, collect
from harness.errors import BadInput
from harness.hwreport import charts, documents, tables
from harness.hwreport.compare_machines import build, geomean_speedups
from harness.hwreport.identity import MachineNaming
from harness.hwreport.scaling import families


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    # repr keeps every digit a float has: the CSV holds the exact figures, the tables round them.
    writer.writerows([["" if v is None else repr(v) if isinstance(v, float) else v for v in row] for row in rows])
    return buf.getvalue()


def content(items: list[Loaded], naming: MachineNaming, baseline_machine: str | None = None,
            baseline_mode: str | None = None, plot: bool = True) -> documents.Content:
    comp = build(items, naming, baseline_machine, baseline_mode)
    summaries = geomean_speedups(comp)
    fams = families(items, naming)
    envs: dict[str, list[Loaded]] = {m: [] for m in comp.machines}
    for item in items:
        envs[naming(item.report, item.path)].append(item)
    drawn = charts.make_charts(comp, summaries, fams) if plot else None
    return documents.Content(comp, summaries, fams, envs, drawn, len(items), items)


def write(c: documents.Content, output: Path) -> list[Path]:
    """Every file of the report, each written atomically; returns their paths."""
    output.mkdir(parents=True, exist_ok=True)
    files = {}
    for slug, chart in (c.charts or {}).items():
        (output / "plots").mkdir(exist_ok=True)
        write_text_atomic(output / "plots" / f"{slug}.svg", chart.svg)
        files[slug] = f"plots/{slug}.svg"
    out = [write_text_atomic(output / "report.md", documents.render_markdown(c, files)),
           write_text_atomic(output / "report.html", documents.render_html(c)),
           write_text_atomic(output / "report.csv", _csv(tables.CSV_ROWS, tables.csv_rows(c.comp))),
           write_text_atomic(output / "summary.csv", _csv(tables.CSV_SUMMARY, tables.csv_summary(c.comp, c.summaries)))]
    if c.families:
        out.append(write_text_atomic(output / "scaling.csv", _csv(tables.CSV_SCALING, tables.csv_scaling(c.families))))
    return [Path(p) for p in out]


def _labels(specs: list[str]) -> tuple[tuple[Path, str], ...]:
    out = []
    for spec in specs:
        path, sep, name = spec.rpartition("=")
        if not sep or not path or not name.strip():
            raise BadInput(f"--label {spec!r}: expected PATH=NAME, e.g. runs/laptop=laptop")
        if not Path(path).exists():
            raise BadInput(f"--label {spec!r}: {path} does not exist")
        out.append((Path(path).resolve(), name.strip()))
    return tuple(out)


def cmd_report(args) -> int:
    output = Path(args.output)
    for folder in (output, *output.parents):  # the nearest existing one must be a folder
        if folder.exists():
            if not folder.is_dir():
                raise BadInput(f"--output: {folder} is a file; expected a folder for report.md, "
                               "report.html, the CSV files and plots/")
            break
    naming = MachineNaming(args.machine_by, _labels(args.label or []))
    # A sweep row without a report (a cell that failed before writing one) has no figures to show.
    items = [item for source in args.reports for item in collect(source) if item.report is not None]
    if not items:
        raise BadInput("no reports found in " + ", ".join(args.reports))
    c = content(items, naming, args.baseline_machine, args.baseline_mode, plot=not args.no_plots)
    written = write(c, output)
    from harness.hwreport import curves  # each run's metrics.jsonl over time, after the comparison

    curves.append_to(output / "report.md", output / "report.html", [i.path for i in items], not args.no_plots)
    if c.charts is None and not args.no_plots:
        print("matplotlib is not installed: wrote tables without plots (pip install 'harness[plots]')",
              file=sys.stderr)
    print(f"wrote {', '.join(p.name for p in written)} in {output} from {len(items)} reports "
          f"({len(c.comp.workloads)} workloads, {len(c.comp.machines)} machines)")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="compare machines per workload: report.md, report.html and CSV")
    p.add_argument("reports", nargs="+", metavar="REPORTS", help="report.yaml files, sweep.yaml files or folders")
    p.add_argument("--output", required=True, help="folder for report.md, report.html, *.csv and plots/")
    p.add_argument("--baseline-machine", metavar="MACHINE",
                   help="the machine every speed-up is measured against (default: the first seen)")
    p.add_argument("--baseline-mode", metavar="MODE",
                   help="its mode, as the report names it, e.g. 'cpu ×1' (default: its first, fewest processes)")
    p.add_argument("--machine-by", choices=("hardware", "host"), default="hardware",
                   help="a machine is its GPU (else CPU) model, or also its host name")
    p.add_argument("--label", action="append", metavar="PATH=NAME",
                   help="every report at or below PATH is machine NAME (repeatable)")
    p.add_argument("--no-plots", action="store_true",
                   help="tables only: no matplotlib (its import and drawing are most of the command's time)")
    p.set_defaults(func=cmd_report)
