"""Resuming: a completed run, another recipe, a damaged checkpoint, after SIGKILL at random instants.

The kill battery (marked slow) kills a real run with SIGKILL at 10 random instants and
resumes it each time; it ends where an uninterrupted run does.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.files.lock import LOCK_FILE
from harness.report.io import load_report
from harness.run import resume
from support.cli import run_in_process
from support.folders import copy_of, one_error_line, snapshot
from support.paths import REPO, TESTS_PATH
from support.recipes import CONFIG, SAFE_RECIPE

run = partial(run_in_process, SAFE_RECIPE)


# --- 1. resuming a completed run ------------------------------------------------------

def test_resume_of_a_completed_run_changes_nothing(done_run, tmp_path, capsys):
    out = copy_of(done_run, tmp_path)
    before = snapshot(out)
    capsys.readouterr()
    assert run(out, resume=True) == 0
    err = capsys.readouterr().err
    assert "already completed" in err and "nothing rewritten" in err and "Traceback" not in err
    assert snapshot(out) == before


@pytest.mark.slow
def test_resume_of_a_completed_run_with_more_epochs_trains_on(done_run, tmp_path):
    out = copy_of(done_run, tmp_path)
    (out / ".report.yaml.dead0001.tmp").write_text("left by a SIGKILL")
    (out / "checkpoints" / ".tmp-epoch_0003").mkdir()
    assert run(out, "train.epochs=3", resume=True) == 0
    report = load_report(out)
    assert report["resumed_from_epoch"] == 2
    assert [d["epoch"] for d in report["accuracy"]["dev"]] == [1, 2, 3]
    # timing: total covers every process; process_wall_s only this one
    assert report["timing"]["total_wall_s"] > report["timing"]["process_wall_s"]
    assert report["timing"]["total_wall_s"] >= report["timing"]["train_wall_s"]
    # what a killed writer left is cleaned at the next start
    assert not (out / ".report.yaml.dead0001.tmp").exists()
    assert not (out / "checkpoints" / ".tmp-epoch_0003").exists()
    assert not (out / LOCK_FILE).exists()


# --- 2. resuming with another recipe -----------------------------------------------------

@pytest.mark.parametrize("change, named", [
    ("loader.batch_size=64", "loader.batch_size (32 -> 64)"),
    ("seed=7", "seed (0 -> 7)"),
    ("model.name=mlp", "model.name (cnn -> mlp)"),
    ("train.epochs=1", "train.epochs (2 -> 1; 2 epochs are already done)"),
    ("optim.scheduler.name=cosine", "optim.scheduler.name (none -> cosine)"),
])
def test_resume_with_another_recipe_is_refused(done_run, tmp_path, capsys, change, named):
    out = copy_of(done_run, tmp_path)
    before = snapshot(out)
    capsys.readouterr()
    assert run(out, change, resume=True) == 2
    line = one_error_line(capsys.readouterr().err)
    assert named in line
    assert snapshot(out) == before


def test_recipe_changes_allow_only_what_cannot_change_the_computation():
    saved = {"seed": 0, "train": {"epochs": 2, "max_steps": None}, "optim": {"scheduler": {"name": "none"}},
             "output": {"dir": "a", "progress": False}, "measure": {"warmup_steps": 10}, "name": "x"}
    same = {**saved, "output": {"dir": "b", "progress": True}, "measure": {"warmup_steps": 1}, "name": "y",
            "train": {"epochs": 5, "max_steps": 100}}
    assert resume.recipe_changes(saved, same, epochs_done=2) == []
    cosine = {**same, "optim": {"scheduler": {"name": "cosine"}}}
    refused = resume.recipe_changes({**saved, "optim": {"scheduler": {"name": "cosine"}}}, cosine, 2)
    assert len(refused) == 1 and refused[0].startswith("train.epochs (2 -> 5; optim.scheduler.name cosine")


# --- 6. a damaged checkpoint -------------------------------------------------------------

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, what", [
    ("model.safetensors", "truncated"),
    ("optimizer.bin", "truncated or damaged"),
    ("trainer_state.yaml", "not a trainer state"),
    # every file the harness wrote is read back with the depth cap, the trainer state too
    ("trainer_state.yaml:deep", "not a trainer state (nested more than"),
    ("random_states_0.pkl", "empty"),
])
def test_a_damaged_checkpoint_is_named_and_an_older_one_offered(done_run, tmp_path, capsys, damage, what):
    out = copy_of(done_run, tmp_path)
    (out / "report.yaml").unlink()  # as after a SIGKILL: not a completed run
    name, _, variant = damage.partition(":")
    path = out / "checkpoints" / "epoch_0002" / name
    if variant == "deep":
        path.write_text("[" * 5000 + "]" * 5000 + "\n")
    elif name == "trainer_state.yaml":
        path.write_text("- a list\n")
    elif damage.endswith(".pkl"):
        path.write_bytes(b"")
    else:
        _truncate(path)
    before = snapshot(out)
    capsys.readouterr()
    assert run(out, resume=True) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{path}: {what}" in line
    assert "--resume-from epoch_0001" in line
    assert snapshot(out) == before


@pytest.mark.slow
def test_resume_from_an_older_checkpoint(done_run, tmp_path):
    out = copy_of(done_run, tmp_path)
    (out / "report.yaml").unlink()
    _truncate(out / "checkpoints" / "epoch_0002" / "model.safetensors")
    assert main(["run", "--resume", str(out), "--resume-from", "epoch_0001"]) == 0
    report = load_report(out)
    assert report["resumed_from_epoch"] == 1 and report["status"] == "completed"
    w = torch.load(out / "model.pt", weights_only=True)
    ref = torch.load(done_run / "model.pt", weights_only=True)
    assert all(torch.equal(w[k], ref[k]) for k in ref)


def test_resume_from_needs_a_checkpoint_of_the_run(done_run, tmp_path, capsys):
    out = copy_of(done_run, tmp_path)
    assert main(["run", "--resume", str(out), "--resume-from", "epoch_0009"]) == 2
    assert "kept: epoch_0001, epoch_0002" in one_error_line(capsys.readouterr().err)
    # --output of its own: the refusal must not hang on whatever the config's output.dir holds
    assert main(["run", CONFIG, "--resume-from", "epoch_0001", "--output", str(tmp_path / "fresh")]) == 2
    assert "needs --resume" in one_error_line(capsys.readouterr().err)


# --- the kill battery ----------------------------------------------------------------------

KILLS = 10


@pytest.mark.slow
def test_sigkill_at_random_instants_then_resume_ends_with_the_same_weights(tmp_path):
    """One run killed at 10 random instants over its life (setup, steps, evaluation,
    checkpoints, the report), resumed after each; it ends where an uninterrupted one does."""
    common = [*SAFE_RECIPE, "train.epochs=4", "model.name=fixtures.custom_models:Slow", "model.kwargs={sleep_ms: 15}"]
    # One torch thread (TinyNet's steps are too small to share; two threads on a busy 2-core
    # machine spin): a shorter life for the reference run, and so for the ten kills it scales.
    env = {**os.environ, "PYTHONPATH": TESTS_PATH, "OMP_NUM_THREADS": "1"}
    whole, part = tmp_path / "whole", tmp_path / "part"
    ref = subprocess.run([sys.executable, "-m", "harness", "run", *common, "--output", str(whole)],
                         cwd=REPO, capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr
    span_s = load_report(whole)["timing"]["process_wall_s"]
    rng = random.Random(20261125)
    outcomes = []
    def next_args():
        # A kill between taking the lock and writing config.yaml leaves a folder holding only
        # a stale lock: no run to resume there, so the user starts it again (a lock alone is no run).
        return ["--resume", str(part)] if (part / "config.yaml").exists() else [*common, "--output", str(part)]

    for k in range(KILLS):
        args = next_args()
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Instants over the process's life: import and setup, then every phase of training.
        time.sleep(rng.uniform(0.5, span_s * 1.2))
        proc.kill()
        err = proc.communicate(timeout=60)[1]
        outcomes.append((proc.returncode, round(time.monotonic() - t0, 2)))
        assert proc.returncode in (-signal.SIGKILL, 0), err
        if (part / "report.yaml").exists():
            load_report(part)  # never torn
        for folder in (part / "checkpoints").glob("epoch_*"):
            assert resume.check_checkpoint(folder) is None, folder  # never a half checkpoint
    args = next_args()
    done = subprocess.run([sys.executable, "-m", "harness", "run", *args], cwd=REPO, capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, (outcomes, done.stderr)
    assert sum(code == -signal.SIGKILL for code, _ in outcomes) >= KILLS // 2, outcomes
    a, b = load_report(whole), load_report(part)
    assert b["status"] == "completed"
    assert a["accuracy"]["dev"] == b["accuracy"]["dev"]
    wa = torch.load(whole / "model.pt", weights_only=True)
    wb = torch.load(part / "model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# --- 13. launch ----------------------------------------------------------------------------

def test_launch_keeps_resume_and_its_value(done_run, tmp_path, capsys):
    out = copy_of(done_run, tmp_path)
    assert main(["launch", "--mode", "ddp", "--nproc", "2", "--resume", str(out), "--dry-run"]) == 0
    cmd = capsys.readouterr().out.split()
    run_args = cmd[cmd.index("harness") + 2:]
    assert run_args[-2:] == ["--resume", str(out)]
    assert str(out) not in run_args[:-1]  # not taken for the config


# --- 12. mid-epoch resume with compile -------------------------------------------------------

def test_skipping_batches_keeps_the_compile_wrapper_and_device_placement():
    from accelerate import Accelerator
    from accelerate.data_loader import DataLoaderShard
    from torch.utils.data import DataLoader, TensorDataset

    from harness.run.accel import DynamicBatchDim
    from harness.run.fit import skip_in_epoch

    acc = Accelerator(cpu=True)
    data = TensorDataset(torch.arange(40, dtype=torch.float32).reshape(20, 2), torch.zeros(20, dtype=torch.long))
    loader = DynamicBatchDim(acc.prepare(DataLoader(data, batch_size=6)))
    skipped = skip_in_epoch(loader, 2, acc)
    assert isinstance(skipped, DynamicBatchDim) and isinstance(skipped.loader, DataLoaderShard)
    batches = list(skipped)
    assert [len(x) for x, _ in batches] == [6, 2]  # batches 3 and 4 of 4
    assert torch.equal(batches[0][0][0], torch.tensor([24.0, 25.0]))
    assert all(x.device == acc.device for x, _ in batches)
    # maybe_mark_dynamic(inputs, 0) ran on every batch
    assert all(0 in getattr(x, "_dynamo_weak_dynamic_indices", ()) for x, _ in batches)
