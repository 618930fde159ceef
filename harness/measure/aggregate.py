"""Combine the ranks' meter summaries into the report's figures.

Global throughput is every sample of every rank divided by the slowest rank's
window time: ranks step in lock-step under DDP, so the slowest sets the pace.
(Rank 0's rate times the world size would hide an imbalance.)
"""

from __future__ import annotations

from harness.measure.contention import worst
from harness.measure.memory import PHASES
from harness.measure.stats import distribution, median_ci


def _window_rates(per_rank: list[dict]) -> list[float]:
    """Global samples/s of each repeat window."""
    n_windows = min(len(r["windows"]) for r in per_rank) if per_rank else 0
    rates = []
    for k in range(n_windows):
        samples = sum(r["windows"][k]["samples"] for r in per_rank)
        slowest = max(r["windows"][k]["wall_s"] for r in per_rank)
        if slowest > 0:
            rates.append(samples / slowest)
    return rates


def window_contention(per_rank: list[dict]) -> list[dict | None]:
    """Each repeat window's contention: the worst rank's (ranks on one host share its CPUs)."""
    lists = [r.get("window_contention") or [] for r in per_rank]
    n = min((len(x) for x in lists), default=0)
    return [worst([x[k] for x in lists]) for k in range(n)]


def phase_peaks(per_rank: list[dict], name: str) -> dict | None:
    """One phase's peaks: the largest rank's, key by key (null when no rank entered it)."""
    seen = [r["phases"][name] for r in per_rank if name in (r.get("phases") or {})]
    if not seen:
        return None
    return {key: max((p[key] for p in seen if p[key] is not None), default=None) for key in seen[0]}


def per_node(rank_rows: list[dict]) -> list[dict]:
    """The ranks grouped by node (node rank, then host): each node's ranks and its slowest window."""
    nodes: dict[tuple, list[dict]] = {}
    for row in rank_rows:
        nodes.setdefault((row.get("node_rank") or 0, row.get("hostname")), []).append(row)
    out = []
    for (node, host), rows in sorted(nodes.items(), key=lambda item: (item[0][0], str(item[0][1]))):
        slowest = max((r["window_s"] for r in rows), default=0.0)
        samples = sum(r["samples"] for r in rows)
        out.append({"node_rank": node, "hostname": host, "ranks": [r["rank"] for r in rows],
                    "samples_per_s": samples / slowest if slowest > 0 else None})
    return out


def _token_figures(per_rank: list[dict], slowest: float, world: int, steps: int) -> dict:
    """A language model's throughput in tokens: every rank's real tokens over the slowest
    rank's window, as samples_per_s counts samples."""
    tokens = sum(w.get("tokens", 0) for r in per_rank for w in r["windows"])
    rate = tokens / slowest if slowest > 0 else None
    return {"tokens_per_s": rate, "tokens_per_s_per_device": rate / world if rate else None,
            "measured_tokens": tokens, "tokens_per_step": tokens / steps if steps else None}


def aggregate(per_rank: list[dict], global_batch_size: int) -> dict:
    """``per_rank``: each rank's ``Meter.summary()``, rank 0 first."""
    world = len(per_rank)
    rank_rows = []
    for rank, r in enumerate(per_rank):
        samples = sum(w["samples"] for w in r["windows"])
        wall = sum(w["wall_s"] for w in r["windows"])
        wait = sum(w["data_wait_s"] for w in r["windows"])
        steps = sum(w["steps"] for w in r["windows"])
        rank_rows.append({
            "rank": rank, "node_rank": r.get("node_rank", 0), "pid": r.get("pid"), "hostname": r.get("hostname"),
            "samples": samples, "steps": steps, "window_s": wall,
            "samples_per_s": samples / wall if wall > 0 else None,
            "data_wait_fraction": wait / wall if wall > 0 else None,
            "step_time_ms_p50": (distribution(r["step_times_ms"]) or {}).get("p50"),
            "peak_rss_mb": r["peak_rss_mb"],
            "peak_pss_mb": r.get("peak_pss_mb"),
            "peak_uss_mb": r.get("peak_uss_mb"),
            "device_peak_allocated_mb": r["device_peak_allocated_mb"],
            "device_peak_reserved_mb": r["device_peak_reserved_mb"],
            "alloc_retries": r["alloc_retries"],
        })
    total_samples = sum(row["samples"] for row in rank_rows)
    slowest = max((row["window_s"] for row in rank_rows), default=0.0)
    fastest = min((row["window_s"] for row in rank_rows if row["window_s"] > 0), default=0.0)
    samples_per_s = total_samples / slowest if slowest > 0 else None
    steps = rank_rows[0]["steps"] if rank_rows else 0
    r0 = per_rank[0] if per_rank else {"step_times_ms": [], "data_wait_ms": [], "warmup_steps": 0}
    step_dist = distribution(r0["step_times_ms"])
    rates = _window_rates(per_rank)
    waits = [row["data_wait_fraction"] for row in rank_rows if row["data_wait_fraction"] is not None]
    mem = lambda key: max((row[key] for row in rank_rows if row[key] is not None), default=None)  # noqa: E731
    throughput = {
            "samples_per_s": samples_per_s,
            "train_samples_per_s": samples_per_s,  # the schema-1 name, kept for its readers
            "samples_per_s_per_device": samples_per_s / world if samples_per_s else None,
            "steps_per_s": steps / slowest if slowest > 0 else None,
            "global_batch_size": global_batch_size,
            "measured_steps": steps,
            "measured_samples": total_samples,
            "warmup_steps": r0["warmup_steps"],
            "window_s": slowest,
    }
    if per_rank and all(r.get("counts_tokens") for r in per_rank):
        throughput.update(_token_figures(per_rank, slowest, world, steps))
    return {
        "throughput": throughput,
        "step_time_ms": step_dist,
        "data_wait_ms": distribution(r0["data_wait_ms"]),
        "data_wait_fraction": max(waits) if waits else None,
        "memory": {
            "peak_rss_mb": mem("peak_rss_mb"),
            "peak_pss_mb": mem("peak_pss_mb"),
            "peak_uss_mb": mem("peak_uss_mb"),
            "device_peak_allocated_mb": mem("device_peak_allocated_mb"),
            "device_peak_reserved_mb": mem("device_peak_reserved_mb"),
            "alloc_retries": mem("alloc_retries"),
            **{name: phase_peaks(per_rank, name) for name in PHASES},
        },
        "per_rank": rank_rows,
        "per_node": per_node(rank_rows),
        "imbalance": (slowest / fastest) if fastest > 0 else None,
        "contention": worst([r.get("contention") for r in per_rank]),
        "repeats": {"unit": "window", "count": len(rates), "samples_per_s": rates, **median_ci(rates),
                    "contention": window_contention(per_rank)},
        "raw": {"step_time_ms": r0["step_times_ms"], "data_wait_ms": r0["data_wait_ms"]},
    }
