"""report.md (for a pull request) and report.html (self-contained) from one set of tables and charts.

Both hold the same sections in the same order: how to read it, the summary, one section
per workload, scaling, the machines' environments. The HTML embeds each chart as an
SVG data URI shown at the page's width; the markdown links the SVG files in plots/.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

from harness.report import conditions
from harness.hwreport import ranks, tables
from harness.hwreport.charts import Chart, label
from harness.hwreport.compare_machines import Comparison, Summary
from harness.hwreport.scaling import Family
from harness.report.sources import Loaded


@dataclass
class Content:
    comp: Comparison
    summaries: list[Summary]
    families: list[Family]
    environments: dict[str, list[Loaded]]
    charts: dict[str, Chart] | None
    reports: int
    items: list[Loaded] | None = None
    """Every report read: the multi-process ones get their ranks grouped by node."""


def _intro(c: Content) -> list[str]:
    ref = label(c.comp.baseline) if c.comp.baseline else "none"
    return [f"{c.reports} reports: {len(c.comp.workloads)} workload(s) on {len(c.comp.machines)} machine(s). "
            f"Every speed-up is samples/s over the reference, **{ref}**, on the same workload "
            "(pick another with `--baseline-machine` / `--baseline-mode`); on a workload that mode never ran "
            "(its own settings, such as channels-last, show in the mode), over the reference machine's first "
            "mode there, marked \"reference\" in its table.",
            "A workload is what is computed (data, model, batch size, optimiser, steps; training and inference "
            "apart), whatever the run's name; rows of different workloads are never joined. Intervals are of the "
            "median over independent replicates (repeats or reports), with their exact coverage; a speed-up's "
            "interval divides the ends of the two and covers at least the level shown. One value: no interval."]


def _conditions(c: Content) -> list[str]:
    """A paragraph when any report's timings are qualified: how many, and what the tables do about it."""
    taken = [conditions.verdict(i.report) for i in (c.items or [])]
    busy, unknown = taken.count(conditions.CONTENDED), taken.count(conditions.UNKNOWN)
    if not (busy or unknown):
        return []
    parts = []
    if busy:
        parts.append(f"**{busy} of {len(taken)} reports were timed on a contended machine** (other processes took "
                     "a share of its CPUs during the window): their rows say so under \"timing conditions\", and a "
                     "speed-up or efficiency from them is marked \"not a finding\" with its reason; rerun them on a "
                     "quiet machine.")
    if unknown:
        parts.append(f"{unknown} of {len(taken)} reports predate the contention measurement (\"contention unknown\"): "
                     "their timings may be a busy machine's.")
    return [" ".join(parts)]


def _scaling_note(f: Family) -> list[str]:
    """The scaling table compares runs with the same total threads, or says that they differ."""
    totals = {t for s in f.series for p in s.points for t in p.taken.total_threads}
    if len(totals) > 1:
        return [f"The runs differ in total threads ({', '.join(map(str, sorted(totals)))}): an efficiency across "
                "them measures the thread setting as much as the processes; each such row says so."]
    return []


RANKS_NOTE = ("Each multi-process run's ranks, grouped by node. The run's samples/s is all ranks' samples over "
              "the slowest rank's window, so the slowest rank is the one that set it; per-rank figures in rank order.")


def _chart_missing(c: Content) -> bool:
    return c.charts is None


# --------------------------------------------------------------------------- markdown

def _md_table(header: list[str], rows: list[list[tables.Cell]], numeric: bool = True) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "".join(" ---: |" if i > 1 and numeric else " --- |"
                                                          for i in range(len(header)))]
    return out + ["| " + " | ".join(t.replace("|", "\\|") for t, _ in row) + " |" for row in rows]


def _md_chart(c: Content, slug: str, files: dict[str, str]) -> list[str]:
    if c.charts and slug in c.charts:
        return [f"![{c.charts[slug].title}]({files[slug]})", ""]
    return []


