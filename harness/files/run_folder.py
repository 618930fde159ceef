"""A run's folder: what makes a folder hold a run, ``--overwrite``, and ``RunFolder``,
the one skeleton every command that writes a run goes through.

A command that writes a run (``harness run``, its scenario ``inference``, whole-run
repeats, ``bench-inference``, ``harness launch``) never writes into a folder that
holds another run's files: the old report would be replaced while its
``eval-test.yaml`` and ``inference/`` stayed beside the new model, and its checkpoints
would be counted among the new run's (``output.keep_checkpoints`` would delete the
new run's own). Such a folder is bad input unless ``--overwrite`` is given, which
first removes the old run's files.

``--overwrite`` removes the names below (the files and folders the harness writes at
the top of a run folder) and nothing else: ``--output .`` or a folder of the user's
own keeps every file the harness did not write. No link is followed: a symlink among
them is removed as a link, and a folder is removed by ``shutil.rmtree``, which unlinks
the links inside it (on Linux it removes through file descriptors, so a folder swapped
for a link meanwhile is not followed either).

``RunFolder`` holds a folder for one run (``harness run`` and the inference
scenario alike): its lock, another run's files refused or cleared, what a killed
writer left half-written cleaned away, a write test before any work, then
``config.yaml`` and an atomic, validated ``report.yaml``.

Torch-free: the check runs before anything is built.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from harness.errors import BadInput
from harness.files.atomic import DiskFull, clean_leftovers, write_text_atomic
from harness.files.lock import RunLock, live_owner
from harness.report.io import write_report

RUN_FILES = ("report.yaml", "config.yaml", "model.pt", "classes.json", "metrics.jsonl")
RUN_FOLDERS = ("checkpoints", "failures")
RUN_PATTERNS = (re.compile(r"eval-.+\.yaml"),  # `harness evaluate RUN`'s default outputs
                re.compile(r"repeat_\d+"))  # whole-run repeats' own runs
"""A run folder's own names. The lock and a killed writer's temporary names are not
among them: a folder holding only those holds no run (atomic.clean_leftovers).
Folders with names a user's own folder may have count only where the old run wrote
them: ``inference/`` when it holds a measurement, ``profile/`` and the trackers'
folders when the old run's ``config.yaml`` asked for them (``_asked_for``)."""

TRACKER_FOLDERS = {"wandb": "wandb", "mlflow": "mlruns", "comet_ml": "comet", "dvclive": "dvclive"}
"""Where each tracker keeps its local store in the run folder (tracking.local_defaults)."""


def _old_config(folder: Path) -> dict:
    import stat

    from harness.files.safe_yaml import read_yaml

    path = folder / "config.yaml"
    try:
        info = path.lstat()
        # Only a plain, config-sized file is read: a link to /dev/zero would never end.
        config = read_yaml(path, "config") if stat.S_ISREG(info.st_mode) and info.st_size < 1 << 20 else None
    except Exception:  # noqa: BLE001 -- an unreadable config names no extra folder
        return {}
    return config if isinstance(config, dict) else {}


def _asked_for(folder: Path) -> list[str]:
    """The folders the old run's config made it write: its trackers' and its profile."""
    config = _old_config(folder)
    tracking = config.get("tracking") if isinstance(config.get("tracking"), dict) else {}
    log_with = tracking.get("log_with") if isinstance(tracking.get("log_with"), list) else []
    every = "all" in log_with
    names = [d for t, d in TRACKER_FOLDERS.items() if every or t in log_with]
    project = tracking.get("project")
    if (every or "tensorboard" in log_with) and isinstance(project, str) \
            and project not in ("", ".", "..") and "/" not in project and "\0" not in project:
        names.append(project)  # TensorBoard writes <run folder>/<project>/
    measure = config.get("measure") if isinstance(config.get("measure"), dict) else {}
    if measure.get("profile") is not None:
        names.append("profile")
    return names


