"""Ranks grouped by node, for every run of more than one process.

A multi-process figure is the slowest rank's (samples/s is every rank's samples over the
slowest window), so the reader needs to see which node and which rank held the run back.
Grouped from the report's ``per_rank`` rows by the same function that writes its
``per_node``, so reports written before ``per_node`` existed read the same.
"""

from __future__ import annotations

from harness.report.sources import Loaded
from harness.hwreport.identity import mode_label
from harness.measure.aggregate import per_node

Cell = tuple[str, bool]

HEADER = ["run", "mode", "node", "host", "ranks", "node samples/s", "slowest rank", "slowest window (s)",
          "rank samples/s", "data wait", "peak PSS (MB)"]


def _num(value, spec: str) -> str:
    return "-" if not isinstance(value, (int, float)) else format(value, spec)


def nodes(per_rank: list[dict]) -> list[dict]:
    """The report's own grouping by node (``aggregate.per_node``: node order, samples/s over
    the node's slowest window), with each node's rank rows and its slowest rank."""
    by_rank = {row.get("rank"): row for row in per_rank}
    out = []
    for node in per_node(per_rank):
        rows = [by_rank[k] for k in node["ranks"]]
        slow = max(rows, key=lambda r: r.get("window_s") or 0.0)
        out.append({**node, "hostname": str(node["hostname"] or "?"), "rows": rows,
                    "slowest_rank": slow.get("rank"), "slowest_window_s": slow.get("window_s") or 0.0})
    return out


def multi_process(items: list[Loaded]) -> list[Loaded]:
    return [i for i in items if i.report and len(i.report.get("per_rank") or []) > 1]


def rows(items: list[Loaded]) -> list[list[Cell]]:
    out: list[list[Cell]] = []
    for item in multi_process(items):
        run = f"{item.report.get('name', '?')} ({item.path.parent.name or item.path})"
        for node in nodes(item.report["per_rank"]):
            rs = node["rows"]
            out.append([
                (run, False), (mode_label(item.report), False), (str(node["node_rank"]), True),
                (node["hostname"], False), (", ".join(str(r.get("rank")) for r in rs), False),
                (_num(node["samples_per_s"], ",.1f"), True), (str(node["slowest_rank"]), True),
                (_num(node["slowest_window_s"], ".3f"), True),
                (" / ".join(_num(r.get("samples_per_s"), ",.0f") for r in rs), True),
                (" / ".join(_num(r.get("data_wait_fraction"), ".2f") for r in rs), True),
                (" / ".join(_num(r.get("peak_pss_mb"), ",.0f") for r in rs), True),
            ])
    return out