def render_markdown(c: Content, files: dict[str, str]) -> str:
    lines = ["# Hardware report", "", *(p + "\n" for p in _intro(c)), *(p + "\n" for p in _conditions(c))]
    if _chart_missing(c):
        lines += ["*Plots left out: matplotlib is not installed, or `--no-plots`.*", ""]
    if c.summaries:
        lines += ["## Summary: speed-up across workloads", "", *_md_chart(c, "summary_speedup", files),
                  *_md_table(tables.SUMMARY_HEADER, tables.summary_rows(c.summaries)), ""]
    for w in c.comp.workloads:
        lines += [f"## {w.title}", "", f"Workload `{w.id}` ({w.scenario}); runs named {', '.join(map(str, w.names))}.",
                  "", *_md_chart(c, f"workload_{w.id}", files),
                  *_md_table(*tables.workload_table(w)), ""]
    if c.families:
        lines += ["## Scaling over processes", "",
                  "Weak scaling holds the per-device batch; strong scaling holds the global batch. "
                  "Efficiency is speed-up over the growth in processes (100% is linear).", ""]
        for i, f in enumerate(c.families):
            lines += [f"### {f.title} on {label(f.key)}", "", *(p + "\n" for p in _scaling_note(f)),
                      *_md_chart(c, f"scaling_{i}", files),
                      *_md_table(tables.SCALING_HEADER, tables.scaling_rows(f)), ""]
    if c.items and ranks.rows(c.items):
        lines += ["## Ranks by node", "", RANKS_NOTE, "", *_md_table(ranks.HEADER, ranks.rows(c.items)), ""]
    lines += ["## Machines", "", *_md_table(*tables.machines_table(c.environments), numeric=False), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1.5em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:12.5px;width:100%}
th,td{border:1px solid #ccc;padding:3px 6px}th{background:#f0f0f0;text-align:left}
td:nth-child(2){white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:0.5em 0}figure img{display:block;width:100%;height:auto}
h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}h3{margin-bottom:0.2em}
p.note{color:#555;font-size:14px;max-width:75em}p.warn{color:#8a1c00;font-size:14px;max-width:75em}code{font-size:12px}"""


def _html_table(header: list[str], rows: list[list[tables.Cell]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if n else ''}>{html.escape(t)}</td>" for t, n in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_chart(c: Content, slug: str) -> str:
    if not c.charts or slug not in c.charts:
        return ""
    chart = c.charts[slug]
    data = base64.b64encode(chart.svg.encode()).decode("ascii")
    return (f"<figure><img alt='{html.escape(chart.title)}' src='data:image/svg+xml;base64,{data}'>"
            "</figure>")


def _md_inline(text: str) -> str:
    """The intro's **bold** and `code` as HTML."""
    out, parts = [], html.escape(text).split("**")
    for i, part in enumerate(parts):
        out.append(f"<b>{part}</b>" if i % 2 else part)
    text = "".join(out)
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(c: Content) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Hardware report</title>"
             f"<style>{CSS}</style></head><body><h1>Hardware report</h1>"]
    parts += [f"<p class=note>{_md_inline(p)}</p>" for p in _intro(c)]
    parts += [f"<p class=warn>{_md_inline(p)}</p>" for p in _conditions(c)]
    if _chart_missing(c):
        parts.append("<p><em>Plots left out: matplotlib is not installed, or --no-plots.</em></p>")
    if c.summaries:
        parts += ["<h2>Summary: speed-up across workloads</h2>", _html_chart(c, "summary_speedup"),
                  _html_table(tables.SUMMARY_HEADER, tables.summary_rows(c.summaries))]
    for w in c.comp.workloads:
        names = html.escape(", ".join(map(str, w.names)))
        sources = "".join(f"<li><code>{html.escape(str(p))}</code></li>" for r in w.rows for p in r.paths)
        parts += [f"<h2>{html.escape(w.title)}</h2>",
                  f"<p class=note>Workload <code>{w.id}</code> ({html.escape(w.scenario)}); runs named {names}.</p>",
                  _html_chart(c, f"workload_{w.id}"),
                  _html_table(*tables.workload_table(w)),
                  f"<details><summary>reports</summary><ul>{sources}</ul></details>"]
    if c.families:
        parts += ["<h2>Scaling over processes</h2><p class=note>Weak scaling holds the per-device batch; strong "
                  "scaling holds the global batch. Efficiency is speed-up over the growth in processes "
                  "(100% is linear).</p>"]
        for i, f in enumerate(c.families):
            parts += [f"<h3>{html.escape(f.title)} on {html.escape(label(f.key))}</h3>",
                      *(f"<p class=warn>{html.escape(p)}</p>" for p in _scaling_note(f)),
                      _html_chart(c, f"scaling_{i}"), _html_table(tables.SCALING_HEADER, tables.scaling_rows(f))]
    if c.items and ranks.rows(c.items):
        parts += ["<h2>Ranks by node</h2>", f"<p class=note>{html.escape(RANKS_NOTE)}</p>",
                  _html_table(ranks.HEADER, ranks.rows(c.items))]
    parts += ["<h2>Machines</h2>", _html_table(*tables.machines_table(c.environments))]
    parts.append("</body></html>")
    return "\n".join(parts)
