"""The harness's host cost per optimizer step, and where it goes (issue 29, item 2).

    pytest benchmarks/test_step_cost.py -s

Each round runs the hand loop and every variant of the harness side
(benchmarks/step_cost.py) on a near-zero model, ``STEPS`` steps each, alternating which
side goes first and rotating the variants' order. The figure is the median over rounds of
(harness µs/step - hand µs/step) with its 95% interval, in wall time and in the training
thread's CPU time (which a busy machine disturbs far less); each part's cost is the median
of (full - variant), and that of Accelerate's wrappers, which the loop calls only where their
logic is needed, the median of (variant - full). Rounds during which other processes took
the CPUs are dropped (benchmarks/budget.py); when too few quiet ones are left for an
interval, the table is printed from every round and says it is the contended figure, not
the idle one. A benchmark measures: nothing here asserts a speed; the one assertion is
that every side trained the same weights.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.budget import Budget, interleaved, not_measured
from benchmarks.step_cost import ADDED, STEPS, VARIANTS, hand_side, harness_side, loss_handling_us
from harness.measure.stats import median_ci

BUDGET_S = 150.0
GOAL_US = 25.0
PARTS_ENV = "HARNESS_STEP_COST_PARTS"
"""Set to 0 to run the full harness side and the hand loop alone: more rounds in the budget
for the headline figure, no breakdown."""


def _interval(c: dict) -> str:
    if c["ci_low"] is None:
        return "(too few rounds for an interval)"
    return f"{c['ci_level']:.0%} CI {c['ci_low']:.1f} to {c['ci_high']:.1f}"


def test_harness_step_cost(benchmark, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both sides alike; a near-zero model gains nothing from more
    try:
        _measure(benchmark, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _measure(benchmark, tmp_path):
    load_at_start = os.getloadavg()[0]
    weights, every = {}, {}
    variants = VARIANTS if os.environ.get(PARTS_ENV, "1") != "0" else VARIANTS[:1]

    def harness(k: int):
        order = variants[k % len(variants):] + variants[:k % len(variants)]
        us = {}
        for v in order:
            (us[v], us[f"{v} cpu"]), weights[v] = harness_side(v, tmp_path / f"r{k}-{v.replace(' ', '_')}")
        every.setdefault(k, {}).update(us)
        return 1 / us["full"], us

    def hand(k: int):
        (us, cpu), weights["hand"] = hand_side()
        every.setdefault(k, {}).update({"hand": us, "hand cpu": cpu})
        return 1 / us, {"hand": us, "hand cpu": cpu}

    harness(-1), hand(-1)  # warm-up: first-call costs stay out of every round
    del every[-1]
    budget = Budget(BUDGET_S, min_rounds=6, max_rounds=61, narrow=0.02)
    quiet = [{**h[1], **p[1]} for h, p in interleaved(benchmark, budget, harness, hand)]
    for v in variants:
        assert torch.allclose(weights[v], weights["hand"], atol=1e-6), f"{v}: the harness trained other weights"
    info = benchmark.extra_info
    info["steps_per_side"] = STEPS
    info["rounds_us"] = list(every.values())
    reason = not_measured(info, median_ci([r["full"] - r["hand"] for r in quiet])["ci_level"] if quiet else None)
    rounds = quiet if not reason else list(every.values())
    which = (f"{len(quiet)} quiet rounds" if not reason else
             f"CONTENDED: all {len(rounds)} rounds, {info['dropped_contended']} of them contended "
             "(not the idle figure)")
    ci = median_ci([r["full"] - r["hand"] for r in rounds])
    info["cost_median_us"], info["cost_ci_us"] = ci["median"], [ci["ci_low"], ci["ci_high"]]
    cpu = median_ci([r["full cpu"] - r["hand cpu"] for r in rounds])
    info["cost_cpu_median_us"], info["cost_cpu_ci_us"] = cpu["median"], [cpu["ci_low"], cpu["ci_high"]]
    info["cost_from"] = which
    table = []
    for clock, tail in (("wall", ""), ("thread CPU", " cpu")):
        table += [(f"{clock}: hand loop (µs/step)", median_ci([r["hand" + tail] for r in rounds])),
                  (f"{clock}: harness loop (µs/step)", median_ci([r["full" + tail] for r in rounds])),
                  (f"{clock}: harness - hand", median_ci([r["full" + tail] - r["hand" + tail] for r in rounds]))]
        for v in variants[1:]:
            added = v in ADDED
            part = median_ci([(r[v + tail] - r["full" + tail]) * (1 if added else -1) for r in rounds])
            info[f"{'added' if added else 'part'}_{v.replace(' ', '_')}{tail.replace(' ', '_')}_us"] = part["median"]
            table.append((f"  {'added by' if added else 'saved by'}: {v}", part))
    accumulation = loss_handling_us(tmp_path / "loss_handling")
    info["loss_handling_cpu_us"] = accumulation
    print(f"\nhost cost per optimizer step, {STEPS} steps a side, {which} ({info['stopped_because']}):")
    for name, c in table:
        print(f"{name:38s} {c['median']:8.1f}   {_interval(c)}")
    for path, us in accumulation.items():
        print(f"{'  loss handling alone (CPU), ' + path:38s} {us:8.1f}")
    info["load_average"] = [load_at_start, os.getloadavg()[0]]
    print(headline(ci, cpu, f"{which}, load average {load_at_start:.1f} -> {os.getloadavg()[0]:.1f} "
                   f"on {os.cpu_count()} CPUs", reason))


def headline(wall: dict, cpu: dict, which: str, reason: str | None) -> str:
    """The one line the goal is read from: the harness's µs per step over the hand loop on
    both clocks, from which rounds, and whether they were the idle machine's."""
    def said(c: dict) -> str:
        verdict = "within" if c["median"] <= GOAL_US else "over"
        return f"{c['median']:.1f} µs ({_interval(c)}; {verdict} {GOAL_US:g})"

    state = f"NOT the idle figure: {reason}" if reason else "quiet rounds: the idle-machine figure"
    return (f"HEADLINE step cost, harness - hand per optimizer step: wall {said(wall)}, thread CPU {said(cpu)}; "
            f"goal <= {GOAL_US:g} µs on the idle machine; from {which}; {state}")
