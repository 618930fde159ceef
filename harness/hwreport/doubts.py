"""Why a speed-up or a scaling efficiency is not a finding, in words beside the figure.

A ratio of two timings is only as good as both windows: one taken on a contended machine
(``contention.verdict``), or with another number of threads per process on one machine (a
single process running 2 OpenMP threads on 2 busy cores against ranks of 1 thread each), measures the
machine's load or the thread setting, not the hardware or the process count. An
efficiency above 100% is flagged whatever else is known: more than linear scaling means
the base run was slowed, or the runs did different work. Reports older than the
``contention`` and ``threads`` blocks give no reason either way: unknown is not flagged
here, but their rows say "contention unknown" (harness/report/conditions.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.report import conditions

SUPERLINEAR = 1.0 + 1e-9


@dataclass
class Taken:
    """The conditions of one row's or one point's replicates together."""
    contention: str = conditions.UNKNOWN
    tags: str = ""
    threads: tuple[int, ...] = ()
    """Torch threads per process, each value seen (empty: not recorded)."""
    total_threads: tuple[int, ...] = ()
    """Threads over all processes of the run on the machine, each value seen."""
    reasons: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, reports: list[dict]) -> "Taken":
        verdict, tags = conditions.side(reports) if reports else (conditions.UNKNOWN, "")
        per = tuple(sorted({t for t in map(conditions.threads_per_process, reports) if t is not None}))
        total = tuple(sorted({t for t in map(conditions.total_threads, reports) if t is not None}))
        return cls(verdict, tags, per, total)

    @property
    def contended(self) -> bool:
        return self.contention == conditions.CONTENDED


def _threads(values: tuple[int, ...]) -> str:
    return "/".join(map(str, values)) or "?"


def against(this: Taken, base: Taken, this_name: str, base_name: str, threads: bool = True) -> list[str]:
    """The reasons a ratio of ``this`` over ``base`` is not a finding; empty when none is known.
    ``threads``: whether other thread counts are a reason (on one machine; another machine
    runs as many threads as it has cores, which is part of what is compared)."""
    out = [f"{name} contended ({t.tags})" for name, t in ((base_name, base), (this_name, this)) if t.contended]
    if not threads:
        return out
    if this.threads and base.threads and this.threads != base.threads:
        out.append(f"threads per process differ ({_threads(base.threads)} {base_name}, "
                   f"{_threads(this.threads)} {this_name})")
    if this.total_threads and base.total_threads and this.total_threads != base.total_threads:
        out.append(f"total threads differ ({_threads(base.total_threads)} {base_name}, "
                   f"{_threads(this.total_threads)} {this_name})")
    return out


def speedup(this: Taken, ref: Taken, same_machine: bool) -> list[str]:
    return against(this, ref, "this row", "the reference", threads=same_machine)


def efficiency(value: float | None, this: Taken, base: Taken) -> list[str]:
    out = against(this, base, "here", "the base run")
    if value is not None and value > SUPERLINEAR:
        out.insert(0, "above 100% (more than linear: the base run was slowed, or the work differs)")
    return out


def cell(text: str, reasons: list[str]) -> str:
    """A figure with its reasons: ``×4.73 (not a finding: the reference contended (contended 62%))``."""
    return f"{text} (not a finding: {'; '.join(reasons)})" if reasons else text
