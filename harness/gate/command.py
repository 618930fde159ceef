"""``harness compare``'s command line: parse, collect both sides, compare, render.

The command sits above the gate's rooms (compare.py judges the cells, calibrate.py
measures the noise, output.py renders) so each of them imports only downwards.
"""

from __future__ import annotations

import sys

from harness.errors import BadInput
from harness.gate.calibrate import calibrate, render
from harness.gate.compare import EXIT_OK, Options, compare
from harness.gate.output import RENDERERS
from harness.gate.lm_inference import METRICS as LM_INFERENCE
from harness.gate.verdicts import BY_NAME, METRICS
from harness.report.figures import FIGURES
from harness.report.sources import collect


def parse_thresholds(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, pct = item.partition("=")
        by_key = {k: BY_NAME[n] for n in BY_NAME for k in FIGURES[n]}  # the dotted key works too
        metric = BY_NAME.get(name) or by_key.get(name) or LM_INFERENCE.get(name)
        if not sep or metric is None:
            raise BadInput(f"--threshold {item}: expected METRIC=PCT with METRIC one of "
                           f"{', '.join([*BY_NAME, *LM_INFERENCE])}")
        try:
            value = float(pct.rstrip("%"))
        except ValueError:
            raise BadInput(f"--threshold {item}: {pct!r} is not a number") from None
        if not value >= 0 or value == float("inf"):
            raise BadInput(f"--threshold {item}: must be a finite number >= 0")
        out[metric.name] = value
    return out


def cmd_compare(args) -> int:
    thresholds = parse_thresholds(args.threshold or [])
    if args.calibrate:
        if args.baseline or args.candidate:
            raise BadInput("--calibrate RUNS...: takes the runs after it, not BASELINE CANDIDATE")
        sys.stdout.write(render(calibrate([x for p in args.calibrate for x in collect(p)])))
        return EXIT_OK
    if not (args.baseline and args.candidate):
        raise BadInput("compare: needs BASELINE and CANDIDATE (or --calibrate RUNS...)")
    opts = Options(thresholds, args.allow_missing, args.allow_new, args.strict)
    result = compare(collect(args.baseline), collect(args.candidate), opts, names=(args.baseline, args.candidate))
    sys.stdout.write(RENDERERS[args.format](result))
    return result.exit_status


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare a candidate's reports with a baseline's; exit 1 when the gate fails",
        description="Compare reports cell by cell. Exit 0 pass; 1 a regression, a failed, missing or new "
                    "cell (or, with --strict, a suspicious change or a timing from a contended machine); 2 bad input. "
                    "docs/compare.md.")
    p.add_argument("baseline", nargs="?", help="report.yaml, sweep.yaml or a folder of reports")
    p.add_argument("candidate", nargs="?", help="report.yaml, sweep.yaml or a folder of reports")
    p.add_argument("--threshold", action="append", metavar="METRIC=PCT",
                   # argparse %-formats help text: a literal % is written %%.
                   help="override a threshold: " + ", ".join(
                       f"{m.name} (default {m.threshold:g}{m.unit})"
                       for m in (*METRICS, *LM_INFERENCE.values())).replace("%", "%%"))
    p.add_argument("--allow-missing", action="store_true", help="a baseline cell with no candidate passes")
    p.add_argument("--allow-new", action="store_true", help="a candidate cell with no baseline passes")
    p.add_argument("--strict", action="store_true",
                   help="a suspicious change (beyond the threshold, too few repeats to test) fails too, and so "
                        "does any timing verdict where either side ran on a contended machine")
    p.add_argument("--calibrate", nargs="+", metavar="RUNS",
                   help="A/A runs of one commit: print each metric's spread and the smallest detectable change")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.set_defaults(func=cmd_compare)
