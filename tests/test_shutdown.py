"""A process started as ``harness`` leaves without the interpreter's last full collection
(harness/process/shutdown.py); a program calling ``cli.main`` keeps it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support.paths import REPO

# Registered before ``main``, so it runs after ``main``'s handler (exit handlers run
# last-registered first): it sees whether the heap was frozen on the way out.
PROBE = """
import atexit, gc, sys
sys.argv[0] = {argv0!r}
atexit.register(lambda: print("frozen", gc.get_freeze_count()))
from harness.cli import main
try:
    main(["history", "--help"])
except SystemExit:
    pass
"""


@pytest.mark.parametrize("argv0, frozen", [("/usr/local/bin/harness", True), ("my_program.py", False)])
def test_only_the_harness_command_skips_the_final_collection(argv0, frozen):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv0=argv0)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    count = int(proc.stdout.split("frozen")[-1])
    assert (count > 0) is frozen, proc.stdout[-500:]


def test_a_bisect_probe_run_starts_as_the_harness_command(tmp_path):
    """bisect starts each probe's run with ``python -c BOOT``: it must get the command's own
    start-up and exit, or every probe would pay collections that `harness run` does not."""
    from harness.bisect import runs

    cmd = runs.command(None, [], tmp_path / "out")
    assert cmd[1] == "-c" and cmd[4] == "run"
    probe = "import atexit, gc; atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n" + cmd[2]
    proc = subprocess.run([sys.executable, "-c", probe, cmd[3], "history", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split("frozen")[-1]) > 0, proc.stdout[-500:]


def test_harness_launch_starts_accelerates_launcher_as_the_harness_command():
    """`harness launch` runs accelerate's launcher through harness.launch.accelerate_launch:
    the same `accelerate launch` (its own options), leaving without the final collection."""
    from harness.launch.command import build_command

    cmd = build_command("ddp", 2, ["configs/digits_mlp.yaml"], port=29500)
    assert cmd[1:3] == ["-m", "harness.launch.accelerate_launch"]
    probe = ("import atexit, gc, runpy\n"
             "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"
             "runpy.run_module('harness.launch.accelerate_launch', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", probe, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--multi_gpu" in proc.stdout and "--num_processes" in proc.stdout  # accelerate's own parser
    assert int(proc.stdout.split("frozen")[-1]) > 0, proc.stdout[-500:]
