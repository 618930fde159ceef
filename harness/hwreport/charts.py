"""The report's charts as SVG text: speed-up per workload, the geometric-mean summary, scaling.

Colours are fixed per machine-and-mode for the whole report (``colours``): a pair has
the one colour in every panel, whatever else the panel holds, and every chart carries
its legend. Bars, never lines, join the rows of a workload; only a scaling series
draws a line, over the process counts of one family. matplotlib is optional (the
``plots`` extra): without it ``figure_class`` answers None and the report is tables.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from harness.hwreport.compare_machines import Comparison, Summary, Workload
from harness.hwreport.scaling import STRONG, Family

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5")
"""matplotlib's tab10 then tab20's light shades: distinct at a glance."""

WIDTH_IN = 12.0
"""Every chart is drawn at one width and shown at the page's width, so text has one size."""


def colours(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(machine, mode) -> colour, by the pair's place in the report's one fixed order."""
    return {pair: PALETTE[i % len(PALETTE)] for i, pair in enumerate(pairs)}


def label(pair: tuple[str, str]) -> str:
    return f"{pair[0]} · {pair[1]}"


@dataclass
class Chart:
    slug: str
    title: str
    svg: str


def figure_class():
    try:
        from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot state
    except ImportError:
        return None
    return Figure


def _svg(fig) -> str:
    import matplotlib

    buf = io.StringIO()
    # Text stays text (smaller, and the browser's font); no date, so one input gives one file.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "harness"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buf.getvalue()


def _legend(fig, handles_labels, ncol: int = 3) -> None:
    """Below the panels, outside them: constrained layout makes room, so nothing overlaps an axis label."""
    handles, labels = zip(*handles_labels) if handles_labels else ((), ())
    fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, max(len(labels), 1)), frameon=False)


def _patch(colour: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour)


def _err(est, value) -> list[float] | None:
    if est is None or est.low is None:
        return None
    return [max(value - est.low, 0.0), max(est.high - value, 0.0)]


def rate_label(v: float) -> str:
    """Three significant figures at least: 0.5 samples/s reads 0.5 (",.0f" made it 0 or 1)."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def ratio_label(v: float) -> str:
    return f"×{v:.2f}" if abs(v) >= 0.1 else f"×{v:.3g}"  # ×0.40 beside ×1.00; ×0.0123, never ×0.01


def _barh(ax, ys, values, ests, cols, labels: list[str] | None = None, doubted: list[bool] | None = None) -> None:
    """One bar per row, its interval as a whisker and its label written just past both; a
    doubted bar (not a finding, doubts.py) is hatched and pale, and its label says so."""
    ends = []
    for i, (y, v, est, c) in enumerate(zip(ys, values, ests, cols)):
        if v is None:
            continue
        e = _err(est, v)
        doubt = bool(doubted and doubted[i])
        ax.barh(y, v, color=c, xerr=None if e is None else [[e[0]], [e[1]]], capsize=4, height=0.7,
                alpha=0.45 if doubt else 1.0, hatch="//" if doubt else None)
        end = v + (e[1] if e else 0.0)
        ends.append(end)
        if labels:
            ax.text(end, y, "  " + labels[i], va="center", ha="left", fontsize="small")
    if ends:
        ax.set_xlim(0, max(ends) * 1.3)  # room for the value written past the longest bar


def _compact_ticks(ax) -> None:
    """At most five ticks, thousands as k: 250,000 samples/s must not run into its neighbour."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}"))


def workload_chart(Figure, w: Workload, colour: dict) -> Chart:
    """Three panels over the workload's rows: samples/s, speed-up, time to target."""
    rows = w.rows
    ys = list(range(len(rows)))[::-1]
    fig = Figure(figsize=(WIDTH_IN, 1.9 + 0.42 * len(rows)), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    cols = [colour[r.key] for r in rows]
    sps = [r.samples_per_s.median for r in rows]
    _barh(axes[0], ys, sps, [r.samples_per_s for r in rows], cols,
          [rate_label(v) if v is not None else "" for v in sps])
    axes[0].set_xlabel("samples/s (whisker: interval of the median)")
    _compact_ticks(axes[0])
    ups = [r.speedup.median if r.speedup else None for r in rows]
    _barh(axes[1], ys, ups, [r.speedup for r in rows], cols,
          # The reason's head only, under the figure: the table beside the chart gives it whole.
          [(ratio_label(v) + ("\n  not a finding: " + r.speedup_doubts[0].split(" (")[0] if r.speedup_doubts else ""))
           if v is not None else "" for v, r in zip(ups, rows)], [bool(r.speedup_doubts) for r in rows])
    axes[1].axvline(1.0, color="#444", lw=1, ls="--")
    ref = label(w.reference.key) if w.reference else "not measured on this workload"
    axes[1].set_xlabel("speed-up (× the reference)")
    if w.reference is None:
        axes[1].text(0.5, 0.5, "the reference machine and mode\ndid not run this workload", ha="center",
                     va="center", transform=axes[1].transAxes, color="#555")
        axes[1].set_xticks([])
    _barh(axes[2], ys, [r.ttt_s if r.ttt_reached else None for r in rows], [None] * len(rows), cols)
    for y, r in zip(ys, rows):
        if r.ttt_tries:
            text = f"  {r.ttt_s:,.1f} s, {r.ttt_reached}/{r.ttt_tries} reached" if r.ttt_reached \
                else f"  never (0/{r.ttt_tries})"
            axes[2].text(r.ttt_s or 0.0, y, text, va="center", ha="left", fontsize="small")
    if not any(r.ttt_reached for r in rows):
        axes[2].set_xticks([])
    axes[2].set_xlabel("time to target accuracy (s)")
    axes[0].set_yticks(ys, [label(r.key) for r in rows], fontsize="small")
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.7, len(rows) - 0.3)
    fig.suptitle(f"{w.title}; reference: {ref}", x=0.02, ha="left", fontsize="large")
    _legend(fig, [(_patch(colour[r.key]), label(r.key)) for r in rows])
    return Chart(f"workload_{w.id}", f"{w.title}: samples/s, speed-up, time to target", _svg(fig))


def summary_chart(Figure, comp: Comparison, summaries: list[Summary], colour: dict) -> Chart | None:
    """The geometric-mean speed-up of each machine and mode, each workload's speed-up a dot on its bar."""
    if not summaries:
        return None
    fig = Figure(figsize=(WIDTH_IN, 1.9 + 0.45 * len(summaries)), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(summaries)))[::-1]
    for y, s in zip(ys, summaries):
        c = colour[(s.machine, s.mode)]
        ax.barh(y, s.geomean, color=c, height=0.7, alpha=0.85)
        dots = [row.speedup.median for w in comp.workloads for row in w.rows
                if row.key == (s.machine, s.mode) and row.speedup]
        ax.scatter(dots, [y] * len(dots), color="#222", s=14, zorder=3)
        doubted = f", {s.doubted} not a finding" if s.doubted else ""
        ax.text(max(s.geomean, s.high), y,
                f"  {ratio_label(s.geomean)} over {s.workloads} workload{'s' * (s.workloads != 1)}{doubted}",
                va="center", fontsize="small")
    ax.axvline(1.0, color="#444", lw=1, ls="--")
    ax.set_yticks(ys, [label((s.machine, s.mode)) for s in summaries], fontsize="small")
    ax.set_xlabel(f"geometric-mean speed-up over {label(comp.baseline)} (dots: each workload)")
    ax.set_xlim(0, max(max(s.high, s.geomean) for s in summaries) * 1.35)
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Speed-up across workloads", x=0.02, ha="left", fontsize="large")
    _legend(fig, [(_patch(colour[(s.machine, s.mode)]), label((s.machine, s.mode))) for s in summaries])
    return Chart("summary_speedup", "Geometric-mean speed-up across workloads", _svg(fig))


