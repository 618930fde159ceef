"""Ranks grouped by node, for every run of more than one process.

A multi-process figure is the slowest rank's (samples/s is every rank's samples over the
slowest window), so the reader needs to see which node and which rank held the run back.
Grouped from the report's ``per_rank`` rows, so reports written before ``per_node``
existed read the same.
"""

from __future__ import annotations

from harness.compare import Loaded
from harness.hwreport.identity import mode_label

Cell = tuple[str, bool]

HEADER = ["run", "mode", "node", "host", "ranks", "node samples/s", "slowest rank", "slowest window (s)",
          "rank samples/s", "data wait", "peak PSS (MB)"]


def _num(value, spec: str) -> str:
    return "-" if not isinstance(value, (int, float)) else format(value, spec)


def nodes(per_rank: list[dict]) -> list[dict]:
    """``per_rank`` grouped by (node rank, host), in node order: each node's ranks, its
    samples/s over its slowest rank's window, and that rank."""
    groups: dict[tuple, list[dict]] = {}
    for row in per_rank:
        groups.setdefault((row.get("node_rank") or 0, str(row.get("hostname") or "?")), []).append(row)
    out = []
    for (node, host), rows in sorted(groups.items()):
        slow = max(rows, key=lambda r: r.get("window_s") or 0.0)
        window = slow.get("window_s") or 0.0
        samples = sum(r.get("samples") or 0 for r in rows)
        out.append({"node_rank": node, "hostname": host, "rows": rows, "slowest_rank": slow.get("rank"),
                    "slowest_window_s": window, "samples_per_s": samples / window if window > 0 else None})
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
