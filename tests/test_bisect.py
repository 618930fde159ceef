"""harness bisect: the search on a fake judge, bad input, and a scratch repository whose
model sleeps 20 ms a step up to one commit and 250 ms from it on, judged at a 50% threshold.

Why so wide: under load the fast commits' runs wander by tens of milliseconds, in phases that
last longer than a run. 10 -> 40 ms read +42% *faster* at load 14, and 5 -> 250 ms at the 15%
default named commit 4 (every run of it slower than every run of the good end). The fast
steps now sleep long enough that a stall of one step moves them little, and a commit is bad
only if it is twice as slow, where the real change is 12.5 times."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.bisect import search as bs
from harness.cli import main
from harness.gate.verdicts import BY_NAME

SAMPLES = BY_NAME["samples_per_s"]

# --- the search on a fake judge: no git, no runs ---


def _state(n: int, repeats: int = 2, cap: int = 8) -> dict:
    return {"commits": [{"sha": f"c{i}"} for i in range(n)], "order": [], "probes": {}, "repeats": repeats,
            "cap": cap, "threshold": 15.0, "outcome": None}


def _fake(state: dict, first_bad: int, value=None, log: list | None = None):
    """A Search whose runs give 100 samples/s before ``first_bad`` and 25 from it on (``value(i, k)`` if given)."""
    calls = [] if log is None else log

    def measure(sha: str, n: int) -> None:
        probe = state["probes"].setdefault(sha, {"runs": []})
        i = int(sha[1:])
        while len(probe["runs"]) < n:
            k = len(probe["runs"])
            v = value(i, k) if value else (100.0 + k if i < first_bad else 25.0 + k)
            probe["runs"].append({"status": "completed", "value": v})
            calls.append((sha, k))

    return bs.Search(state, lambda: SAMPLES, measure, lambda: None), calls


@pytest.mark.parametrize("n,first_bad", [(2, 1), (8, 1), (8, 5), (8, 7), (9, 4), (16, 11), (33, 2)])
def test_search_names_the_first_bad_commit_in_about_log2_probes(n, first_bad):
    state = _state(n, repeats=4)
    search, _ = _fake(state, first_bad)
    assert search.run() == {"result": bs.FIRST_BAD, "sha": f"c{first_bad}"}
    assert state["order"][:2] == ["c0", f"c{n - 1}"]  # the ends first
    assert len(state["order"]) <= math.ceil(math.log2(n - 1)) + 2 if n > 2 else len(state["order"]) == 2


def test_search_probes_halves_in_order():
    state = _state(9, repeats=4)
    search, _ = _fake(state, 3)
    search.run()
    assert state["order"] == ["c0", "c8", "c4", "c2", "c3"]


def test_a_bad_end_that_does_not_regress_is_no_regression():
    state = _state(6, repeats=4)
    search, _ = _fake(state, 99)
    assert search.run() == {"result": bs.NO_REGRESSION, "sha": "c5"}
    assert state["order"] == ["c0", "c5"]


def test_ambiguous_probe_doubles_both_sides_then_decides():
    # 2 runs a side: the exact test cannot reach p < 0.05 (suspicious), so 4 a side, then decided.
    state = _state(3, repeats=2, cap=8)
    search, calls = _fake(state, 1)
    assert search.run()["sha"] == "c1"
    assert len(state["probes"]["c2"]["runs"]) == 4 and len(state["probes"]["c0"]["runs"]) == 4
    assert state["probes"]["c2"]["verdict"] == "regression"
    assert state["probes"]["c1"]["decision"] == bs.BAD


def test_still_ambiguous_at_the_cap_stops_and_resume_goes_on():
    # The probe's runs straddle the good end's: worse beyond the threshold, never significant.
    def value(i, k):
        return 100.0 + k if i == 0 else (50.0 if k % 2 == 0 else 101.5)

    state = _state(3, repeats=2, cap=4)
    search, _ = _fake(state, 1, value)
    out = search.run()
    assert out["result"] == bs.UNDECIDED and state["probes"][out["sha"]]["decision"] == bs.AMBIGUOUS
    assert len(state["probes"][out["sha"]]["runs"]) == 4  # doubled once, to the cap
    # Resumed with a higher cap and a judge that now sees a clear regression: only new runs are made.
    resumed = yaml.safe_load(yaml.safe_dump(state))
    resumed["cap"] = 8
    search, calls = _fake(resumed, 1, lambda i, k: 100.0 + k if i == 0 else 25.0 + k)
    assert search.run()["result"] == bs.FIRST_BAD
    assert ("c2", 0) not in calls and ("c0", 0) not in calls  # finished runs are not re-run


def test_resume_from_a_state_skips_decided_probes():
    state = _state(9, repeats=4)
    search, _ = _fake(state, 6)
    search.run()
    done = yaml.safe_load(yaml.safe_dump(state))
    # Forget the last two decisions, as a stop during the third probe would leave them.
    for sha in done["order"][3:]:
        del done["probes"][sha]
    done["order"] = done["order"][:3]
    search, calls = _fake(done, 6)
    assert search.run() == state["outcome"]
    assert {sha for sha, _ in calls} == set(state["order"][3:])


def test_a_failed_run_at_a_probe_makes_it_bad():
    state = _state(5, repeats=4)

    def measure(sha, n):
        probe = state["probes"].setdefault(sha, {"runs": []})
        while len(probe["runs"]) < n:
            failed = int(sha[1:]) >= 3
            probe["runs"].append({"status": bs.FAILED if failed else "completed", "value": None if failed else 100.0})

    assert bs.Search(state, lambda: SAMPLES, measure, lambda: None).run()["sha"] == "c3"
    assert state["probes"]["c4"]["verdict"] == bs.FAILED


# --- a scratch repository ---

MODEL = '''import time
from torch import nn

DELAY_S = {delay}


class Slow(nn.Module):
    def __init__(self, in_channels=1, image_size=8, num_classes=10):
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.fc = nn.Linear(in_channels * h * w, num_classes)

    def forward(self, x):
        time.sleep(DELAY_S)
        return self.fc(x.flatten(1))
'''

RECIPE = """name: slow
seed: 0
data: {name: digits, subset: 200, transforms: {grayscale: true}}
loader: {batch_size: 16}
model: {name: "mymodel:Slow"}
optim: {name: sgd, lr: 0.05}
train: {epochs: 1, max_steps: 6}
measure: {warmup_steps: 1, measure_peak: false}
"""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com",
           "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def scratch_repo(root: Path, n: int = 6, slow_from: int = 3) -> tuple[Path, list[str]]:
    """A repository of ``n`` commits; commit ``slow_from`` (0-based) raises the sleep from 20 to 250 ms."""
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    shas = []
    for i in range(n):
        (repo / "mymodel.py").write_text(MODEL.format(delay=0.25 if i >= slow_from else 0.02))
        (repo / "recipe.yaml").write_text(RECIPE)
        (repo / "notes.txt").write_text(f"change {i}\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"change {i}" + (": a slower forward" if i == slow_from else ""))
        shas.append(_git(repo, "rev-parse", "HEAD"))
    return repo, shas


def _worktrees(repo: Path) -> list[str]:
    return [line for line in _git(repo, "worktree", "list").splitlines() if line.strip()]


@pytest.fixture
def repo(tmp_path):
    return scratch_repo(tmp_path)


def _bad_input(capsys, repo: Path, out: Path, *args: str) -> str:
    assert main(["bisect", "--repo", str(repo), "--output", str(out), *args]) == 2
    assert len(_worktrees(repo)) == 1 and not out.exists()
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("bisect: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ")  # besides the progress lines, one line
    return errors[0]


def test_bad_input_unknown_revision_not_ancestor_and_dirty(tmp_path, repo, capsys):
    repo, shas = repo
    out = tmp_path / "out"
    assert "unknown revision" in _bad_input(capsys, repo, out, "--good", "nosuch", "--bad", shas[-1], "recipe.yaml")
    assert "not an ancestor" in _bad_input(capsys, repo, out, "--good", shas[-1], "--bad", shas[0], "recipe.yaml")
    _git(repo, "checkout", "-q", "-b", "side", shas[2])
    (repo / "notes.txt").write_text("side\n")
    _git(repo, "commit", "-qam", "side")
    side = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")
    assert "not an ancestor" in _bad_input(capsys, repo, out, "--good", side, "--bad", shas[-1], "recipe.yaml")
    (repo / "mymodel.py").write_text("# not committed\n")
    err = _bad_input(capsys, repo, out, "--good", shas[0], "--bad", shas[-1], "recipe.yaml")
    assert "uncommitted changes" in err and "mymodel.py" in err


def test_bad_input_options(tmp_path, repo, capsys):
    repo, shas = repo
    out = tmp_path / "out"
    ends = ("--good", shas[0], "--bad", shas[-1])
    assert "--figure" in _bad_input(capsys, repo, out, *ends, "--figure", "nosuch", "recipe.yaml")
    assert "--threshold" in _bad_input(capsys, repo, out, *ends, "--threshold", "-1", "recipe.yaml")
    assert "not in the good commit" in _bad_input(capsys, repo, out, *ends, "missing.yaml")
    assert "--resume" in _bad_input(capsys, repo, out, "--resume")
    with pytest.raises(SystemExit) as stop:
        main(["bisect", "--repo", str(repo), "--output", str(out), *ends, "--repeats", "0", "recipe.yaml"])
    assert stop.value.code == 2 and not out.exists()


def test_bad_input_another_bisect_in_the_output(tmp_path, repo, capsys):
    repo, shas = repo
    out = tmp_path / "out"
    out.mkdir()
    (out / "bisect.yaml").write_text("format: harness-bisect/1\n")
    assert main(["bisect", "--repo", str(repo), "--output", str(out), "--good", shas[0], "--bad", shas[-1],
                 "recipe.yaml"]) == 2
    assert "another bisect" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["bisect.yaml"]


@pytest.mark.slow  # one run of the recipe, which fails
def test_bad_input_a_good_end_that_fails(tmp_path, repo, capsys):
    repo, shas = repo
    out = tmp_path / "out"
    err = _bad_input(capsys, repo, out, "--good", shas[0], "--bad", shas[-1], "--repeats", "2", "recipe.yaml",
                     "model.name=nosuch:Model")
    assert "fails at the good end" in err and "nosuch" in err


@pytest.mark.slow  # about 12 runs of a 6-step recipe, each its own process: probes 0, 5, 2 and 3
def test_bisect_names_the_commit_that_slowed_the_model(tmp_path, repo, capsys, monkeypatch):
    repo, shas = repo
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # relative --repo and --output: the runs' own working folder is their worktree
    code = main(["bisect", "--good", shas[0], "--bad", shas[-1], "--repo", "repo", "--repeats", "2",
                 "--threshold", "50", "--output", "out", "recipe.yaml"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"first bad commit: {shas[3]}" in text and "a slower forward" in text and "Ada" in text
    state = yaml.safe_load((out / "bisect.yaml").read_text())
    assert state["outcome"] == {"result": "first bad commit", "sha": shas[3]}
    assert len(state["order"]) <= math.ceil(math.log2(len(shas) - 1)) + 2
    assert len(_worktrees(repo)) == 1 and _git(repo, "status", "--porcelain") == ""
    # Resumed, it runs nothing more and names the same commit.
    runs = sum(len(p["runs"]) for p in state["probes"].values())
    assert main(["bisect", "--repo", str(repo), "--output", str(out), "--resume"]) == 0
    again = yaml.safe_load((out / "bisect.yaml").read_text())
    assert sum(len(p["runs"]) for p in again["probes"].values()) == runs
    assert again["outcome"] == state["outcome"]


@pytest.mark.slow  # one run of the recipe, stopped
def test_sigterm_stops_the_run_removes_the_worktree_and_keeps_the_state(tmp_path, repo):
    repo, shas = repo
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "harness", "bisect", "--good", shas[0], "--bad", shas[-1], "--repo", str(repo),
           "--repeats", "2", "--output", str(out), "recipe.yaml", "train.max_steps=3000", "train.epochs=300"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    log = out / "probes" / shas[0][:12] / "repeat_00.log"
    while not (log.is_file() and "epoch 1/" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.5)  # until the good end's first run is in its steps (3000 of 20 ms: far from its end)
    assert _running(out), "the good end's first run"
    assert len(_worktrees(repo)) == 2, "the good end's worktree while it runs"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert len(_worktrees(repo)) == 1 and not _running(out)
    state = yaml.safe_load((out / "bisect.yaml").read_text())
    assert state["outcome"] is None and state["probes"].get(shas[0], {"runs": []})["runs"] == []


def _running(out: Path) -> list[str]:
    """Processes whose command line names ``out``: ``ww``, for the runs' long command lines."""
    lines = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in lines if str(out) in line and "ps -eww" not in line]
