"""The binary search and its state, apart from git and from runs.

The state is the dict ``bisect.yaml`` holds: the range (``commits``, good end first),
each probe's runs and decision, and the outcome. Every decision is derived again from
it, so ``--resume`` continues where a stop left off without re-running a finished probe.

A probe is measured with ``repeats`` runs and judged against the good end's runs with
the gate's test (harness/gate/verdicts.py). A regression is bad; unchanged or improved
is good; suspicious, insufficient data, or worse beyond the threshold without
significance is ambiguous: both sides are topped up to twice the runs (up to ``cap``)
and the probe judged again. Still ambiguous at the cap: the search stops there.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from harness.gate.verdicts import INSUFFICIENT, REGRESSION, SUSPICIOUS, Metric, judge_values

GOOD, BAD, AMBIGUOUS = "good", "bad", "ambiguous"
FAILED = "failed"
"""A run's status when its process did not complete: at a probe that is a bad commit
(a commit that breaks the recipe is a regression too), at the good end bad input."""

FIRST_BAD, NO_REGRESSION, UNDECIDED = "first bad commit", "no regression", "ambiguous"


def bracket(n: int, decided: dict[int, str]) -> tuple[int, int]:
    """(last good index, first bad index) that the decisions so far allow."""
    hi = min((i for i, d in decided.items() if d == BAD), default=n - 1)
    lo = max((i for i, d in decided.items() if d == GOOD and i < hi), default=0)
    return lo, hi


def next_index(n: int, decided: dict[int, str]) -> int | None:
    """The index to probe next: the good end, the bad end, then halves; None once bracketed."""
    for end in (0, n - 1):
        if end not in decided:
            return end
    lo, hi = bracket(n, decided)
    return (lo + hi) // 2 if hi - lo > 1 else None


def values(probe: dict) -> list[float]:
    return [r["value"] for r in probe.get("runs", []) if r.get("value") is not None]


def classify(metric: Metric, good: list[float], cand: list[float], threshold: float) -> tuple[str, object]:
    """(GOOD, BAD or AMBIGUOUS, the gate's Judgement) of a probe's values against the good end's."""
    j = judge_values(metric, good, cand, threshold)
    if j.verdict == REGRESSION:
        return BAD, j
    if j.verdict in (SUSPICIOUS, INSUFFICIENT):
        return AMBIGUOUS, j
    mb, mc = statistics.median(good), statistics.median(cand)
    change = (mc - mb) / abs(mb) * 100.0 if mb else 0.0
    worse = -change if metric.higher_is_better else change
    # The gate passes "worse beyond the threshold but not significant"; a bisect that
    # called it good could skip the culprit, so it earns more runs first.
    return (AMBIGUOUS if worse > threshold else GOOD), j


@dataclass
class Search:
    state: dict
    metric: Callable[[], Metric]
    """The judged figure, known once the good end has a report (a language model's is tokens/s)."""
    measure: Callable[[str, int], None]
    """Top up a commit's runs in ``state['probes'][sha]['runs']`` to n (saving as it goes)."""
    save: Callable[[], None]

    @property
    def commits(self) -> list[str]:
        return [c["sha"] for c in self.state["commits"]]

    def probe(self, sha: str) -> dict:
        return self.state["probes"].setdefault(sha, {"runs": []})

    def decided(self) -> dict[int, str]:
        out = {}
        for i, sha in enumerate(self.commits):
            d = self.state["probes"].get(sha, {}).get("decision")
            if d in (GOOD, BAD):
                out[i] = d
        return out

    def run(self) -> dict:
        """Probe until the first bad commit is bracketed or a probe stays ambiguous; the outcome."""
        commits, n = self.commits, len(self.commits)
        while (i := next_index(n, self.decided())) is not None:
            sha = commits[i]
            if sha not in self.state["order"]:
                self.state["order"].append(sha)
            if i == 0:
                self.measure(sha, self.state["repeats"])
                self.probe(sha)["decision"] = GOOD
                self.save()
                continue
            decision = self.settle(sha)
            if decision == AMBIGUOUS:
                return self.finish(UNDECIDED, sha)
            if i == n - 1 and decision == GOOD:
                return self.finish(NO_REGRESSION, sha)
        return self.finish(FIRST_BAD, commits[bracket(n, self.decided())[1]])

    def settle(self, sha: str) -> str:
        good, probe = self.probe(self.commits[0]), self.probe(sha)
        want = max(self.state["repeats"], len(probe["runs"]))
        while True:
            self.measure(self.commits[0], max(want, len(good["runs"])))
            self.measure(sha, want)
            decision = self.judge(sha)
            if decision != AMBIGUOUS or want >= self.state["cap"]:
                return decision
            want = min(2 * want, self.state["cap"])

    def judge(self, sha: str) -> str:
        probe = self.probe(sha)
        if any(r["status"] == FAILED for r in probe["runs"]):
            probe.update(decision=BAD, verdict=FAILED, note="a run failed at this commit")
        else:
            decision, j = classify(self.metric(), values(self.probe(self.commits[0])), values(probe),
                                   self.state["threshold"])
            probe.update(decision=decision, verdict=j.verdict, change=j.change, note=j.note)
        self.save()
        return probe["decision"]

    def finish(self, result: str, sha: str) -> dict:
        self.state["outcome"] = {"result": result, "sha": sha}
        self.save()
        return self.state["outcome"]
