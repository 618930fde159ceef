"""The sweep's executor and slurm blocks, launch.* axes and the scheduler's answers: no Slurm needed.

The runs against a real Slurm are in test_slurm.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.sweep.slurm_config import LaunchSpec, SlurmOptions, cell_resources, parse_slurm, split_axes
from harness.sweep.slurm_queue import parse_sacct, parse_scontrol
from support.paths import REPO

TINY = {"data.subset": 240, "train.epochs": 1, "measure.warmup_steps": 1, "loader.batch_size": 16,
        "output.progress": False, "output.checkpoint_every_epoch": False, "output.save_model": False,
        "measure.measure_peak": False, "runtime.device": "cpu"}


def write_spec(tmp_path: Path, **spec) -> Path:
    body = {"base": {"config": str(REPO / "configs/digits_mlp.yaml"), "overrides": TINY},
            "cells": [{"optim.lr": 0.01}], **spec}
    path = tmp_path / "sweep.in.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.mark.parametrize("spec,named", [
    ({"executor": "kubernetes"}, "executor: expected one of local, slurm"),
    ({"slurm": {"partiton": "gpu"}}, "slurm.partiton: unknown key"),
    ({"slurm": {"cpus_per_task": 0}}, "slurm.cpus_per_task: expected an integer >= 1"),
    ({"slurm": {"mem_gb": "lots"}}, "slurm.mem_gb: expected a finite number > 0"),
    ({"slurm": {"nodes": 2, "tasks_per_node": 2}}, "slurm.tasks_per_node: a cell on 2 nodes runs one launcher"),
    ({"cells": [{"slurm.nodes": 2, "launch.mode": "cpu"}]}, "launch.mode: a cell on 2 nodes runs one process group"),
    ({"cells": [{"slurm.nodes": 2}]}, "slurm.nodes: 2 nodes need --executor slurm"),
    ({"slurm": {"additional_parameters": {"constraint": [1]}}}, "slurm.additional_parameters.constraint"),
    ({"slurm": {"array_parallelism": True}}, "slurm.array_parallelism: expected an integer >= 1"),
    ({"cells": [{"launch.nproc": 2, "launch.mode": "cpu"}]}, "launch.nproc: mode cpu runs one process"),
    ({"cells": [{"launch.procs": 2}]}, "launch.procs: unknown key"),
    ({"cells": [{"slurm.gpus": 1}]}, "slurm.gpus: unknown key"),
    ({"executor": "slurm", "oom_backoff": True}, "oom_backoff: only with executor local"),
])
def test_bad_executor_input_is_one_line_naming_the_key(tmp_path, capsys, spec, named):
    out = tmp_path / "out"
    assert main(["sweep", str(write_spec(tmp_path, **spec)), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not (out / "sweep.yaml").exists()


def test_slurm_without_submitit_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    out = tmp_path / "out"
    assert main(["sweep", str(write_spec(tmp_path)), "--output", str(out), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "harness[slurm]" in err and len(err.strip().splitlines()) == 1


def test_launch_and_slurm_axes_are_not_config_keys():
    overrides, launch, own = split_axes({"optim.lr": 0.1, "launch.nproc": 2, "slurm.mem_gb": 4}, "cell x")
    assert overrides == {"optim.lr": 0.1}
    assert launch == LaunchSpec("ddp", 2)
    assert own == {"mem_gb": 4.0}
    # One process with no mode is a plain `harness run`.
    assert split_axes({"launch.nproc": 1}, "c")[1] == LaunchSpec(None, 1)


def test_a_cell_on_two_nodes_is_one_launcher_a_node_towards_node_0():
    from harness.sweep.slurm_config import SlurmResources
    from harness.launch.slurm_job import log_names, node_command
    from harness.sweep.command import cell_command
    from harness.sweep.spec import SweepSpec

    # Nodes from the sweep's block or the cell's own axis; one process per node by default.
    _, launch, _ = split_axes({"optim.lr": 0.1}, "c", SlurmResources(nodes=2))
    assert launch == LaunchSpec("ddp", 1, 2) and launch.nnodes * launch.nproc == 2
    _, launch, own = split_axes({"slurm.nodes": 2, "launch.nproc": 2}, "c")
    assert launch == LaunchSpec("ddp", 2, 2) and launch.nnodes * launch.nproc == 4
    res = cell_resources(SlurmOptions(), own, launch)
    assert (res.nodes, res.tasks_per_node, res.cpus_per_task) == (2, 1, 2)

    spec = SweepSpec(name="n", source=Path("s.yaml"), base_config=Path("c.yaml"), base_overrides={},
                     time_limit_s=60, oom_backoff=False, raw={})
    cmd = cell_command(spec, ["optim.lr=0.1"], Path("cells/x"), launch, python="py")
    assert cmd == ["py", "-m", "harness", "launch", "--mode", "ddp", "--nproc", "2", "--nnodes", "2",
                   "c.yaml", "optim.lr=0.1", "--output", "cells/x", "--overwrite"]
    env = {"SLURM_NODEID": "1", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.7", "SLURM_JOB_ID": "20123"}
    on_node_1 = node_command(cmd, env)
    assert on_node_1[8:16] == ["--nnodes", "2", "--node-rank", "1", "--main-address", "10.0.0.7",
                               "--main-port", "20123"]
    assert node_command(cmd, {**env, "SLURM_NODEID": "0"})[8:16] == [*on_node_1[8:11], "0", *on_node_1[12:16]]
    with pytest.raises(RuntimeError, match="SLURM_LAUNCH_NODE_IPADDR"):
        node_command(cmd, {"SLURM_NODEID": "0", "SLURM_JOB_ID": "1"})
    assert log_names(0) == ("stdout.log", "stderr.log") and log_names(1) == ("stdout.node1.log", "stderr.node1.log")


def test_a_multi_process_cell_asks_a_cpu_per_process_unless_told():
    options = parse_slurm({"partition": "cpu", "time_limit_s": 120})
    assert cell_resources(options, {}, LaunchSpec("ddp", 4)).cpus_per_task == 4
    assert cell_resources(options, {"cpus_per_task": 16}, LaunchSpec("ddp", 4)).cpus_per_task == 16
    assert cell_resources(options, {}, None).cpus_per_task is None
    assert cell_resources(SlurmOptions(), {"gpus_per_node": 4}, LaunchSpec("ddp", 4)).cpus_per_task is None
    assert cell_resources(options, {}, None).partition == "cpu"


def test_scheduler_answers_are_read_per_array_task():
    scontrol = (  # recorded from Slurm 22.05: two tasks done, the pending rest in one record
        "JobId=12 JobName=harness-s ArrayJobId=10 ArrayTaskId=1 JobState=TIMEOUT Reason=TimeLimit\n"
        "JobId=11 JobName=harness-s ArrayJobId=10 ArrayTaskId=0 JobState=COMPLETED Reason=None\n"
        "JobId=10 JobName=harness-s ArrayJobId=10 ArrayTaskId=2-3%2 JobState=PENDING Reason=JobArrayTaskLimit\n"
        "JobId=7 JobName=wrap JobState=RUNNING Reason=None\n")
    assert parse_scontrol(scontrol) == {"10_0": "COMPLETED", "10_1": "TIMEOUT", "10_2": "PENDING",
                                        "10_3": "PENDING", "7": "RUNNING"}
    sacct = "10_0|COMPLETED\n10_1|CANCELLED by 0\n10_[2-3%2]|PENDING\n9|NODE_FAIL\n"
    assert parse_sacct(sacct) == {"10_0": "COMPLETED", "10_1": "CANCELLED", "10_2": "PENDING",
                                  "10_3": "PENDING", "9": "NODE_FAIL"}


@pytest.mark.slow
@pytest.mark.distributed
def test_a_launch_nproc_axis_runs_one_and_two_processes_and_rows_say_so(tmp_path):
    """Weak scaling as a sweep: the same per-device batch on 1 and on 2 gloo processes."""
    spec = write_spec(tmp_path, cells=None, grid={"launch.nproc": [1, 2]}, time_limit_s=300)
    body = yaml.safe_load(spec.read_text())
    del body["cells"]
    spec.write_text(yaml.safe_dump(body, sort_keys=False))
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--output", str(out)]) == 0
    rows = yaml.safe_load((out / "sweep.yaml").read_text())["cells"]
    assert [r["status"] for r in rows] == ["completed", "completed"], rows
    assert [(r["nproc"], r["world_size"]) for r in rows] == [(1, 1), (2, 2)]
    assert [(r["per_device_batch_size"], r["global_batch_size"]) for r in rows] == [(16, 16), (16, 32)]
    assert "harness launch" not in (out / "cells" / rows[0]["id"] / "command.txt").read_text()
    assert " launch --mode ddp --nproc 2 " in (out / "cells" / rows[1]["id"] / "command.txt").read_text()


def test_a_job_that_cannot_write_the_sweep_folder_says_it_must_be_shared(tmp_path):
    from harness.launch.slurm_job import run_cell_job

    result = run_cell_job(["true"], "/dev/null/cells/x")  # a folder no node could create
    assert result["exit_code"] is None
    assert "not writable from the job" in result["error"] and "the nodes share" in result["error"]


def test_a_requeued_cell_resumes_from_its_folder(tmp_path, monkeypatch):
    from harness.launch.slurm_job import _resumable, resume_command

    cmd = ["python", "-m", "harness", "run", "c.yaml", "a=1", "--output", str(tmp_path), "--overwrite"]
    assert resume_command(cmd, tmp_path) == ["python", "-m", "harness", "run", "c.yaml", "a=1", "--resume",
                                             str(tmp_path)]  # --overwrite would delete what it resumes
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert not _resumable(tmp_path)  # nothing ran there yet: start afresh
    (tmp_path / "config.yaml").write_text("{}")
    assert _resumable(tmp_path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert not _resumable(tmp_path)


@pytest.mark.parametrize("state", ["TIMEOUT", "PREEMPTED", "NODE_FAIL"])
def test_a_job_the_scheduler_killed_is_a_failed_row_with_that_reason(tmp_path, state):
    from harness.sweep.spec import load_sweep
    from harness.sweep.slurm import finished_row

    cell = load_sweep(write_spec(tmp_path)).cells[0]
    (tmp_path / "cells" / cell.id).mkdir(parents=True)
    row = {"id": cell.id, "job_id": "41_0", "status": "running", "resources": {"time_limit_min": 5}}
    done = finished_row(tmp_path, cell, row, state)
    assert done["status"] == "failed" and done["scheduler_state"] == state and done["job_id"] == "41_0"
    assert done["error"].startswith(f"{state}: the "), done["error"]


def test_slurm_without_srun_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import submitit.slurm.slurm as submitit_slurm

    monkeypatch.setattr(submitit_slurm.shutil, "which", lambda name: None)
    out = tmp_path / "out"
    assert main(["sweep", str(write_spec(tmp_path)), "--output", str(out), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: executor slurm:") and "srun" in err, err
    assert not out.exists()


def test_a_cell_job_uses_the_cpus_slurm_gave_it_shared_among_its_processes():
    from harness.launch.slurm_job import thread_env

    run = ["python", "-m", "harness", "run", "c.yaml", "--output", "x"]
    launch = ["python", "-m", "harness", "launch", "--mode", "ddp", "--nproc", "2", "c.yaml", "--output", "x"]
    assert thread_env(run, {"SLURM_CPUS_ON_NODE": "4"})["OMP_NUM_THREADS"] == "4"
    assert thread_env(launch, {"SLURM_CPUS_ON_NODE": "4"})["OMP_NUM_THREADS"] == "2"
    assert thread_env(launch, {"SLURM_CPUS_ON_NODE": "1"})["OMP_NUM_THREADS"] == "1"
    assert thread_env(run, {"SLURM_CPUS_ON_NODE": "4", "OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"
    assert "OMP_NUM_THREADS" not in thread_env(run, {})  # outside Slurm: torch's own default


# --- a controller that does not answer ----------------------------------------------------

FAKE_SLURM = {  # what each fake command does: the controller is down, or hangs
    "down": "echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2; "
            "case \"$1\" in ping) printf 'Slurmctld(primary) at ctl is DOWN\\n****\\n** RESTORE SLURMCTLD "
            "DAEMON TO SERVICE **\\n****\\n';; esac; exit 1",  # what Slurm 22.05 prints
    "hangs": "exec sleep 60",
}


def fake_slurm(tmp_path: Path, monkeypatch, how: str) -> None:
    """scontrol, sacct and squeue on PATH that fail or hang as an unreachable controller does."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name in ("scontrol", "sacct", "squeue", "sbatch"):
        (bin_dir / name).write_text(f"#!/bin/sh\n{FAKE_SLURM[how]}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def running_sweep(tmp_path: Path) -> tuple[Path, Path]:
    """A Slurm sweep as a stopped watcher left it: one cell running as job 41_0, one queued as 41_1."""
    from harness.sweep.file import write_sweep
    from harness.sweep.spec import load_sweep_apart

    path = write_spec(tmp_path, executor="slurm", cells=[{"optim.lr": 0.01}, {"optim.lr": 0.02}])
    spec = load_sweep_apart(path)
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"id": c.id, "config_hash": c.config_hash, "axes": c.axes, "status": status, "job_id": f"41_{i}",
             "scheduler_state": status.upper() if status == "running" else "PENDING"}
            for i, (c, status) in enumerate(zip(spec.cells, ("running", "queued")))]
    write_sweep(out, spec, rows, "2026-01-01T00:00:00+00:00")
    return path, out


