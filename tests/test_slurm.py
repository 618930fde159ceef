"""Against a real Slurm: sweeps through ``--executor slurm`` and launch/slurm.sbatch.

They run whenever ``sbatch`` answers. Where Slurm is installed but not running (CI after
``scripts/slurm-local.sh install``), the session fixture brings up a local Slurm with
that script and stops its daemons, by their pids, when the session ends. Without Slurm
they skip, and pytest's summary (``-ra``) says why. That Slurm has two nodes on this host
(local1, local2), so the multi-node paths run for real.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from harness.files.lock import read_lock
from support import slurm_session
from support.cli import run_cli
from support.paths import REPO, TESTS_PATH

SCRIPT = slurm_session.SCRIPT
LOGS = Path(os.environ.get("SLURM_LOCAL_DIR", "/var/tmp/harness-slurm"))  # scripts/slurm-local.sh's daemons
TINY = {"data.subset": 240, "train.epochs": 1, "measure.warmup_steps": 1, "loader.batch_size": 16,
        "output.progress": False, "output.checkpoint_every_epoch": False, "output.save_model": False,
        "measure.measure_peak": False, "runtime.device": "cpu"}
TINY_ARGS = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in TINY.items()]

# Under `pytest -n` they run on one worker, one after another from the session's start
# (conftest.py sends them first): they mostly wait on jobs, and spread over the workers
# they waited at once, the CPUs half idle for minutes (2026-12-07 at a773ed8: 13% of the
# suite's CPU time idle, most of it in those minutes). The other workers compute meanwhile.
# Whichever worker needs Slurm first brings it up, and the session's controller brings it
# down after every worker (support/slurm_session.py).
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def _answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def slurm():
    """A Slurm that answers sbatch: the machine's own, or one this session starts. The
    session's controller stops one it started, after every worker is done
    (support/slurm_session.py)."""
    if shutil.which("sbatch") is None:
        pytest.skip("Slurm is not installed (no sbatch): `scripts/slurm-local.sh up` installs and starts "
                    "a single-node one (root, Debian)")
    with slurm_session.bringing_up():
        if not _answers():
            if shutil.which("slurmctld") is None or os.geteuid() != 0:
                pytest.skip("sbatch is installed but no slurmctld answers, and this session cannot start one "
                            "(needs slurmctld and root)")
            # Four CPUs a node, whatever the machine has: these jobs mostly sleep, requeue or
            # wait for a time limit, and on two they queued behind each other (the time-limit
            # cells held 3 of the 4 while the two workers' next jobs pended, ~150 s).
            env = {**os.environ, "SLURM_LOCAL_CPUS": str(max(4, os.cpu_count() or 1))}
            proc = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=180, env=env)
            if proc.returncode != 0:
                pytest.skip(f"could not bring up a local Slurm: {proc.stderr.strip().splitlines()[-1:]}")
            slurm_session.started()


@pytest.fixture
def two_nodes(slurm):
    """A default partition of two nodes or more (scripts/slurm-local.sh's has two)."""
    counts = subprocess.run(["sinfo", "-h", "-o", "%D %P"], capture_output=True, text=True).stdout.split("\n")
    default = next((line.split()[0] for line in counts if line.strip().endswith("*")), "0")
    if int(default) < 2:
        pytest.skip(f"the default partition has {default} node(s); these tests need 2 "
                    "(scripts/slurm-local.sh up brings up two on this host)")


def sweep_file(tmp_path: Path, name: str, **spec) -> Path:
    body = {"name": name, "base": {"config": str(REPO / "configs/digits_mlp.yaml"), "overrides": TINY},
            "executor": "slurm", "time_limit_s": 300, **spec}
    path = tmp_path / "sweep.in.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def harness(*args: str, timeout: float = 600, tests_on_path: bool = False) -> subprocess.CompletedProcess:
    """``tests_on_path``: the jobs can import tests/fixtures/custom_models.py (sbatch passes the environment on)."""
    path = os.pathsep.join([str(REPO), TESTS_PATH] if tests_on_path else [str(REPO)])
    return run_cli(*args, timeout=timeout, env={"PYTHONPATH": path})


def rows(out: Path) -> list[dict]:
    return yaml.safe_load((out / "sweep.yaml").read_text())["cells"]


def jobs_named(name: str) -> dict[str, dict]:
    """Every job the controller knows by this name: {job id: its fields}."""
    text = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True).stdout
    found = {}
    for line in text.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if fields.get("JobName") == name:
            found[fields["JobId"]] = fields
    return found


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_a_four_cell_sweep_runs_as_one_array_two_at_a_time(slurm, tmp_path):
    name = unique("four")
    spec = sweep_file(tmp_path, name, grid={"loader.batch_size": [16, 32], "optim.lr": [0.01, 0.05]},
                      slurm={"array_parallelism": 2})
    out = tmp_path / "out"
    proc = harness("sweep", str(spec), "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = rows(out)
    assert [r["status"] for r in got] == ["completed"] * 4, got
    assert all(r["scheduler_state"] == "COMPLETED" and r["samples_per_s"] > 0 for r in got)
    arrays = {r["job_id"].split("_")[0] for r in got}
    assert len(arrays) == 1, f"one job array, got {arrays}"
    assert sorted(r["job_id"].split("_")[1] for r in got) == ["0", "1", "2", "3"]
    # Never more than two cells running at once: the scheduler's own start and end times.
    spans = [(datetime.fromisoformat(j["StartTime"]), datetime.fromisoformat(j["EndTime"]))
             for j in jobs_named(f"harness-{name}").values()]
    assert len(spans) == 4
    for start, _ in spans:
        assert sum(s <= start < e for s, e in spans) <= 2, spans


def test_cells_past_their_time_limit_checkpoint_and_are_timeout_rows(slurm, tmp_path):
    """Slurm's SIGTERM at the limit reaches every process of the job; the ranks of a launch
    cell get it again from their launcher, and must still checkpoint, as one process does."""
    # The one-process cell's checkpoint takes 6 s: its row must wait for the report (the job
    # is COMPLETING until the run has ended, not TIMEOUT the moment the limit strikes).
    # Both cells' steps sleep a second: for the minute until the limit they leave the CPUs to
    # the tests beside them (three processes training flat out took them for a minute; at
    # 20 ms a step they still used 106 s of CPU, at 200 ms 47 s, at 1 s 34 s, the test alone
    # and idle: at short steps, each short epoch's evaluation, checkpoint and memory readings).
    cnn = str(REPO / "configs/digits_cnn.yaml")
    slow = {"config": cnn, "model.name": "fixtures.custom_models:SlowToSave",
            "model.kwargs": {"marker": str(tmp_path / "marker"), "sleep_ms": 1000, "save_s": 6}}
    sleepy = {"config": cnn, "model.name": "fixtures.custom_models:Slow", "model.kwargs": {"sleep_ms": 1000}}
    spec = sweep_file(tmp_path, unique("limit"), time_limit_s=30,
                      cells=[{"train.epochs": 100000, **slow}, {"train.epochs": 100000, "launch.nproc": 2, **sleepy}])
    out = tmp_path / "out"
    proc = harness("sweep", str(spec), "--output", str(out), tests_on_path=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = rows(out)
    for row in (one, two):
        assert row["status"] == "failed" and row["job_id"]
        assert row["scheduler_state"] == "TIMEOUT"
        assert row["error"].startswith("TIMEOUT: the scheduler stopped the job at its time limit (1 min)")
        cell = out / "cells" / row["id"]
        report = yaml.safe_load((cell / "report.yaml").read_text())
        assert report["status"] == "interrupted"
        assert "the state is checkpointed" in report["error"], (report["error"], (cell / "stderr.log").read_text()[-3000:])
        assert any((cell / "checkpoints").iterdir())
    assert two["world_size"] == 2


def test_resume_waits_for_queued_jobs_and_submits_nothing_twice(slurm, tmp_path):
    name = unique("held")
    # Held jobs stay queued until released: the sweep is stopped while they wait.
    spec = sweep_file(tmp_path, name, cells=[{"optim.lr": 0.01}, {"optim.lr": 0.05}],
                      slurm={"additional_parameters": {"hold": True}})
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(spec), "--output", str(out)],
                             cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            (out / "sweep.yaml").exists() and all(r.get("job_id") for r in rows(out))):
        time.sleep(0.5)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 128 + signal.SIGTERM, first.stderr.read()
    queued = rows(out)
    assert [r["status"] for r in queued] == ["queued", "queued"]
    ids = [r["job_id"] for r in queued]
    assert all(j["JobState"] == "PENDING" for j in jobs_named(f"harness-{name}").values())

    second = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(spec), "--output", str(out),
                               "--resume"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    time.sleep(5)  # the resumed sweep is watching the held jobs, not submitting new ones
    subprocess.run(["scontrol", "release", ids[0].split("_")[0]], check=True)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-3000:]
    assert "0 submitted now" in stderr
    done = rows(out)
    assert [r["status"] for r in done] == ["completed", "completed"], done
    assert [r["job_id"] for r in done] == ids
    assert len(jobs_named(f"harness-{name}")) == 2, "a job was submitted twice"
    assert len(list((out / ".submitit").glob("*/*_submission.sh"))) == 1


