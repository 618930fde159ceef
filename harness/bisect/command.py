"""``harness bisect``: parse, check the range, run the search, print its table, close.

Torch-free at the top: the runs are child processes (harness/bisect/runs.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from harness.args import split_positionals
from harness.bisect import search as bs
from harness.bisect import worktree as wt
from harness.bisect.table import render
from harness.errors import EXIT_FAILED, EXIT_OK, BadInput
from harness.files.atomic import write_text_atomic
from harness.files.safe_yaml import read_yaml
from harness.gate.verdicts import BY_NAME

STATE = "bisect.yaml"
FORMAT = "harness-bisect/1"
ALIASES = {"step_time_ms_p50": "step_time_p50_ms"}
CAP_FACTOR = 4
"""An ambiguous probe doubles its runs up to this many times --repeats."""


def _metric_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = ALIASES.get(name, name)
    if name not in BY_NAME:
        raise BadInput(f"--figure {name}: expected one of {', '.join(BY_NAME)}")
    return name


def _new_state(args, repo: Path) -> dict:
    if not args.good or not args.bad:
        raise BadInput("bisect: needs --good REV and --bad REV (or --resume with an output folder's bisect.yaml)")
    config, overrides = split_positionals(args.items)
    if config is None and not overrides:
        raise BadInput("bisect: needs a CONFIG (a path inside the repository) or KEY=VALUE overrides")
    good, bad = wt.resolve(repo, args.good, "--good"), wt.resolve(repo, args.bad, "--bad")
    commits = wt.first_parent_range(repo, good, bad)
    if config and not Path(config).is_absolute() and \
            wt.git(repo, "cat-file", "-e", f"{good}:{config}", check=False).returncode != 0:
        raise BadInput(f"{config}: not in the good commit {good[:12]} (CONFIG is read inside each commit's "
                       "worktree, relative to the repository's top level)")
    repeats = args.repeats or 3
    return {"format": FORMAT, "repo": str(repo), "config": config, "overrides": overrides,
            "figure": _metric_name(args.figure), "threshold": args.threshold, "repeats": repeats,
            "cap": CAP_FACTOR * repeats, "commits": [wt.describe(repo, c) for c in commits],
            "order": [], "probes": {}, "outcome": None}


def _resumed_state(args, repo: Path, out: Path) -> dict:
    path = out / STATE
    if not path.is_file():
        raise BadInput(f"--resume: {path} does not exist (no bisect to resume there)")
    state = read_yaml(path, what="bisect state")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise BadInput(f"{path}: not a bisect state file ({FORMAT})")
    ends = {"--good": (args.good, state["commits"][0]["sha"]), "--bad": (args.bad, state["commits"][-1]["sha"])}
    for option, (rev, sha) in ends.items():
        if rev and wt.resolve(repo, rev, option) != sha:
            raise BadInput(f"--resume: {option} {rev} is not the resumed bisect's ({sha[:12]})")
    config, overrides = split_positionals(args.items)
    if (config or overrides) and (config, overrides) != (state["config"], state["overrides"]):
        raise BadInput(f"--resume: the recipe differs from the resumed bisect's ({state['config']} {state['overrides']})")
    if args.figure and _metric_name(args.figure) != state.get("figure"):
        raise BadInput(f"--resume: --figure {args.figure} is not the resumed bisect's ({state.get('figure')})")
    if args.repeats:
        state["repeats"], state["cap"] = args.repeats, max(state["cap"], CAP_FACTOR * args.repeats)
    state["outcome"] = None
    return state


def _check_output(out: Path, resume: bool) -> None:
    if resume:
        return
    if (out / STATE).exists():
        raise BadInput(f"--output {out}: holds another bisect ({STATE}); pass --resume to continue it, "
                       "or another --output")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"--output {out}: exists and is not an empty folder")


class _Runner:
    """Measures commits for the search: worktrees, runs, and bisect.yaml after each run."""

    def __init__(self, state: dict, out: Path):
        self.state, self.out, self.repo = state, out, Path(state["repo"])

    def save(self) -> None:
        write_text_atomic(self.out / STATE, yaml.safe_dump(self.state, sort_keys=False, allow_unicode=True))

    def metric(self):
        return BY_NAME[self.state["figure"]]

    def measure(self, sha: str, n: int) -> None:
        from harness.bisect.runs import run_once

        probe = self.state["probes"].setdefault(sha, {"runs": []})
        if len(probe["runs"]) >= n:
            return
        is_good = sha == self.state["commits"][0]["sha"]
        with wt.checked_out(self.repo, sha) as tree:
            while len(probe["runs"]) < n:
                k = len(probe["runs"])
                print(f"bisect: {sha[:12]} run {k + 1}/{n}", file=sys.stderr, flush=True)
                rec = run_once(tree, self.state["config"], self.state["overrides"],
                               self.out / "probes" / sha[:12] / f"repeat_{k:02d}")
                if is_good and rec["status"] == bs.FAILED:
                    raise GoodEndFails(f"--good {sha[:12]}: the recipe fails at the good end ({rec['error']}); "
                                       "a bisect needs a good end that runs")
                if self.state["figure"] is None:
                    lm = rec.get("figures", {}).get("tokens_per_s") is not None
                    self.state["figure"] = "tokens_per_s" if lm else "samples_per_s"
                rec["value"] = rec.get("figures", {}).get(self.state["figure"])
                probe["runs"].append(rec)
                self.save()


class GoodEndFails(BadInput):
    pass


def cmd_bisect(args) -> int:
    repo = wt.toplevel(Path(args.repo).resolve())
    out = Path(args.output).absolute()  # the runs' working folder is their worktree
    _check_output(out, args.resume)
    state = _resumed_state(args, repo, out) if args.resume else _new_state(args, repo)
    if state["threshold"] is not None and not 0 <= state["threshold"] < float("inf"):
        raise BadInput(f"--threshold {state['threshold']}: expected a finite percentage >= 0")
    if state["threshold"] is None:
        state["threshold"] = BY_NAME[state["figure"] or "samples_per_s"].threshold
    dirty = wt.dirty_files(repo)
    if dirty:
        raise BadInput(f"--repo {repo}: uncommitted changes in tracked files ({', '.join(dirty[:3])}"
                       f"{', ...' if len(dirty) > 3 else ''}); commit or stash them first")
    runner = _Runner(state, out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        runner.save()
        outcome = bs.Search(state, runner.metric, runner.measure, runner.save).run()
    except GoodEndFails:
        if not args.resume:  # bad input: nothing of this bisect stays behind
            _empty(out, remove=created)
        raise
    sys.stdout.write(render(state))
    return EXIT_OK if outcome["result"] == bs.FIRST_BAD else EXIT_FAILED


def _empty(out: Path, remove: bool) -> None:
    for p in out.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if remove:
        out.rmdir()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bisect", help="find the first commit whose recipe runs regress against a good commit",
        description="Binary-search the first-parent commits GOOD..BAD of --repo for the first one whose runs of "
                    "the recipe regress against GOOD's, with the gate's exact test. Each probed commit is checked "
                    "out in a temporary git worktree (removed after) and run there with the worktree first on "
                    "PYTHONPATH. The repository must have no uncommitted changes in tracked files (untracked files "
                    "are allowed): the probes run commits, not the working tree. Exit 0 the first bad commit named; "
                    "1 no regression in the range, or a probe still ambiguous (--resume goes on); 2 bad input; "
                    "130/143 stopped by a signal. docs/bisect.md.")
    p.add_argument("items", nargs="*", metavar="CONFIG [KEY=VALUE ...]",
                   help="the recipe, a path inside the repository (relative to its top level), and overrides")
    p.add_argument("--good", metavar="REV", help="a commit where the recipe is known good (the baseline)")
    p.add_argument("--bad", metavar="REV", help="a later commit where it regressed")
    p.add_argument("--repo", default=".", metavar="DIR", help="the git repository (default: the current folder)")
    p.add_argument("--repeats", type=_positive, metavar="N",
                   help=f"runs per probed commit, each its own process (default 3; an ambiguous probe doubles "
                        f"them up to {CAP_FACTOR}x)")
    p.add_argument("--figure", metavar="NAME",
                   help="the figure judged (default samples_per_s, tokens_per_s for a language model): "
                        + ", ".join(BY_NAME) + "; each with its direction")
    p.add_argument("--threshold", type=float, metavar="PCT",
                   help="the change that counts, in percent (default the gate's for the figure)")
    p.add_argument("--output", default="runs/bisect", metavar="DIR",
                   help="where bisect.yaml and the probes' runs go (default runs/bisect)")
    p.add_argument("--resume", action="store_true", help="continue the bisect in --output without re-running "
                   "finished probes")
    p.set_defaults(func=cmd_bisect)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return n