MARKERS = ("o", "s", "^", "D", "v", "P")


def scaling_chart(Figure, fam: Family, index: int, colour: dict) -> Chart:
    """Samples/s and efficiency against processes; one line per series, weak solid, strong dashed.

    The lines take the colour of the family's machine and mode (its fewest processes),
    so a colour means one machine and mode here as in every other panel.
    """
    c = next((colour[(fam.machine, m)] for m in fam.modes if (fam.machine, m) in colour), "#333333")
    fig = Figure(figsize=(WIDTH_IN, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    entries = []
    procs = sorted({p.processes for s in fam.series for p in s.points})
    for i, s in enumerate(fam.series):
        style = dict(color=c, ls="--" if s.kind == STRONG else "-", marker=MARKERS[i % len(MARKERS)])
        xs = [p.processes for p in s.points]
        (line,) = left.plot(xs, [p.samples_per_s.median for p in s.points], **style)
        right.plot(xs, [p.efficiency for p in s.points], **style)
        for p in s.points:
            if p.doubts and p.efficiency is not None:  # beside the point: it is not a finding
                right.annotate(f"{p.efficiency:.0%}: not a finding\n({p.doubts[0].split(' (')[0]})",
                               (p.processes, p.efficiency), textcoords="offset points", xytext=(6, -22),
                               fontsize="small", color="#a00")
        entries.append((line, s.name))
    right.axhline(1.0, color="#444", lw=1, ls=":")
    left.set_ylim(bottom=0)  # from zero: a small gain must not look like a large one
    for ax, ylabel in ((left, "samples/s (all processes)"), (right, "efficiency (speed-up ÷ processes)")):
        ax.set_xticks(procs, [str(p) for p in procs])
        ax.set_xlabel("processes (world size)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend([e[0] for e in entries], [e[1] for e in entries], fontsize="small")
    right.set_ylim(0, max(1.2, max(p.efficiency or 0 for s in fam.series for p in s.points) * 1.1))
    fig.suptitle(f"{fam.title} on {label(fam.key)}", x=0.02, ha="left", fontsize="large")
    return Chart(f"scaling_{index}", f"Scaling: {fam.title} on {label(fam.key)}", _svg(fig))


def make_charts(comp: Comparison, summaries: list[Summary], fams: list[Family]) -> dict[str, Chart] | None:
    """Chart per slug (summary, one per workload, one per scaling family); None without matplotlib."""
    Figure = figure_class()
    if Figure is None:
        return None
    colour = colours(comp.pairs)
    charts = [summary_chart(Figure, comp, summaries, colour)]
    charts += [workload_chart(Figure, w, colour) for w in comp.workloads if w.rows]
    charts += [scaling_chart(Figure, f, i, colour) for i, f in enumerate(fams)]
    return {c.slug: c for c in charts if c is not None}
