"""A series' trend chart as SVG text, drawn by hand: no matplotlib, so history show always draws.

Commits run along the x axis (short sha, ``+`` when the tree was dirty), one column
per commit in the store's order; each point is its replicates' median with their
min-max as a whisker; each segment's mean is a dashed level; each change is a red
line before its first commit, labelled with that commit and its size. Colours are
harness report's palette (harness/hwreport/charts.py).
"""

from __future__ import annotations

import html

from harness.history.series import Series
from harness.hwreport.charts import PALETTE, rate_label

WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 34, 70
MAX_LABELS = 30
"""At most this many commit labels under the axis: a long history labels every k-th."""
CHANGE = "#d62728"


def _median(values: list[float]) -> float:
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def svg(s: Series) -> str:
    pts = s.points
    lo = min(min(p.values) for p in pts)
    hi = max(max(p.values) for p in pts)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / len(pts)

    def x(i: float) -> float:
        return LEFT + step * (i + 0.5)

    def y(v: float) -> float:
        return TOP + plot_h * (hi - v) / (hi - lo)

    title = html.escape(s.title)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='trend' viewBox='0 0 {WIDTH} {HEIGHT}' "
           f"font-family='system-ui,sans-serif' font-size='11'><title>{title}</title>",
           f"<rect x='{LEFT}' y='{TOP}' width='{plot_w}' height='{plot_h}' fill='none' stroke='#ccc'/>"]
    for k in range(5):  # five levels, the axis's values
        v = lo + (hi - lo) * k / 4
        out.append(f"<line x1='{LEFT}' x2='{LEFT + plot_w}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#eee'/>"
                   f"<text x='{LEFT - 6}' y='{y(v) + 4:.1f}' text-anchor='end'>{rate_label(v)}</text>")
    unit = html.escape(s.unit or s.figure)
    better = "higher is better" if s.higher_is_better else "lower is better"
    out.append(f"<text x='{LEFT}' y='{TOP - 10}'>{unit} ({better}); each commit: median, min–max of its "
               f"values; dashed: each segment's mean of its commits' means</text>")
    seg = s.segmentation
    for a, b in seg.bounds(len(pts)) if seg else []:
        mean = sum(sum(p.values) / len(p.values) for p in pts[a:b]) / (b - a)  # as changepoints.py: each commit once
        out.append(f"<line x1='{x(a - 0.4):.1f}' x2='{x(b - 0.6):.1f}' y1='{y(mean):.1f}' y2='{y(mean):.1f}' "
                   f"stroke='{PALETTE[7]}' stroke-dasharray='5,4'/>")
    every = max(1, -(-len(pts) // MAX_LABELS))
    colour = PALETTE[0]
    for i, p in enumerate(pts):
        med = _median(p.values)
        out.append(f"<line x1='{x(i):.1f}' x2='{x(i):.1f}' y1='{y(max(p.values)):.1f}' y2='{y(min(p.values)):.1f}' "
                   f"stroke='{colour}'/><circle cx='{x(i):.1f}' cy='{y(med):.1f}' r='3.5' fill='{colour}'>"
                   f"<title>{html.escape(p.commit)}: {rate_label(med)} (n={len(p.values)})</title></circle>")
        if i % every == 0:
            ty = TOP + plot_h + 12
            out.append(f"<text x='{x(i):.1f}' y='{ty}' text-anchor='end' font-family='monospace' "
                       f"transform='rotate(-45 {x(i):.1f} {ty})'>{html.escape(p.short)}</text>")
    for c in seg.changes if seg else []:
        cx = x(c.index - 0.5)
        out.append(f"<g class='change' data-commit='{html.escape(c.commit)}'>"
                   f"<line x1='{cx:.1f}' x2='{cx:.1f}' y1='{TOP}' y2='{TOP + plot_h}' stroke='{CHANGE}' "
                   f"stroke-width='1.5' stroke-dasharray='6,3'/>"
                   f"<text x='{cx + 4:.1f}' y='{TOP + 14}' fill='{CHANGE}'>{html.escape(c.commit[:7])} "
                   f"{c.size * 100:+.1f}% (p={c.p_value:.3g})</text></g>")
    out.append("</svg>")
    return "\n".join(out)
