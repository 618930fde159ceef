"""``harness history``: keep the figures of runs over commits (docs/history.md).

``history add STORE RUN_OR_SWEEP... [--commit REV] [--branch NAME]`` appends one entry
per completed report. Every report is read and every commit resolved before the store
is touched, so bad input writes nothing. Reads YAML only: no torch import.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.errors import EXIT_OK, BadInput
from harness.files import git
from harness.history import store
from harness.history.entry import from_report
from harness.report.sources import collect


def _commit_of(report: dict, path: Path, given: tuple[str, bool, str | None] | None) -> tuple[str, bool, str | None]:
    if given is not None:
        return given
    block = (report.get("environment") or {}).get("git")
    if not isinstance(block, dict) or not block.get("commit"):
        raise BadInput(f"{path}: the report records no git commit (it ran outside a git checkout, or before "
                       "reports recorded one); give --commit REV")
    return str(block["commit"]), bool(block.get("dirty")), block.get("branch")


def entries_of(paths: list[str], commit: str | None, branch: str | None) -> tuple[list[dict], list[str]]:
    """The entries of every completed report ``paths`` stand for, and a warning per report left out."""
    given = None
    if commit is not None:
        sha = git.resolve(commit)
        if sha is None:
            raise BadInput(f"--commit {commit}: unknown revision in the git checkout of {Path.cwd()}")
        given = (sha, False, None)
    entries, skipped = [], []
    for path in paths:
        for item in collect(path):
            if item.report is None:
                skipped.append(f"skipped {item.path}: {item.stub} (no report)")
                continue
            status = item.report.get("status")
            if status != "completed":
                skipped.append(f"skipped {item.path}: status {status}, not completed")
                continue
            sha, dirty, from_branch = _commit_of(item.report, item.path, given)
            entries.append(from_report(item.report, item.path, sha, dirty, branch or from_branch))
    return entries, skipped


def cmd_add(args) -> int:
    target = Path(args.store)
    store.check_store(target)
    entries, skipped = entries_of(args.runs, args.commit, args.branch)
    added = store.add(target, entries)
    for line in skipped:
        print(line, file=sys.stderr)
    for entry, new in zip(entries, added):
        what = "added" if new else "already there"
        dirt = " (a tree with uncommitted changes)" if entry["dirty"] else ""
        print(f"{what}: {entry['workload_name']} ({entry['mode']}) at {entry['commit'][:12]}{dirt} "
              f"from {entry['source']}")
    print(f"{sum(added)} added, {len(added) - sum(added)} already there, {len(skipped)} skipped: {target}")
    return EXIT_OK


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "history", help="keep the figures of runs over commits: a history store (docs/history.md)",
        description="A store of runs' figures per commit, for trends and change points. docs/history.md.")
    sub = p.add_subparsers(dest="history_command", required=True)
    a = sub.add_parser("add", help="append the figures of completed reports to a history store",
                       description="Append one entry per completed report (a run folder, a report file, a sweep "
                                   "or a folder of them) to STORE, created if needed. A report already in the "
                                   "store is left as it is. Exit 0, or 2 on bad input (nothing written).")
    a.add_argument("store", help="the history store: a folder")
    a.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP", help="report.yaml, a run or sweep folder, sweep.yaml")
    a.add_argument("--commit", metavar="REV",
                   help="the commit the reports measure (resolved with git in the working directory); "
                        "default: each report's environment.git.commit")
    a.add_argument("--branch", metavar="NAME", help="the branch to record (default: the report's)")
    a.set_defaults(func=cmd_add)
    c = sub.add_parser("check", help="the CI gate over a history: the newest commit against the segment before it",
                       description="For each series (workload x mode x machine x figure), the newest commit's "
                                   "points against the segment before them (change points bound it), judged "
                                   "as harness compare judges. Exit 0, 1 on a regression (with --strict also on "
                                   "a suspicious one), 2 on bad input. docs/history.md.")
    c.add_argument("store", help="the history store: a folder")
    c.add_argument("--strict", action="store_true", help="a suspicious series fails the check too")
    c.set_defaults(func=cmd_check)
    s = sub.add_parser("show", help="trend charts of a history, changes marked: HTML and markdown",
                       description="Write history.html, history.md and plots/ to --output: one chart per "
                                   "series, commits on the x axis, each change marked with its commit.")
    s.add_argument("store", help="the history store: a folder")
    s.add_argument("--output", required=True, help="the folder to write the page to")
    s.set_defaults(func=cmd_show)


def cmd_check(args) -> int:
    from harness.history.check import run_check

    return run_check(Path(args.store), args.strict)


def cmd_show(args) -> int:
    from harness.history.show import run_show

    return run_show(Path(args.store), Path(args.output))
