"""``harness history show STORE --output DIR``: the store's series as history.html and history.md.

One trend chart per workload x mode x machine x figure (trend.py), each with the
changes found in it (changepoints.py) marked by commit and size, and one table of
every change. The HTML is self-contained (charts inline, harness report's style);
the markdown links the same charts, written to DIR/plots/. Torch-free, and every
file is written atomically.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

from harness.errors import EXIT_OK, BadInput
from harness.files.atomic import write_text_atomic
from harness.history.changepoints import Settings
from harness.history.series import Series, build
from harness.history.trend import svg
from harness.hwreport.documents import CSS

CHANGES_HEADER = ("workload", "mode", "machine", "figure", "commit", "before", "after", "size", "p-value")


def _num(v: float) -> str:
    return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"


def change_rows(series: list[Series]) -> list[list[str]]:
    return [[s.workload_name, s.mode, s.machine, s.figure, c.commit, _num(c.before), _num(c.after),
             f"{c.size * 100:+.1f}%", f"{c.p_value:.3g}"]
            for s in series for c in (s.segmentation.changes if s.segmentation else [])]


def slug(i: int, s: Series) -> str:
    return f"{i:02d}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{s.workload_name}_{s.mode}_{s.figure}").strip("_")


def _about(s: Series) -> str:
    seg = s.segmentation
    n = len(s.points)
    found = f"{len(seg.changes)} change(s)" if seg and seg.changes else "no change"
    why = f" ({seg.reason})" if seg and seg.reason else ""
    return f"{n} commit(s), {sum(len(p.values) for p in s.points)} value(s); {found}{why}. Workload `{s.workload}`."


def _method(settings: Settings) -> str:
    return (f"Changes: e-divisive means with a permutation test ({settings.permutations} permutations, seed "
            f"{settings.seed}), alpha {settings.alpha:g}, at least {settings.min_segment} commits a side and a "
            f"{settings.min_size * 100:g}% change of the mean (docs/history.md).")


def render_markdown(series: list[Series], files: dict[str, str], settings: Settings) -> str:
    lines = ["# History", "", f"{len(series)} series. {_method(settings)}", "", "## Changes", ""]
    rows = change_rows(series)
    if rows:
        lines += ["| " + " | ".join(CHANGES_HEADER) + " |", "|" + " --- |" * len(CHANGES_HEADER)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    else:
        lines.append("No change found.")
    for s in series:
        lines += ["", f"## {s.title}", "", _about(s), "", f"![{s.title}]({files[s.title]})"]
    return "\n".join(lines) + "\n"


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _code(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(series: list[Series], charts: dict[str, str], settings: Settings) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>History</title>"
             f"<style>{CSS}</style></head><body><h1>History</h1>",
             f"<p class=note>{len(series)} series. {_code(_method(settings))}</p>", "<h2>Changes</h2>"]
    rows = change_rows(series)
    parts.append(_table(CHANGES_HEADER, rows) if rows else "<p>No change found.</p>")
    for s in series:
        parts += [f"<h2>{html.escape(s.title)}</h2>", f"<p class=note>{_code(_about(s))}</p>",
                  f"<figure class=series>{charts[s.title]}</figure>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def show(entries: list[dict], output: Path, settings: Settings = Settings()) -> list[Path]:
    """Write DIR/history.html, DIR/history.md and DIR/plots/*.svg; the paths written."""
    if output.exists() and not output.is_dir():
        raise BadInput(f"--output {output}: is a file, expected a folder")
    series = [s for s in build(entries, settings) if s.points]
    charts = {s.title: svg(s) for s in series}
    files = {s.title: f"plots/{slug(i, s)}.svg" for i, s in enumerate(series)}
    written = [write_text_atomic(output / files[s.title], charts[s.title]) for s in series]
    written.append(write_text_atomic(output / "history.md", render_markdown(series, files, settings)))
    written.append(write_text_atomic(output / "history.html", render_html(series, charts, settings)))
    return written


def run_show(store: Path, output: Path) -> int:
    from harness.history.store import read_entries  # the store's reader, owned by harness history add

    entries, warnings = read_entries(store)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    written = show(entries, output)
    print(f"{len(written) - 2} chart(s); wrote {output / 'history.html'} and {output / 'history.md'}")
    return EXIT_OK
