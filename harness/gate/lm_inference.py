"""A language model's bench-inference figures in ``harness compare``.

A classification run's ``harness bench-inference`` writes a report.yaml (``scenario:
inference``), which compare pairs as a cell of its own. A language model's writes
``RUN/inference/inference.yaml`` (harness/report/lm_inference.py): no report, so compare reads
it beside each run's report.yaml and judges its rows under the run's cell, ``<cell> inference``:
the prefill p50 latency at each prompt length, judged like the step time p50, and the decode
tokens/s at each batch size, judged like tokens/s. The runs of a cell are its replicates, as
for every other figure.
"""

from __future__ import annotations

from pathlib import Path

from harness.gate.verdicts import INSUFFICIENT, Judgement, Metric, judge_values
from harness.report import conditions, lm_inference

METRICS = {
    "prefill_ms_p50": Metric("prefill_ms_p50", "prefill p50 (ms)", False, 30.0, timed=True),
    "decode_tokens_per_s": Metric("decode_tokens_per_s", "decode tokens/s", True, 15.0, timed=True),
}
"""Thresholds as step time p50's and tokens/s's (harness/gate/verdicts.py); ``--threshold NAME=PCT``."""


def files(report_paths: list[Path]) -> list[dict]:
    """The inference files beside a cell's reports, read; those without one are left out."""
    return [lm_inference.read(p) for p in map(lm_inference.beside, report_paths) if p.is_file()]


def label(metric: Metric, size: int) -> str:
    return f"{metric.label}, {'prompt' if metric.name == 'prefill_ms_p50' else 'batch'} {size}"


def judgements(base: list[dict], cand: list[dict], thresholds: dict[str, float]):
    """(row label, metric, threshold, Judgement) for each figure either side has, in the files' order."""
    b = [lm_inference.figures(body) for body in base]
    c = [lm_inference.figures(body) for body in cand]
    keys = list(dict.fromkeys(k for side in (b, c) for figs in side for k in figs))
    out = []
    for name, size in keys:
        metric = METRICS[name]
        limit = thresholds.get(name, metric.threshold)
        bv = [f[(name, size)] for f in b if (name, size) in f]
        cv = [f[(name, size)] for f in c if (name, size) in f]
        if bv and cv:
            j = judge_values(metric, bv, cv, limit)
        else:
            side = "baseline" if not bv else "candidate"
            j = Judgement(None, None, "-", INSUFFICIENT, f"no {label(metric, size)} in the {side}'s inference files")
        out.append((label(metric, size), metric, limit, j))
    return out


def timing_conditions(base: list[dict], cand: list[dict]) -> tuple[str, bool]:
    """What other processes took of the CPUs while either side was measured (each file's worst row)."""
    sides = {name: conditions.side([{"contention": body.get("contention")} for body in bodies])
             for name, bodies in (("baseline", base), ("candidate", cand))}
    words = "; ".join(f"{name}: {tags}" for name, (_, tags) in sides.items() if tags)
    return words, any(v == conditions.CONTENDED for v, _ in sides.values())
