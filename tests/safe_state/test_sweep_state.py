"""A sweep's state: resume reruns what changed, refuses beside a live orphan, and SIGTERM records
the running cell."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.files.lock import RunLock
from harness.report.io import load_report
from support.folders import one_error_line
from support.paths import REPO, TESTS_PATH
from support.processes import processes_mentioning
from support.recipes import CONFIG


# --- 9, 10. sweeps: signals, orphans, changed recipes ---------------------------------------

def _sweep_file(tmp_path: Path, seed: int) -> Path:
    import yaml

    spec = {"base": {"config": str(REPO / CONFIG), "overrides": {"seed": seed, "train.epochs": 1}},
            "cells": [{"loader.batch_size": 32}, {"loader.batch_size": 64}], "time_limit_s": 60}
    path = tmp_path / "sweep.in.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def fake_cells(monkeypatch):
    """Cells that 'run' instantly: the sweep's bookkeeping is under test, not training."""
    from harness.sweep import command as sweep

    ran = []

    def fake(spec, cell, cell_dir):
        ran.append(cell.id)
        return {"id": cell.id, "config_hash": cell.config_hash, "axes": cell.axes,
                "status": "completed", "error": None}

    monkeypatch.setattr(sweep, "run_with_backoff", fake)
    return ran


def test_sweep_resume_reruns_a_cell_whose_resolved_config_changed(tmp_path, fake_cells):
    out = tmp_path / "out"
    assert main(["sweep", str(_sweep_file(tmp_path, seed=0)), "--output", str(out)]) == 0
    assert len(fake_cells) == 2
    assert main(["sweep", str(_sweep_file(tmp_path, seed=0)), "--output", str(out), "--resume"]) == 0
    assert len(fake_cells) == 2  # nothing changed: nothing re-run
    assert main(["sweep", str(_sweep_file(tmp_path, seed=1)), "--output", str(out), "--resume"]) == 0
    assert len(fake_cells) == 4  # same axes, another base: both re-run


def test_sweep_resume_refuses_to_run_beside_a_live_orphan(tmp_path, fake_cells, capsys):
    from harness.report.io import dump

    out = tmp_path / "out"
    path = _sweep_file(tmp_path, seed=0)
    assert main(["sweep", str(path), "--output", str(out)]) == 0
    body = __import__("yaml").safe_load((out / "sweep.yaml").read_text())
    body["cells"] = body["cells"][:1]  # as if the sweep was killed during the second cell
    (out / "sweep.yaml").write_text(dump(body))
    orphan = out / "cells" / body_id(path, 1)
    with RunLock(orphan):  # the orphan: a live process holding the cell's folder
        capsys.readouterr()
        assert main(["sweep", str(path), "--output", str(out), "--resume"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"{orphan} is still being run by pid {os.getpid()}" in line
    assert len(fake_cells) == 2


def body_id(path: Path, index: int) -> str:
    from harness.sweep.spec import load_sweep

    return load_sweep(str(path)).cells[index].id


def test_sigterm_to_a_sweep_records_the_running_cell(tmp_path, monkeypatch, capsys):
    from harness.sweep import command as sweep

    def signalled(spec, overrides, cell_dir, launch=None, config_file=None):
        cell_dir.mkdir(parents=True, exist_ok=True)
        raise sweep.SweepStopped(signal.SIGTERM)  # as the handler does, the cell stopped with it

    monkeypatch.setattr(sweep, "run_cell", signalled)
    out = tmp_path / "out"
    assert main(["sweep", str(_sweep_file(tmp_path, seed=0)), "--output", str(out)]) == 143
    assert "interrupted (stopped by SIGTERM)" in capsys.readouterr().err
    rows = __import__("yaml").safe_load((out / "sweep.yaml").read_text())["cells"]
    assert [r["status"] for r in rows] == ["interrupted", "pending"]


@pytest.mark.slow
def test_sigterm_to_a_real_sweep_stops_and_records_its_cell(tmp_path):
    import yaml

    spec = {"base": {"config": str(REPO / CONFIG),
                     "overrides": {"data.subset": 360, "train.epochs": 30, "measure.warmup_steps": 1,
                                   "output.progress": False, "model.name": "fixtures.custom_models:Slow",
                                   "model.kwargs": {"sleep_ms": 20}}},
            "cells": [{"loader.batch_size": 32}, {"loader.batch_size": 64}], "time_limit_s": 300}
    path = tmp_path / "sweep.in.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": TESTS_PATH}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(path), "--output", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("cells/*/checkpoints/epoch_0001")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the first cell never reached epoch 1"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-3000:]
    rows = yaml.safe_load((out / "sweep.yaml").read_text())["cells"]
    assert [r["status"] for r in rows] == ["interrupted", "pending"]
    cell = out / "cells" / rows[0]["id"]
    assert load_report(cell)["status"] == "interrupted"
    assert not processes_mentioning(str(cell))  # the cell did not run on
