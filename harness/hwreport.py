"""``harness report``: many reports as one hardware report, report.md and report.html.

Results are grouped by machine (GPU model, else CPU model) and run mode
(distributed type, world size, precision). The HTML is self-contained: plots are
embedded as base64 PNG and nothing is fetched. Plots need matplotlib (the
``plots`` extra); without it the report holds the tables alone.
"""

from __future__ import annotations

import base64
import html
import io
import os
import statistics
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.atomic import write_text_atomic
from harness.compare import Loaded, collect, machine, mode
from harness.errors import BadInput
from harness.report import dig, figures

# (column title, row field, format); the row fields are filled in ``result_row``.
COLUMNS = (
    ("recipe", "name", "s"), ("batch", "batch_size", "d"),
    ("workers", "num_workers", "d"), ("pin", "pin_memory", "s"), ("status", "status", "s"),
    ("samples/s", "samples_per_s", ",.1f"), ("step p50 (ms)", "step_time_p50_ms", ",.3f"),
    ("data wait", "data_wait_fraction", ".3f"), ("peak RSS (MB)", "peak_rss_mb", ",.1f"),
    ("peak PSS (MB)", "peak_pss_mb", ",.1f"),
    ("device peak (MB)", "device_peak_mb", ",.1f"), ("test acc", "test_accuracy", ".4f"),
    ("time to target (s)", "time_to_target_s", ",.2f"), ("MFU", "mfu", ".3f"), ("report", "source", "s"),
)


def result_row(item: Loaded) -> dict:
    r = item.report
    return {
        "machine": machine(r), "mode": mode(r), "name": r.get("name"), "status": r.get("status"),
        "batch_size": dig(r, "config.loader.batch_size"),
        "num_workers": dig(r, "config.loader.num_workers"),
        "pin_memory": dig(r, "config.loader.pin_memory"),
        **figures(r, ("samples_per_s", "step_time_p50_ms", "data_wait_fraction", "peak_rss_mb", "peak_pss_mb",
                      "device_peak_mb",
                      "test_accuracy", "time_to_target_s", "mfu")),
        "source": str(item.path),
    }


def fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "s" or not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    return format(value, spec)


def environment_rows(items: list[Loaded]) -> list[tuple[str, str]]:
    """Each comparability key with every value seen on this machine (one, unless versions differ)."""
    seen: dict[str, list] = defaultdict(list)
    for item in items:
        block = dict(dig(item.report, "environment.comparability") or {})
        info = dig(item.report, "environment.info") or {}
        for key in ("os", "cpu_physical_cores", "ram_total_mb", "gpu_driver"):
            block.setdefault(key, info.get(key))
        for key, value in block.items():
            if value not in seen[key]:
                seen[key].append(value)
    return [(k, ", ".join("-" if v is None else str(v) for v in vs)) for k, vs in seen.items()]


# --------------------------------------------------------------------------- plots

@dataclass
class Plot:
    slug: str
    title: str
    png: bytes


def _figure():
    try:
        from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot state
    except ImportError:
        return None
    return Figure


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _median_by(points):
    by_x = defaultdict(list)
    for x, y in points:
        by_x[x].append(y)
    xs = sorted(by_x)
    return xs, [statistics.median(by_x[x]) for x in xs]


def _vs_batch(Figure, rows, field: str, ylabel: str, title: str):
    """One line per machine + mode: the median at each batch size, every report as a dot."""
    series = defaultdict(list)
    for r in rows:
        if isinstance(r["batch_size"], int) and isinstance(r[field], (int, float)):
            series[f"{r['machine']} | {r['mode']}"].append((r["batch_size"], r[field]))
    if not series:
        return None
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for label, points in sorted(series.items()):
        xs, ys = _median_by(points)
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=12, color=line.get_color(), alpha=0.5)
    if len({p[0] for pts in series.values() for p in pts}) > 1:
        ax.set_xscale("log", base=2)
    ys = [p[1] for pts in series.values() for p in pts]
    if min(ys) > 0 and max(ys) / min(ys) > 20:  # a GPU beside a CPU: linear would flatten the CPU
        ax.set_yscale("log")
    ax.set_xlabel("batch size (config.loader.batch_size)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    _legend_below(ax)
    return fig


def _legend_below(ax) -> None:
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)


