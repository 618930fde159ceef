"""One history entry: what a report (or a pytest-benchmark benchmark) says of one commit.

The entry is the contract between the store and its readers (change points, check,
show, bisect): a plain dict, docs/history.md. This module makes entries from
reports and checks the ones read back; the store (store.py) keeps them.
Plain Python over a report's dict: no torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.hwreport.identity import hardware
from harness.report.figures import REPLICATES, dig, figure, token_repeats
from harness.report.run_mode import mode_label

FIGURE_META: dict[str, tuple[str, bool]] = {
    "samples_per_s": ("samples/s", True),
    "tokens_per_s": ("tokens/s", True),
    "step_time_ms_p50": ("ms", False),
    "peak_rss_mb": ("MB", False),
    "test_accuracy": ("fraction", True),
    "test_loss": ("loss", False),
    "time_to_target_s": ("s", False),
    "time_median_s": ("s", False),
    "time_mean_s": ("s", False),
}
"""Every figure an entry may hold -> (unit, higher_is_better)."""

_FROM_REPORT = {"samples_per_s": "samples_per_s", "tokens_per_s": "tokens_per_s",
                "step_time_ms_p50": "step_time_p50_ms", "peak_rss_mb": "peak_rss_mb",
                "test_accuracy": "test_accuracy", "time_to_target_s": "time_to_target_s"}
"""Entry figure name -> harness.report.figures name."""

KEYS: dict[str, tuple[type, ...]] = {
    "workload": (str,), "workload_name": (str,), "mode": (str,), "machine": (str,), "commit": (str,),
    "dirty": (bool,), "branch": (str, type(None)), "time": (str,), "added_at": (str,), "source": (str,),
    "id": (str,), "figures": (dict,),
}
"""The keys an entry file holds, with their types (``order`` is the store's, computed on reading)."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def one_figure(name: str, value: float, replicates=None) -> dict:
    unit, higher = FIGURE_META.get(name, ("", True))
    reps = [float(v) for v in (replicates or []) if _number(v)]
    return {"value": float(value), "replicates": reps or [float(value)], "unit": unit, "higher_is_better": higher}


def report_figures(report: dict) -> dict:
    """The report's headline figures with their replicates (its repeats), nulls left out."""
    out = {}
    for name, source in _FROM_REPORT.items():
        value = figure(report, source)
        if not _number(value):
            continue
        if name == "tokens_per_s":
            reps = token_repeats(report)
        else:
            reps = dig(report, REPLICATES[source]) if source in REPLICATES else None
        out[name] = one_figure(name, value, reps if isinstance(reps, list) else None)
    loss = dig(report, "accuracy.test_loss")
    if _number(loss):
        out["test_loss"] = one_figure("test_loss", loss)
    return out


def content_id(data) -> str:
    """A content hash: the same report (or benchmark) gives the same id, whenever it is added."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def from_report(report: dict, source: Path, commit: str, dirty: bool, branch: str | None) -> dict:
    """The entry of one report (``added_at`` is the store's to set)."""
    cfg = report.get("config") or {}
    stem = source.parent.name if source.name == "report.yaml" else source.stem
    name = report.get("name") or cfg.get("name") or stem
    return {
        "workload": str(report.get("recipe_hash") or report["config_hash"]),
        "workload_name": str(name),
        "mode": mode_label(report),
        "machine": hardware(report),
        "commit": commit,
        "dirty": bool(dirty),
        "branch": branch,
        "time": str(report.get("finished_at") or report.get("started_at") or ""),
        "source": str(source),
        # With the commit: one report claimed for two commits is two measurements (a synthetic
        # A/A series repeats one report's content); added again for its commit, a no-op.
        "id": content_id({"report": report, "commit": commit}),
        "figures": report_figures(report),
    }


def problem(entry) -> str | None:
    """What is wrong with an entry read back (its key and what was expected), or None."""
    if not isinstance(entry, dict):
        return f"expected a mapping of entry keys, got {type(entry).__name__}"
    for key, types in KEYS.items():
        if key not in entry:
            return f"{key}: required key missing"
        if not isinstance(entry[key], types):
            return f"{key}: expected {' or '.join(t.__name__ for t in types)}, got {type(entry[key]).__name__}"
    for name, fig in entry["figures"].items():
        if not isinstance(fig, dict) or not _number(fig.get("value")) \
                or not isinstance(fig.get("replicates"), list) or not all(_number(v) for v in fig["replicates"]) \
                or not isinstance(fig.get("unit"), str) or not isinstance(fig.get("higher_is_better"), bool):
            return f"figures.{name}: expected {{value, replicates, unit, higher_is_better}}"
    return None
