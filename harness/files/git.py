"""The git checkout a folder is in: its commit, whether the tree is dirty, its branch.

What a report records of the working directory it ran in (``environment.git``) and
how ``harness history add --commit REV`` names a commit. Never fatal: git missing, a
folder outside any checkout, a git that hangs (5 s) all give None, without a traceback.
Plain Python, no torch: the history commands read it too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

TIMEOUT_S = 5.0


def _git(cwd: Path, *args: str) -> str | None:
    """git's stdout, stripped; None when git is missing, fails or takes more than 5 s."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def checkout(cwd: str | Path = ".") -> dict | None:
    """``{commit, dirty, branch}`` of the checkout ``cwd`` is in; None outside one.

    ``dirty``: a tracked file differs from the commit (untracked files do not count:
    a run's own output folder is usually one). ``branch``: None on a detached HEAD.
    """
    cwd = Path(cwd)
    commit = _git(cwd, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if not commit:
        return None
    # No optional locks: status would otherwise refresh and rewrite the index, racing the
    # user's own git commands (and every rank of a launch runs this).
    status = _git(cwd, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    branch = _git(cwd, "symbolic-ref", "--quiet", "--short", "HEAD")
    return {"commit": commit, "dirty": bool(status) if status is not None else None, "branch": branch or None}


def resolve(rev: str, cwd: str | Path = ".") -> str | None:
    """The full sha of commit ``rev`` in the checkout ``cwd`` is in; None when unknown."""
    if not rev or rev.startswith("-"):  # never an option to git
        return None
    return _git(Path(cwd), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}") or None
