"""Per-run curves from metrics.jsonl, for ``harness report``: several runs on one axis.

Training loss and samples/s over global steps, dev accuracy over epochs. ``embed``
writes the plots under the report's ``plots/`` and returns the Markdown and HTML
fragments the report appends (the HTML embeds the PNGs as base64, like the rest of
report.html). Runs without a metrics.jsonl (older ones) are left out; without
matplotlib the fragments hold the table alone.

Reads JSON only; no torch.
"""

from __future__ import annotations

import base64
import html
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.observe import metrics_stream
from harness.errors import BadInput

MAX_LEGEND = 12
"""Beyond this many runs a legend hides the plot; the table names them instead."""


@dataclass
class RunCurves:
    label: str
    folder: Path
    rows: list[dict]

    def series(self, kind: str, x: str, y: str) -> tuple[list, list]:
        points = [(r[x], r[y]) for r in self.rows if r["kind"] == kind and r.get(y) is not None]
        return [p[0] for p in points], [p[1] for p in points]


def _rows(folder: Path) -> list[dict]:
    """The run's well-formed lines. A bad line (hand-edited, damaged) is left out with one
    warning per file rather than refused: the curves are an appendix to a report built from
    report.yaml, and one bad line of one run should not cost the whole comparison."""
    try:
        rows, problems = metrics_stream.parse(folder)
    except BadInput as err:
        print(f"warning: {err}; its curves are left out", file=sys.stderr)
        return []
    if problems:
        number, why = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(f"warning: {folder / metrics_stream.FILE} line {number}: {why}{more}; left out of the curves",
              file=sys.stderr)
    return rows


def load(paths: list[Path]) -> list[RunCurves]:
    """The runs among ``paths`` (report.yaml files or run folders) that have a metric stream."""
    runs, seen = [], set()
    for path in paths:
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        rows = _rows(folder)
        if rows:
            runs.append(RunCurves(folder.name, folder, rows))
    # Two runs in folders of one name (sweep cells) are told apart by their parent.
    names = [r.label for r in runs]
    for r in runs:
        if names.count(r.label) > 1:
            r.label = f"{r.folder.parent.name}/{r.folder.name}"
    return runs


PLOTS = (  # slug, title, kind, x, y, x label, y label
    ("curve_train_loss", "Training loss (mean over each interval)", "interval", "step", "train_loss",
     "global optimizer step", "loss"),
    ("curve_samples_per_s", "Samples/s over each interval", "interval", "step", "samples_per_s",
     "global optimizer step", "samples/s"),
    ("curve_dev_accuracy", "Dev accuracy by epoch", "epoch", "epoch", "dev_accuracy", "epoch", "accuracy"),
)


def make_plots(runs: list[RunCurves]) -> list[tuple[str, str, bytes]] | None:
    """(slug, title, PNG) per plot; None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot state
    except ImportError:
        return None
    import io

    out = []
    for slug, title, kind, x, y, xlabel, ylabel in PLOTS:
        fig = Figure(figsize=(7, 3.6))
        ax = fig.add_subplot()
        drawn = 0
        for run in runs:
            xs, ys = run.series(kind, x, y)
            if xs:
                ax.plot(xs, ys, marker="o" if kind == "epoch" else None, markersize=3, linewidth=1.2,
                        label=run.label)
                drawn += 1
        if not drawn:
            continue
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn <= MAX_LEGEND:
            ax.legend(fontsize=7, loc="best")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        out.append((slug, title, buf.getvalue()))
    return out


def _summary(run: RunCurves) -> list[str]:
    _, loss = run.series("interval", "step", "train_loss")
    _, rate = run.series("interval", "step", "samples_per_s")
    _, acc = run.series("epoch", "epoch", "dev_accuracy")
    steps, _ = run.series("interval", "step", "train_loss")
    f = lambda v, s: "-" if v is None else format(v, s)  # noqa: E731
    return [run.label, f(steps[-1] if steps else None, "d"), f(loss[-1] if loss else None, ".4f"),
            f(statistics.median(rate) if rate else None, ",.1f"), f(acc[-1] if acc else None, ".4f")]


HEADER = ["run", "last logged step", "last train loss", "median interval samples/s", "last dev accuracy"]


def embed(paths: list[Path], output: Path, plot: bool = True) -> tuple[str, str]:
    """(Markdown, HTML) fragments with the curves of the runs in ``paths``; writes output/plots/curve_*.png.

    Empty strings when no run has a metrics.jsonl.
    """
    runs = load(paths)
    if not runs:
        return "", ""
    plots = make_plots(runs) if plot else None
    md = ["", "## Curves (metrics.jsonl)", ""]
    page = ["<h2>Curves (metrics.jsonl)</h2>"]
    if plot and plots is None:
        md += ["*Curves left out: matplotlib is not installed.*", ""]
        page.append("<p><em>Curves left out: matplotlib is not installed.</em></p>")
    for slug, title, png in plots or []:
        (output / "plots").mkdir(parents=True, exist_ok=True)
        (output / "plots" / f"{slug}.png").write_bytes(png)
        md += [f"![{title}](plots/{slug}.png)", ""]
        data = base64.b64encode(png).decode("ascii")
        page.append(f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' "
                    f"src='data:image/png;base64,{data}'>")
    rows = [_summary(r) for r in runs]
    md += ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    md.append("")
    page.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in HEADER) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
                + "</table>")
    return "\n".join(md), "\n".join(page)


def append_to(md_path: Path, html_path: Path, paths: list[Path], plot: bool = True) -> None:
    """Append the curves to a written report.md and report.html (``harness report``'s one call here)."""
    from harness.files.atomic import write_text_atomic

    md, page = embed(paths, Path(md_path).parent, plot)
    if not md:
        return
    write_text_atomic(md_path, Path(md_path).read_text() + md)
    text = Path(html_path).read_text()
    cut = text.rfind("</body>")
    write_text_atomic(html_path, text[:cut] + page + "\n" + text[cut:] if cut >= 0 else text + page)