@pytest.mark.parametrize("how", ["down", "hangs"])
def test_resume_where_slurm_does_not_answer_says_so_at_once_and_changes_no_row(tmp_path, capsys, monkeypatch, how):
    """Before: it polled 300 s, then rewrote both rows failed/UNKNOWN and exited 0, so
    --retry-failed would have submitted both jobs a second time."""
    import time

    from harness.sweep import slurm_queue

    from harness.sweep import slurm as sweep_slurm

    path, out = running_sweep(tmp_path)
    before = (out / "sweep.yaml").read_bytes()
    fake_slurm(tmp_path, monkeypatch, how)
    monkeypatch.setattr(slurm_queue, "PING_TIMEOUT_S", 1.0)
    monkeypatch.setattr(slurm_queue, "TIMEOUT_S", 1.0)
    monkeypatch.setattr(sweep_slurm, "UNKNOWN_GRACE_S", 0.5)  # the old path would end in seconds, not pass
    monkeypatch.setattr(sweep_slurm, "POLL_S", 0.1)
    t0 = time.monotonic()
    code = main(["sweep", str(path), "--output", str(out), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and "slurm: the controller does not answer" in err, err
    assert ("is DOWN" if how == "down" else "no answer in 1 s") in err, err
    assert "--resume" in err
    assert (out / "sweep.yaml").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["sweep.yaml"]  # nor was the lock left behind
    assert time.monotonic() - t0 < 60  # at once: one bounded ping, never the 300 s of waiting


def test_a_controller_that_stops_answering_mid_sweep_changes_no_row(tmp_path, monkeypatch):
    from harness.sweep import slurm_queue
    from harness.sweep import slurm as sweep_slurm
    from harness.sweep.file import read_rows
    from harness.sweep.spec import load_sweep_apart

    path, out = running_sweep(tmp_path)
    spec = load_sweep_apart(path)
    rows = list(read_rows(out).values())
    before = (out / "sweep.yaml").read_bytes()
    fake_slurm(tmp_path, monkeypatch, "down")
    monkeypatch.setattr(sweep_slurm, "SILENCE_GRACE_S", 0.3)
    monkeypatch.setattr(sweep_slurm, "UNKNOWN_GRACE_S", 0.0)
    with pytest.raises(slurm_queue.Unreachable, match="is DOWN"):
        sweep_slurm.watch(out, spec, rows, "2026-01-01T00:00:00+00:00", {"41_0": 0, "41_1": 1}, poll_s=0.05)
    assert [r["status"] for r in rows] == ["running", "queued"]
    assert (out / "sweep.yaml").read_bytes() == before


def test_a_controller_that_answers_pings_up(tmp_path, monkeypatch):
    from harness.sweep.slurm_queue import controller_silence

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'Slurmctld(primary) at ctl is UP'\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert controller_silence() is None
    (bin_dir / "scontrol").unlink()
    assert controller_silence() == "scontrol is not on PATH"