def _bars(Figure, groups: dict[str, dict[str, float]], ylabel: str, title: str, ax=None, fig=None):
    """Grouped bars: one group per outer key, one bar per inner key."""
    inner = sorted({k for g in groups.values() for k in g})
    outer = list(groups)
    if fig is None:
        fig = Figure(figsize=(8, 4.5))
        ax = fig.add_subplot()
    width = 0.8 / max(len(inner), 1)
    for i, name in enumerate(inner):
        xs = [j + i * width for j in range(len(outer))]
        ax.bar(xs, [groups[o].get(name, 0.0) for o in outer], width, label=name)
    ax.set_xticks([j + width * (len(inner) - 1) / 2 for j in range(len(outer))])
    ax.set_xticklabels([textwrap.fill(o, 16) for o in outer], fontsize="small")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(inner) > 1:
        _legend_below(ax)
    return fig


def _grouped_median(rows, outer, inner, field):
    cells = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if isinstance(r[field], (int, float)):
            cells[outer(r)][inner(r)].append(r[field])
    return {o: {i: statistics.median(v) for i, v in g.items()} for o, g in cells.items()}


def make_plots(rows: list[dict]) -> list[Plot] | None:
    """The report's plots as PNG bytes; None when matplotlib is not installed."""
    Figure = _figure()
    if Figure is None:
        return None
    done = [r for r in rows if r["status"] == "completed"]
    figures = [
        ("samples_per_s", "Throughput vs batch size",
         _vs_batch(Figure, done, "samples_per_s", "samples/s", "Throughput per machine and mode")),
        ("peak_rss_mb", "Peak memory vs batch size",
         _vs_batch(Figure, done, "peak_rss_mb", "peak RSS (MB)", "Peak resident memory")),
    ]
    wait = _grouped_median(done, lambda r: f"workers={r['num_workers']} pin={r['pin_memory']}",
                           lambda r: r["machine"], "data_wait_fraction")
    if wait:
        figures.append(("data_wait", "Data-wait fraction per DataLoader setting",
                        _bars(Figure, wait, "data wait / window wall time", "Data-wait fraction")))
    acc = _grouped_median(done, lambda r: r["machine"], lambda r: r["mode"], "test_accuracy")
    ttt = _grouped_median(done, lambda r: r["machine"], lambda r: r["mode"], "time_to_target_s")
    if acc or ttt:
        fig = Figure(figsize=(10, 4.5))
        left, right = fig.subplots(1, 2)
        _bars(Figure, acc or {"-": {}}, "test accuracy", "Test accuracy", ax=left, fig=fig)
        _bars(Figure, ttt or {"-": {}}, "seconds", "Time to target accuracy (reached only)", ax=right, fig=fig)
        figures.append(("accuracy", "Accuracy and time to accuracy per machine", fig))
    figures.append(("mfu", "MFU vs batch size",
                    _vs_batch(Figure, done, "mfu", "MFU (of measured peak)", "Model FLOPs utilisation")))
    return [Plot(slug, title, _png(fig)) for slug, title, fig in figures if fig is not None]


# --------------------------------------------------------------------------- documents

@dataclass
class MachineGroup:
    items: list[Loaded]
    modes: dict[str, list[dict]]
    """Result rows per run mode, sorted by recipe, batch size and workers."""


def by_machine(rows: list[dict], items: list[Loaded]) -> dict[str, MachineGroup]:
    out: dict[str, MachineGroup] = {}
    for row, item in zip(rows, items):
        group = out.setdefault(row["machine"], MachineGroup([], {}))
        group.items.append(item)
        group.modes.setdefault(row["mode"], []).append(row)
    for group in out.values():
        for rs in group.modes.values():
            rs.sort(key=lambda r: (str(r["name"]), r["batch_size"] or 0, r["num_workers"] or 0))
    return out


def _intro(groups: dict[str, MachineGroup], base: str) -> str:
    n = sum(len(g.items) for g in groups.values())
    return f"{n} reports on {len(groups)} machine(s); report paths are relative to {base}."


