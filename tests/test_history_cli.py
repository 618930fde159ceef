"""The history commands end to end, as a CI job keeping history runs them: `harness history add`
with `--commit` in a git repository, then `history check` and `history show` on the store.

The issue's done-when case: twelve reports whose samples/s fall by 30% from the seventh
commit on; check exits 1 and names the seventh commit, and the same twelve without the fall
exit 0. The reports are recorded dicts (support.reports), each with its step times, so the
figures are exactly what the test says they are.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.cli import main
from support.reports import make_report, noisy_steps, write

pytestmark = pytest.mark.usefixtures("one_thread")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def _history(tmp_path, monkeypatch, fall: float) -> tuple[Path, list[str]]:
    """A store of twelve commits of one recipe; from the seventh on samples/s is x (1 - fall)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    monkeypatch.chdir(repo)
    store, shas = tmp_path / "store", []
    for i in range(12):
        (repo / "model.py").write_text(f"version = {i}\n")
        _git(repo, "add", "model.py")
        _git(repo, "commit", "-qm", f"commit {i}")
        shas.append(_git(repo, "rev-parse", "HEAD"))
        rate = 1000.0 * (1 - fall if i >= 6 else 1.0)
        # Each report's own step times: 2% spread around the rate's step (batch 64).
        report = make_report(samples_per_s=rate, step_times_ms=noisy_steps(64_000.0 / rate, 30, 0.02, seed=i))
        report["recipe_hash"] = "recipe-1"
        path = write(tmp_path / "reports", f"r{i}", report)
        assert main(["history", "add", str(store), str(path), "--commit", "HEAD"]) == 0
    return store, shas


def test_a_30_percent_fall_from_the_seventh_commit_fails_the_check_and_names_it(tmp_path, monkeypatch, capsys):
    store, shas = _history(tmp_path, monkeypatch, fall=0.30)
    capsys.readouterr()
    assert main(["history", "check", str(store)]) == 1
    out = capsys.readouterr().out
    # samples/s and the step time it follows: both regressed, both from the seventh commit
    assert "2 regressed" in out and out.count(f"started at commit {shas[6]}") == 2, out
    assert shas[6][:12] in out  # the commit that started the regression
    assert not any(s[:12] in out for s in shas[7:11])  # ...and no later one is blamed

    page = tmp_path / "page"
    assert main(["history", "show", str(store), "--output", str(page)]) == 0
    html = (page / "history.html").read_text()
    assert f"data-commit='{shas[6]}'" in html or f'data-commit="{shas[6]}"' in html or shas[6][:12] in html
    assert shas[6][:12] in (page / "history.md").read_text()


def test_the_same_twelve_without_the_fall_pass(tmp_path, monkeypatch, capsys):
    store, _ = _history(tmp_path, monkeypatch, fall=0.0)
    capsys.readouterr()
    assert main(["history", "check", str(store)]) == 0
    assert "0 regressed" in capsys.readouterr().out


def test_check_of_a_store_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    store = tmp_path / "store"
    store.write_text("not a folder\n")
    assert main(["history", "check", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(store) in err[0]