def run_entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` that an earlier run wrote (links included, never followed)."""
    folder = Path(folder)
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        raise BadInput(f"--output: cannot read {folder} ({err.strerror or err})") from None
    order = {n: i for i, n in enumerate(RUN_FILES + RUN_FOLDERS)}  # the report first in a refusal
    found = sorted((n for n in names if n in order or any(p.fullmatch(n) for p in RUN_PATTERNS)),
                   key=lambda n: (order.get(n, len(order)), n))
    inference = folder / "inference"
    if "inference" in names and inference.is_dir() and not inference.is_symlink() and run_entries(inference):
        found.append("inference")  # `bench-inference RUN_DIR`'s measurement of the old model
    if "config.yaml" in found:
        found += [n for n in _asked_for(folder) if n in names and n not in found]
    return [folder / n for n in found]


def _refusal(folder: Path, entries: list[Path], resumable: bool) -> str:
    shown = ", ".join(p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in entries[:4])
    more = f" and {len(entries) - 4} more" if len(entries) > 4 else ""
    resume = f"continue it with --resume {folder}, " if resumable else ""
    return (f"--output: {folder} holds an earlier run ({shown}{more}); {resume}replace it with --overwrite "
            "(which deletes those files first), or choose another --output")


def check_unused(folder: Path, overwrite: bool, resumable: bool = True) -> None:
    """Refuse ``folder`` when it holds a run and ``--overwrite`` was not given; touches nothing.

    A folder a live run holds is left to its lock, whose refusal names the run.
    """
    if overwrite:
        return
    entries = run_entries(folder)
    if entries and live_owner(folder) is None:
        raise BadInput(_refusal(Path(folder), entries, resumable))


def claim(folder: Path, overwrite: bool, resumable: bool = True) -> None:
    """Under ``folder``'s lock: refuse it when it holds a run, or clear the run with ``--overwrite``."""
    entries = run_entries(folder)
    if not entries:
        return
    if not overwrite:
        raise BadInput(_refusal(Path(folder), entries, resumable))
    for path in entries:
        _remove(path)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as err:
        raise BadInput(f"--overwrite: cannot remove {path} ({err.strerror or err})") from None


def check_writable(folder: Path) -> None:
    """Fail before the work, not after it, when results could not be saved."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / ".write-test", "ok\n").unlink()
    except DiskFull:
        raise
    except OSError as err:
        raise BadInput(f"output.dir: cannot write to {folder} ({err.strerror or err})") from None


class RunFolder:
    """``with RunFolder(path) as folder:`` holds ``path`` for one run (its lock) until the block ends.

    ``enabled``: false on the ranks other than the main process, which neither lock,
    claim nor write (the main process does it for the job). ``discard_on_error``: an
    exception leaving the block (bad input, Ctrl-C, a signal's exit) removes what the
    block wrote here (``config.yaml``, and a folder the lock created), so a measurement
    stopped half-way leaves nothing; a failure the run records is a report, not this.
    """

    def __init__(self, path: Path, enabled: bool = True, discard_on_error: bool = False):
        self.path = Path(path)
        self.enabled = enabled
        self.discard_on_error = discard_on_error
        self.lock = RunLock(self.path, enabled=enabled)
        self.config_written: Path | None = None

    def __enter__(self) -> "RunFolder":
        self.lock.acquire()
        return self

    def __exit__(self, kind, err, tb) -> None:
        try:
            if kind is not None and self.discard_on_error:
                if self.config_written is not None:
                    self.config_written.unlink(missing_ok=True)
                self.lock.remove_created()
        finally:
            self.lock.release()

    def claim(self, overwrite: bool, resumable: bool = True, fresh: bool = True) -> None:
        """Under the lock: another run's files refused (cleared with ``overwrite``) when the run
        is ``fresh`` (a resume continues the run that is there), a killed writer's leftovers
        cleaned (the checkpoints' too), and a write test."""
        if not self.enabled:
            return
        if fresh:
            claim(self.path, overwrite, resumable)
        clean_leftovers(self.path)
        clean_leftovers(self.path / "checkpoints")
        check_writable(self.path)

    def write_config(self, config: dict) -> Path | None:
        """``config.yaml``: the resolved recipe (``config.to_dict``), written atomically."""
        import yaml

        if not self.enabled:
            return None
        self.config_written = write_text_atomic(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        return self.config_written

    def write_report(self, report: dict) -> Path | None:
        """``report.yaml``, validated against the schema and written atomically (report/io.py)."""
        if not self.enabled:
            return None
        return write_report(self.path / "report.yaml", report)