def sbatch(tmp_path: Path, *args: str, timeout: float = 600) -> tuple[int, str]:
    """Submit, then poll the controller every half second (``sbatch --wait`` polls far more slowly)."""
    log = tmp_path / "slurm.out"
    env = {**os.environ, "HARNESS_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(REPO), TESTS_PATH])}  # tests/fixtures/custom_models.py
    job = subprocess.run(["sbatch", "--parsable", "--chdir", str(REPO), "--output", str(log), *args],
                         capture_output=True, text=True, timeout=60, env=env, check=True).stdout.strip()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
        fields = dict(tok.split("=", 1) for tok in text.split() if "=" in tok)
        if fields.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return int(fields["ExitCode"].split(":")[0]), log.read_text() if log.exists() else ""
        time.sleep(0.5)
    subprocess.run(["scancel", job])
    raise AssertionError(f"job {job} did not end within {timeout} s")


def test_sbatch_on_two_cpu_nodes_starts_a_process_per_task_not_eight(two_nodes, tmp_path):
    run = tmp_path / "run"
    code, log = sbatch(tmp_path, "--nodes=2", "--ntasks-per-node=2", "launch/slurm.sbatch",
                       "configs/digits_mlp.yaml", *TINY_ARGS, "--output", str(run))
    assert code == 0, log[-3000:]
    assert "2 node(s) x 2 process(es) = 4" in log
    report = yaml.safe_load((run / "report.yaml").read_text())
    assert report["status"] == "completed"
    assert report["distributed"]["world_size"] == 4
    assert len({r["pid"] for r in report["per_rank"]}) == 4
    assert sorted(r["node_rank"] for r in report["per_rank"]) == [0, 0, 1, 1]


def test_sbatch_bad_input_ends_the_job_with_one_line(slurm, tmp_path):
    code, log = sbatch(tmp_path, "--ntasks-per-node=2", "launch/slurm.sbatch", "configs/digits_mlp.yaml",
                       "optim.lrr=0.1", "--output", str(tmp_path / "run"))
    assert code != 0
    lines = [ln for ln in log.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and "optim.lrr" in lines[-1], log[-3000:]
    assert "Traceback" not in log


def test_sbatch_ends_with_the_failing_ranks_one_line(slurm, tmp_path):
    code, log = sbatch(tmp_path, "--ntasks-per-node=2", "launch/slurm.sbatch", "configs/digits_cnn.yaml",
                       *TINY_ARGS, "model.name=fixtures.custom_models:FailOnRank", "--output", str(tmp_path / "run"))
    assert code == 1, log[-3000:]
    lines = [ln for ln in log.splitlines() if ln.strip()]
    assert lines[-1] == "error: RuntimeError: boom on rank 1 at step 3 (rank 1)", log[-3000:]


def test_a_partition_sbatch_refuses_is_one_line_and_leaves_nothing(slurm, tmp_path):
    spec = sweep_file(tmp_path, unique("nopart"), cells=[{"optim.lr": 0.01}],
                      slurm={"partition": "no-such-partition"})
    out = tmp_path / "out"
    proc = harness("sweep", str(spec), "--output", str(out))
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: slurm: sbatch refused the array:"), proc.stderr
    assert not out.exists()


def test_sbatch_preempted_checkpoints_requeues_itself_and_resumes(slurm, tmp_path):
    """SIGTERM to the batch script (what --signal=B:TERM@120 or a pre-emption sends): the ranks
    checkpoint, the job requeues itself, and its next start resumes the run folder."""
    run, log = tmp_path / "run", tmp_path / "slurm.out"
    env = {**os.environ, "HARNESS_PYTHON": sys.executable, "PYTHONPATH": os.pathsep.join([str(REPO), TESTS_PATH])}
    args = [a for a in TINY_ARGS if not a.startswith(("train.epochs", "output.checkpoint_every_epoch"))]
    # Half-second steps: still training some 10 s after the first checkpoint, on little CPU
    # (16 epochs of the MLP did the same with 12 s of CPU in the second start's ranks).
    job = subprocess.run(["sbatch", "--parsable", "--chdir", str(REPO), "--output", str(log), "--ntasks-per-node=2",
                          "launch/slurm.sbatch", "configs/digits_mlp.yaml", *args, "train.epochs=4",
                          "model.name=fixtures.custom_models:Slow", "model.kwargs={sleep_ms: 500}",
                          "--output", str(run)], capture_output=True, text=True, env=env, check=True).stdout.strip()

    def job_field(key: str) -> str:
        text = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
        return dict(tok.split("=", 1) for tok in text.split() if "=" in tok).get(key, "")

    def wait_for(what, timeout=180):
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.5)

    try:
        wait_for(lambda: any((run / "checkpoints").glob("epoch_*")))
        subprocess.run(["scancel", "--signal=TERM", "--batch", job], check=True)
        wait_for(lambda: job_field("Restarts") == "1")
        report = yaml.safe_load((run / "report.yaml").read_text())
        assert report["status"] == "interrupted", report.get("error")
        # The first start's processes must be gone (the run's lock released) before the next
        # one may take the folder; Slurm then holds a requeued job for a while: start it now.
        wait_for(lambda: job_field("JobState") == "PENDING" and read_lock(run) is None)
        # slurmd compares a credential's creation time with the job's revocation in whole
        # seconds: a restart in the second of the requeue is "credential revoked" and the job
        # FAILS (seen under load). Slurm's own hold avoids that; when cutting it short, let a
        # second pass first.
        time.sleep(2)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
        wait_for(lambda: job_field("JobState") in ("COMPLETED", "FAILED", "CANCELLED"))
    finally:
        subprocess.run(["scancel", job])
    state = job_field("JobState")
    if state != "COMPLETED":  # what the controller and the node said of this job, to tell why
        said = "".join(line for f in [LOGS / "slurmctld.log", *sorted(LOGS.glob("slurmd*.log"))] if f.is_file()
                       for line in f.read_text(errors="replace").splitlines(True)[-400:]
                       if f"JobId={job}" in line or f"job {job}" in line.lower() or f"StepId={job}" in line)
        pytest.fail(f"job {job} ended {state} ({job_field('Reason')}, exit {job_field('ExitCode')})\n"
                    f"{log.read_text()}\n--- Slurm's logs ---\n{said}")
    report = yaml.safe_load((run / "report.yaml").read_text())
    assert report["status"] == "completed"
    assert report["resumed_from_epoch"] >= 1
    assert f"restart 1 of job {job}: resuming {run}" in log.read_text()


def test_a_two_node_cell_requeued_midway_resumes_from_its_checkpoint(two_nodes, tmp_path):
    """One cell over both nodes (one launcher a node, ranks meeting at node 0), requeued by the
    scheduler while it trains: every rank checkpoints at one step boundary, the job runs again
    with --resume, and the row counts two attempts of one job."""
    name = unique("requeue")
    # Steps that sleep half a second keep the first attempt training for some 10 s after its
    # first checkpoint, however busy the machine, while the ranks leave the CPUs alone (24
    # epochs of the MLP on 600 digits did the same with 17 s of CPU in the second attempt).
    spec = sweep_file(tmp_path, name, time_limit_s=600,
                      cells=[{"slurm.nodes": 2, "train.epochs": 4, "data.subset": 240,
                              "model.name": "fixtures.custom_models:Slow", "model.kwargs": {"sleep_ms": 500},
                              "output.checkpoint_every_epoch": True}])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), TESTS_PATH])}
    sweep = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(spec), "--output", str(out)],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for(what, timeout=240):
        deadline = time.monotonic() + timeout
        while not what():
            assert sweep.poll() is None or what(), sweep.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"waited {timeout} s"
            time.sleep(0.5)

    def job() -> dict:
        return next(iter(jobs_named(f"harness-{name}").values()), {})

    try:
        cell = None
        wait_for(lambda: (out / "cells").is_dir() and any((out / "cells").glob("*/checkpoints/epoch_*")))
        (cell,) = (out / "cells").iterdir()
        first = job()
        assert first["NodeList"] == "local[1-2]" and first["NumNodes"] == "2", first
        subprocess.run(["scontrol", "requeue", first["JobId"]], check=True)
        wait_for(lambda: job().get("Restarts") == "1" and job().get("JobState") == "PENDING"
                 and read_lock(cell) is None)
        time.sleep(2)  # see test_sbatch_preempted_checkpoints_requeues_itself_and_resumes
        subprocess.run(["scontrol", "update", f"JobId={first['JobId']}", "StartTime=now"], check=True)
        _, stderr = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        for job_id in jobs_named(f"harness-{name}"):
            subprocess.run(["scancel", job_id])
    assert sweep.returncode == 0, stderr[-3000:]
    (row,) = rows(out)
    logs = (cell / "stderr.log").read_text(errors="replace")
    assert row["status"] == "completed", (row, logs[-3000:])
    assert row["attempts"] == 2 and row["nodes"] == 2 and row["world_size"] == 2
    # The first attempt ended at a step boundary with every rank's state saved (a second
    # SIGTERM would have stopped it without), and the second took it up from there.
    assert "interrupted by SIGTERM; the state is checkpointed" in logs and "second" not in logs, logs[-3000:]
    report = yaml.safe_load((cell / "report.yaml").read_text())
    assert report["status"] == "completed" and report["resumed_from_epoch"] >= 1
    assert sorted(r["node_rank"] for r in report["per_rank"]) == [0, 1]
    assert (cell / "stderr.node1.log").is_file()