def render_markdown(groups: dict[str, MachineGroup], plots: list[Plot] | None, plot_files: dict[str, str],
                    base: str) -> str:
    lines = ["# Hardware report", "", _intro(groups, base), ""]
    if plots is None:
        lines += ["*Plots left out: matplotlib is not installed.*", ""]
    for plot in plots or []:
        lines += [f"![{plot.title}]({plot_files[plot.slug]})", ""]
    for name, group in groups.items():
        lines += [f"## {name}", "", "| environment | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in environment_rows(group.items)]
        for mode_name, rs in group.modes.items():
            lines += ["", f"### {mode_name}", "",
                      "| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
            lines += ["| " + " | ".join(fmt(r[f], s) for _, f, s in COLUMNS) + " |" for r in rs]
        lines.append("")
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f0f0f0;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}h2{border-bottom:2px solid #ddd;padding-bottom:4px}
h2{margin-top:2em}h3{margin-bottom:0.2em}"""


def _html_table(header: list[str], body: list[list[tuple[str, bool]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td{' class=n' if num else ''}>{html.escape(v)}</td>" for v, num in row)
                   + "</tr>" for row in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def render_html(groups: dict[str, MachineGroup], plots: list[Plot] | None, base: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Hardware report</title>"
             f"<style>{CSS}</style></head><body><h1>Hardware report</h1>",
             f"<p>{html.escape(_intro(groups, base))}</p>"]
    if plots is None:
        parts.append("<p><em>Plots left out: matplotlib is not installed.</em></p>")
    for plot in plots or []:
        data = base64.b64encode(plot.png).decode("ascii")
        parts.append(f"<h3>{html.escape(plot.title)}</h3><img alt='{html.escape(plot.title)}' "
                     f"src='data:image/png;base64,{data}'>")
    for name, group in groups.items():
        parts.append(f"<h2>{html.escape(name)}</h2><h3>Environment</h3>")
        parts.append(_html_table(["key", "value"],
                                 [[(k, False), (v, False)] for k, v in environment_rows(group.items)]))
        for mode_name, rs in group.modes.items():
            parts.append(f"<h3>Results: {html.escape(mode_name)}</h3>")
            parts.append(_html_table([c[0] for c in COLUMNS],
                                     [[(fmt(r[f], s), s != "s") for _, f, s in COLUMNS] for r in rs]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _relative_sources(rows: list[dict]) -> str:
    """Shorten each row's report path to the folder all of them share; returns that folder."""
    paths = [Path(r["source"]).resolve() for r in rows]
    base = Path(os.path.commonpath([p.parent for p in paths]))
    for r, p in zip(rows, paths):
        r["source"] = str(p.relative_to(base))
    return str(base)


def write(items: list[Loaded], output: Path, plot: bool = True) -> tuple[Path, Path, bool]:
    """Write report.md, report.html and plots/*.png; returns the two paths and whether plots were made."""
    rows = [result_row(i) for i in items]
    base = _relative_sources(rows)
    groups = by_machine(rows, items)
    plots = make_plots(rows) if plot else None
    output.mkdir(parents=True, exist_ok=True)
    plot_files = {}
    for plot in plots or []:
        (output / "plots").mkdir(exist_ok=True)
        path = output / "plots" / f"{plot.slug}.png"
        path.write_bytes(plot.png)
        plot_files[plot.slug] = f"plots/{plot.slug}.png"
    md = write_text_atomic(output / "report.md", render_markdown(groups, plots, plot_files, base))
    page = write_text_atomic(output / "report.html", render_html(groups, plots, base))
    from harness import curves  # per-run curves from each run's metrics.jsonl
    curves.append_to(Path(md), Path(page), [i.path for i in items], plot)
    return Path(md), Path(page), plots is not None


def cmd_report(args) -> int:
    output = Path(args.output)
    for folder in (output, *output.parents):  # the nearest existing one must be a folder
        if folder.exists():
            if not folder.is_dir():
                raise BadInput(f"--output: {folder} is a file; expected a folder for report.md, "
                               "report.html and plots/")
            break
    # A sweep row without a report (a cell that failed before writing one) has no figures to show.
    items = [item for source in args.reports for item in collect(source) if item.report is not None]
    if not items:
        raise BadInput("no reports found in " + ", ".join(args.reports))
    md, page, plotted = write(items, output, plot=not args.no_plots)
    if not plotted and not args.no_plots:
        print("matplotlib is not installed: wrote tables without plots (pip install 'harness[plots]')",
              file=sys.stderr)
    print(f"wrote {md} and {page} from {len(items)} reports")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="group many reports by machine and mode into report.md and report.html")
    p.add_argument("reports", nargs="+", metavar="REPORTS", help="report.yaml files, sweep.yaml files or folders")
    p.add_argument("--output", required=True, help="folder for report.md, report.html and plots/")
    p.add_argument("--no-plots", action="store_true",
                   help="tables only: no matplotlib (its import and drawing are most of the command's time)")
    p.set_defaults(func=cmd_report)
