"""The git side of a bisect: revisions, the first-parent range, and throwaway worktrees.

The user's checkout and its branches are never touched: each probed commit is checked
out detached in a worktree under a temporary folder, and that worktree is removed
(``git worktree remove --force``, then ``prune``) however the probe ends, a signal included.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import BadInput
from harness.files import git as checkout_git


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def toplevel(repo: Path) -> Path:
    proc = git(repo, "rev-parse", "--show-toplevel", check=False) if repo.is_dir() else None
    if proc is None or proc.returncode != 0:
        raise BadInput(f"--repo {repo}: not a git repository")
    return Path(proc.stdout.strip())


def resolve(repo: Path, rev: str, option: str) -> str:
    """The full sha of ``rev``'s commit; bad input when the repository knows no such commit."""
    sha = checkout_git.resolve(rev, repo)
    if sha is None:
        raise BadInput(f"{option} {rev}: unknown revision in {repo}")
    return sha


def first_parent_range(repo: Path, good: str, bad: str) -> list[str]:
    """good, then the first-parent commits after it up to bad, oldest first."""
    if good == bad:
        raise BadInput(f"--good and --bad are one commit ({good[:12]}): nothing to bisect")
    if git(repo, "merge-base", "--is-ancestor", good, bad, check=False).returncode != 0:
        raise BadInput(f"--good {good[:12]} is not an ancestor of --bad {bad[:12]}")
    listed = git(repo, "rev-list", "--ancestry-path", "--first-parent", "--reverse", f"{good}..{bad}").stdout.split()
    if not listed or listed[-1] != bad:
        raise BadInput(f"--good {good[:12]}: no first-parent path leads from it to --bad {bad[:12]}")
    return [good, *listed]


def dirty_files(repo: Path) -> list[str]:
    """Tracked files with uncommitted changes (staged or not); untracked files do not count."""
    # No optional locks: status would otherwise rewrite the index under the user's own git commands.
    out = git(repo, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no").stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def describe(repo: Path, sha: str) -> dict:
    """Subject and author of a commit, for the table and the verdict."""
    subject, author = (git(repo, "show", "-s", "--format=%s%n%an <%ae>", sha).stdout.splitlines() + ["", ""])[:2]
    return {"sha": sha, "subject": subject, "author": author}


@contextlib.contextmanager
def checked_out(repo: Path, sha: str):
    """A detached worktree of ``sha`` under a temporary folder, removed on the way out."""
    parent = Path(tempfile.mkdtemp(prefix="harness-bisect-"))
    path = parent / sha[:12]
    try:
        git(repo, "worktree", "add", "--detach", "--quiet", str(path), sha)
        yield path
    finally:
        git(repo, "worktree", "remove", "--force", str(path), check=False)
        git(repo, "worktree", "prune", check=False)
        shutil.rmtree(parent, ignore_errors=True)
