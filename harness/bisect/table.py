"""What a bisect prints: its probed commits with their figure and verdict, then the outcome."""

from __future__ import annotations

from harness.bisect.search import FIRST_BAD, NO_REGRESSION, values
from harness.measure.stats import median_ci
from harness.report.columns import aligned


def _interval(vals: list[float]) -> tuple[str, str]:
    if not vals:
        return "-", "-"
    ci = median_ci(vals)
    return f"{ci['median']:,.4g}", f"[{ci['ci_low']:,.4g}, {ci['ci_high']:,.4g}]"


def render(state: dict) -> str:
    figure = state.get("figure") or "figure"
    rows = [["commit", "subject", figure, "interval", "runs", "change", "verdict"]]
    for c in state["commits"]:
        probe = state["probes"].get(c["sha"])
        if not probe:
            continue
        median, interval = _interval(values(probe))
        verdict = probe.get("decision", "-") + (f" ({probe['verdict']})" if probe.get("verdict") else "")
        if c["sha"] == state["commits"][0]["sha"]:
            verdict = "good end"
        subject = c["subject"] if len(c["subject"]) <= 48 else c["subject"][:47] + "…"
        rows.append([c["sha"][:12], subject, median, interval, len(probe["runs"]), probe.get("change", "-"), verdict])
    lines = aligned(rows, right={2, 4, 5})
    lines.append(f"interval: the median's order-statistic confidence interval over the runs; verdicts from "
                 f"the gate's exact test against the good end at a {state['threshold']:g}% threshold")
    return "\n".join(lines) + "\n" + outcome(state)


def outcome(state: dict) -> str:
    out = state.get("outcome") or {}
    by_sha = {c["sha"]: c for c in state["commits"]}
    c = by_sha.get(out.get("sha"), {})
    probed = len(state["order"])
    if out.get("result") == FIRST_BAD:
        return (f"first bad commit: {c['sha']}\n  subject: {c['subject']}\n  author:  {c['author']}\n"
                f"({probed} of {len(state['commits'])} commits probed)\n")
    if out.get("result") == NO_REGRESSION:
        return (f"no regression in the range: the bad end {c['sha'][:12]} does not regress against the good end "
                f"({state['figure']}, {state['threshold']:g}% threshold)\n")
    note = state["probes"].get(out.get("sha"), {}).get("note", "")
    return (f"stopped: {c.get('sha', '?')[:12]} stays ambiguous at {state['cap']} runs ({note}); "
            f"bisect.yaml keeps the state: rerun with --resume and a larger --repeats to go on\n")
