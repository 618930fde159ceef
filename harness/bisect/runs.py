"""One probe's runs: ``harness run`` of the recipe in a commit's worktree, each a process.

The child runs with cwd = the worktree and PYTHONPATH = the worktree first, so a
``module:Class`` model and the rest of the user's code are that commit's, and CONFIG's
relative path is read inside the worktree. The harness stays the one installed here:
the child imports it from this process's copy before anything of the worktree's can
shadow it (a repository that holds a ``harness/`` folder of its own). Each child has its
own session; a signal to the bisect stops the child's whole group before the worktree goes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import harness
from harness.bisect.search import FAILED
from harness.report.figures import figure
from harness.report.io import load_report

STOP_WAIT_S = 60
"""How long a stopped run gets to write its report and checkpoint before it is killed."""

# argv[0] becomes "harness", the console script's name: the child is the harness command,
# and measure.startup.started_as_harness gives it the command's start-up and exit (the
# collector paused over the imports, no final collection), as `harness run` by hand has.
_BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'harness'; import harness; "
         "sys.path.pop(0); from harness.cli import main; sys.exit(main(sys.argv[1:]))")


def command(config: str | None, overrides: list[str], out: Path) -> list[str]:
    installed = str(Path(harness.__file__).resolve().parent.parent)
    return [sys.executable, "-c", _BOOT, installed, "run", *([config] if config else []), *overrides,
            "--output", str(out)]


def environment(worktree: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(worktree), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_once(worktree: Path, config: str | None, overrides: list[str], out: Path) -> dict:
    """Run the recipe once into ``out`` (replacing a partial folder an earlier stop left); its record."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(command(config, overrides, out), cwd=worktree, env=environment(worktree),
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait()
        except BaseException:  # Stopped by a signal, above all: the run goes with us
            _stop(proc)
            raise
    record = {"dir": str(out), "exit": code, "status": FAILED, "value": None}
    report = out / "report.yaml"
    if code == 0 and report.is_file():
        loaded = load_report(report)
        record["status"] = loaded.get("status", FAILED)
        record["figures"] = {n: _number(figure(loaded, n)) for n in ("samples_per_s", "tokens_per_s",
                                                                   "step_time_p50_ms", "peak_rss_mb",
                                                                   "test_accuracy")}
    if record["status"] != "completed":
        record["status"] = FAILED
        record["error"] = _last_line(log)
    return record


def _number(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, STOP_WAIT_S), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip().removeprefix("error: ") if lines else "no output"
