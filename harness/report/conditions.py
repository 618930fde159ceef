"""The conditions a report's timings were taken under, in words a person acts on.

A timing is only as good as the machine was quiet. A report records that in its
``contention`` block (what other processes took of the CPUs the run may use), its
``threads`` block (threads against cores), the step-time ``noise`` verdict and the
length of its timed window (docs/report.md). Every surface a person reads (the run
summary, ``harness sweep``'s table, ``harness compare``'s rows, ``harness report``)
asks this module what to print beside a timing, so they all say the same thing.

A report without the ``contention`` block (older than it) is ``unknown``: never taken
for quiet. Plain Python over a report's dict: no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.measure.contention import MIN_WALL_S
from harness.report.figures import dig

QUIET, CONTENDED, UNKNOWN = "quiet", "contended", "unknown"
NOISY, UNRELIABLE = "noisy", "unreliable"

SHORT_WINDOW_STEPS = 20
"""A timed window of fewer steps is short: its median moves with one slow step (a page-in,
a neighbour's burst), and the step-time noise verdict has too few steps to see it."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _batch_blocks(report: dict, key: str) -> list[dict]:
    """Each inference batch size's ``key`` block (an inference report times one window per size)."""
    sizes = dig(report, "inference.batch_sizes")
    if not isinstance(sizes, list):
        return []
    return [b[key] for b in sizes if isinstance(b, dict) and isinstance(b.get(key), dict)]


def contention(report: dict) -> dict | None:
    """The report's ``contention`` block; for an inference report without one, its most
    contended batch size's. None: the report predates the measurement."""
    block = report.get("contention")
    if isinstance(block, dict):
        return block
    blocks = _batch_blocks(report, "contention")
    if not blocks:
        return None
    return max(blocks, key=lambda b: (b.get("verdict") == CONTENDED, b.get("foreign_cpu_fraction") or 0.0))


def verdict(report: dict) -> str:
    """quiet, contended or unknown (no block, or a window the meter could not read)."""
    v = (contention(report) or {}).get("verdict")
    return v if v in (QUIET, CONTENDED) else UNKNOWN


def foreign_fraction(report: dict) -> float | None:
    v = (contention(report) or {}).get("foreign_cpu_fraction")
    return float(v) if _number(v) else None


def noise(report: dict) -> str | None:
    """``noisy`` or ``unreliable`` from the step times (inference: its noisiest batch size); else None."""
    found = [dig(report, "step_time_ms.noise")]
    found += [b.get("noise") for b in _batch_blocks(report, "latency_ms")]
    for level in (UNRELIABLE, NOISY):
        if level in found:
            return level
    return None


def threads(report: dict) -> dict | None:
    block = report.get("threads")
    return block if isinstance(block, dict) else None


def threads_per_process(report: dict) -> int | None:
    v = (threads(report) or {}).get("torch_threads")
    return v if isinstance(v, int) else None


def total_threads(report: dict) -> int | None:
    v = (threads(report) or {}).get("total_threads")
    return v if isinstance(v, int) else None


@dataclass(frozen=True)
class Caveat:
    kind: str
    """contended, unknown, oversubscribed, noise or short window."""
    tag: str
    """A few words for a table cell: ``contended 62%``."""
    advice: str
    """A sentence for a summary: what was seen and what to do."""


def _contention_caveat(report: dict) -> Caveat | None:
    block = contention(report) or {}
    v = verdict(report)
    if v == UNKNOWN:
        secs = block.get("window_s")
        if not block:
            why = "this report predates the measurement"
        elif _number(secs) and secs < MIN_WALL_S:
            why = (f"the timed window ({secs:.2g} s) is too short to place other processes' share "
                   f"(it takes {MIN_WALL_S:g} s); time more passes")
        else:
            why = "the window's CPU time could not be read"
        return Caveat(UNKNOWN, "contention unknown",
                      f"contention unknown: {why}; its timings may be a busy machine's")
    if v == QUIET:
        return None
    share = foreign_fraction(report)
    pct = f"{share:.0%}" if share is not None else "a share"
    cpus = block.get("capacity_cpus")
    of = f"of the {cpus:g} CPUs this run may use" if _number(cpus) else "of the CPUs this run may use"
    load = [block.get("load_avg_start"), block.get("load_avg_end")]
    load_text = f", load average {load[0]:.1f} → {load[1]:.1f}" if all(_number(x) for x in load) else ""
    return Caveat(CONTENDED, f"contended {pct}",
                  f"contended: other processes took {pct} {of} during the timed window{load_text}; "
                  "its timings are not the recipe's: rerun on a quiet machine")


def _threads_caveat(report: dict) -> Caveat | None:
    t = threads(report) or {}
    total, avail, free = t.get("total_threads"), t.get("cpus_available"), t.get("free_cpus")
    if t.get("oversubscribed") and _number(avail):
        return Caveat("oversubscribed", f"{total} threads on {avail:g} CPUs",
                      f"oversubscribed: {total} threads ({t.get('torch_threads')} per process × "
                      f"{t.get('processes')}) on {avail:g} CPUs; OpenMP threads beyond the cores spin: "
                      "lower runtime threads or processes")
    # Beside a quiet window the free CPUs fall short of the capacity by a sliver (2 threads
    # on 1.96 free CPUs): named only where other processes took a real share.
    if t.get("oversubscribed_free") and _number(free) and verdict(report) == CONTENDED:
        return Caveat("oversubscribed", f"{total} threads on {free:.1f} free CPUs",
                      f"oversubscribed: {total} threads on the {free:.1f} CPUs other processes left free; "
                      "OpenMP threads beyond free cores spin: rerun on a quiet machine")
    return None


def _window_caveats(report: dict) -> list[Caveat]:
    out = []
    level = noise(report)
    if level:
        iqr = dig(report, "step_time_ms.iqr_over_median")
        ratio = f" (IQR/median {iqr:.2f})" if _number(iqr) else ""
        out.append(Caveat("noise", f"noise {level}",
                          f"{level}: the step times spread widely{ratio}; treat a difference smaller than "
                          "that spread as noise"))
    steps = dig(report, "throughput.measured_steps")
    if isinstance(steps, int) and 0 < steps < SHORT_WINDOW_STEPS and report.get("scenario") != "inference":
        secs = dig(report, "throughput.window_s")
        span = f" ({secs:.2g} s)" if _number(secs) else ""
        out.append(Caveat("short window", f"short window {steps} steps",
                          f"short window: {steps} timed steps{span}; train longer or lower "
                          "measure.warmup_steps for a figure one slow step cannot move"))
    return out


def caveats(report: dict) -> list[Caveat]:
    """What qualifies the report's timings, worst first; empty for a quiet, steady, long window."""
    found = [_contention_caveat(report), _threads_caveat(report), *_window_caveats(report)]
    return [c for c in found if c is not None]


def tags(report: dict) -> str:
    """``contended 62%, noise unreliable``: the caveats in a table cell; ``-`` when none."""
    return ", ".join(c.tag for c in caveats(report)) or "-"


def quiet_line(report: dict) -> str | None:
    """For the summary of a quiet run: what was measured, so quiet is a reading, not a default."""
    if verdict(report) != QUIET:
        return None
    share = foreign_fraction(report)
    return f"quiet: other processes took {share:.0%} of the CPUs during the window" if share is not None \
        else "quiet"


def side(reports: list[dict]) -> tuple[str, str]:
    """(verdict, tags) of one side of a comparison, its replicates together: contended when
    any was, else unknown when any was, else quiet; the tags of each replicate's caveats."""
    verdicts = {verdict(r) for r in reports}
    worst = next((v for v in (CONTENDED, UNKNOWN) if v in verdicts), QUIET)
    seen = list(dict.fromkeys(c.tag for r in reports for c in caveats(r)))
    return worst, ", ".join(seen)
