"""harness sweep: cells in their own processes, failures as rows, resume; the device-resident loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from harness.cli import main
from harness.errors import BadInput
from harness.data.loaders import LoaderConfig, build_loaders
from harness.data.resident import DeviceResidentLoader
from support.paths import REPO, TESTS

TINY = {"data.subset": 120, "train.epochs": 1, "measure.warmup_steps": 1, "loader.batch_size": 32,
        "output.progress": False, "output.checkpoint_every_epoch": False, "output.save_model": False}


def write_sweep(tmp_path: Path, cells: list[dict], **extra) -> Path:
    spec = {"base": {"config": str(REPO / "configs/digits_cnn.yaml"), "overrides": TINY},
            "cells": cells, "time_limit_s": 120, **extra}
    path = tmp_path / "sweep.in.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def read_rows(out: Path) -> list[dict]:
    return yaml.safe_load((out / "sweep.yaml").read_text())["cells"]


@pytest.fixture
def cells_import_tests(monkeypatch):
    """A cell's process imports test models from tests/ (model.name: fixtures.sweep_models:...)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


# --- validation: nothing runs -------------------------------------------------------

def test_unknown_key_is_refused_in_one_line(tmp_path, capsys):
    path = write_sweep(tmp_path, [{"loader.batch_size": 16}], retries=3)
    assert main(["sweep", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "retries: unknown key" in err
    assert not (tmp_path / "out").exists()


def test_a_bad_cell_config_is_refused_before_any_cell_runs(tmp_path, capsys):
    path = write_sweep(tmp_path, [{"loader.batch_size": 16}, {"loader.batch_size": -4}])
    assert main(["sweep", str(path), "--output", str(tmp_path / "out")]) == 2
    assert "loader.batch_size" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_grid_is_a_cartesian_product_plus_extra_cells(tmp_path):
    from harness.sweep.spec import load_sweep

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "base": str(REPO / "configs/digits_cnn.yaml"),
        "grid": {"loader.batch_size": [16, 32], "loader.num_workers": [0, 1]},
        "extra_cells": [{"loader.kind": "device_resident"}],
    }))
    spec = load_sweep(path)
    assert [c.axes for c in spec.cells][:4] == [
        {"loader.batch_size": b, "loader.num_workers": w} for b in (16, 32) for w in (0, 1)]
    assert spec.cells[4].config.loader.kind == "device_resident"
    assert len({c.id for c in spec.cells}) == 5


# --- running: end to end ----------------------------------------------------------------

@pytest.mark.slow
def test_a_failing_cell_is_a_row_and_the_sweep_goes_on_then_resumes(tmp_path, capsys, cells_import_tests):
    path = write_sweep(tmp_path, [{"model.name": "fixtures.sweep_models:Boom"}, {"loader.batch_size": 32}])
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--output", str(out)]) == 0
    failed, ok = read_rows(out)
    assert failed["status"] == "failed" and "Boom: this model cannot be built" in failed["error"]
    assert failed["seconds"] > 0
    assert ok["status"] == "completed" and ok["error"] is None
    assert ok["report"] == f"cells/{ok['id']}/report.yaml" and (out / ok["report"]).is_file()
    assert ok["samples_per_s"] > 0 and ok["peak_rss_mb"] > 0 and 0 <= ok["test_accuracy"] <= 1
    assert ok["requested_batch_size"] == ok["actual_batch_size"] == 32
    table = capsys.readouterr().out
    assert "best throughput" in table and "failed cells           1 of 2" in table

    # --resume keeps completed and failed rows; --retry-failed reruns only the failed one.
    done_mtime = (out / ok["report"]).stat().st_mtime_ns
    failed_log = out / "cells" / failed["id"] / "stderr.log"
    failed_mtime = failed_log.stat().st_mtime_ns
    assert main(["sweep", str(path), "--output", str(out), "--resume"]) == 0
    assert failed_log.stat().st_mtime_ns == failed_mtime
    assert read_rows(out) == [failed, ok]
    assert main(["sweep", str(path), "--output", str(out), "--resume", "--retry-failed"]) == 0
    again, same = read_rows(out)
    assert again["status"] == "failed" and same == ok
    assert failed_log.stat().st_mtime_ns > failed_mtime
    assert (out / ok["report"]).stat().st_mtime_ns == done_mtime


@pytest.mark.slow
def test_resume_after_an_interrupted_sweep_runs_only_the_missing_cell(tmp_path):
    path = write_sweep(tmp_path, [{"loader.batch_size": 32}, {"loader.kind": "device_resident"}])
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--output", str(out)]) == 0
    first, second = read_rows(out)
    assert second["status"] == "completed" and second["requested_batch_size"] == 32
    # As if killed during the second cell: its row was never written.
    body = yaml.safe_load((out / "sweep.yaml").read_text())
    body["cells"] = [first]
    (out / "sweep.yaml").write_text(yaml.safe_dump(body))
    first_mtime = (out / first["report"]).stat().st_mtime_ns
    second_mtime = (out / second["report"]).stat().st_mtime_ns
    assert main(["sweep", str(path), "--output", str(out), "--resume"]) == 0
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [first["id"], second["id"]]
    assert all(r["status"] == "completed" for r in rows)
    assert (out / first["report"]).stat().st_mtime_ns == first_mtime
    assert (out / second["report"]).stat().st_mtime_ns > second_mtime


@pytest.mark.slow
def test_the_sweep_process_never_imports_torch(tmp_path):
    """Its cells' PSS is theirs alone: a parent holding libtorch would share those pages with
    each cell and lower the cell's PSS by its share (~150 MB measured). Validation still runs
    (a bad cell is refused in one line), in a forked child that exits."""
    import subprocess
    import sys

    probe = ("import sys; from harness.cli import main; code = main(sys.argv[1:]); "
             "print('torch imported:', 'torch' in sys.modules); sys.exit(code)")
    good = write_sweep(tmp_path, [{"loader.batch_size": 32}])
    proc = subprocess.run([sys.executable, "-c", probe, "sweep", str(good), "--output", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch imported: False" in proc.stdout
    (row,) = read_rows(tmp_path / "out")
    assert row["status"] == "completed" and row["config_hash"]

    (tmp_path / "bad").mkdir()
    bad = write_sweep(tmp_path / "bad", [{"loader.batch_size": 16}, {"loader.batch_size": -4}])
    proc = subprocess.run([sys.executable, "-c", probe, "sweep", str(bad), "--output", str(tmp_path / "out2")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "torch imported: False" in proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1 and "loader.batch_size" in proc.stderr
    assert not (tmp_path / "out2").exists()


def test_an_existing_sweep_is_not_overwritten_without_resume(tmp_path, capsys):
    path = write_sweep(tmp_path, [{"loader.batch_size": 32}])
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.yaml").write_text("schema_version: 1\ncells: []\n")
    assert main(["sweep", str(path), "--output", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.slow
def test_a_hung_cell_times_out_and_is_recorded(tmp_path):
    path = write_sweep(tmp_path, [{"loader.batch_size": 32}], time_limit_s=1)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--output", str(out)]) == 0
    (row,) = read_rows(out)
    assert row["status"] == "failed" and row["error"] == "timed out after 1 s"
    assert 1 <= row["seconds"] < 10


@pytest.mark.slow
def test_oom_backoff_halves_the_batch_until_it_fits(tmp_path, cells_import_tests):
    path = write_sweep(tmp_path, [{"model.name": "fixtures.sweep_models:OutOfMemoryAbove8"}], oom_backoff=True)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--output", str(out)]) == 0
    (row,) = read_rows(out)
    assert row["status"] == "completed", row["error"]
    assert (row["requested_batch_size"], row["actual_batch_size"], row["attempts"]) == (32, 8, 3)


# --- the device-resident loader ------------------------------------------------------

def _pair(n: int = 50, batch_size: int = 8, **cfg):
    xs = torch.arange(n, dtype=torch.float32).reshape(n, 1).repeat(1, 3)
    ds = TensorDataset(xs, torch.arange(n) % 5)
    dl = build_loaders(ds, ds, ds, LoaderConfig(batch_size=batch_size, **cfg), seed=3)
    dr = build_loaders(ds, ds, ds, LoaderConfig(batch_size=batch_size, kind="device_resident", **cfg), seed=3)
    return dl, dr


@pytest.mark.parametrize("drop_last", [False, True])
def test_device_resident_yields_the_dataloader_order_every_epoch(drop_last):
    dl, dr = _pair(drop_last=drop_last)
    assert isinstance(dr.train, DeviceResidentLoader) and len(dr.train) == len(dl.train)
    orders = []
    for epoch in (0, 1):
        dl.reseed(3, epoch)
        dr.reseed(3, epoch)
        a, b = list(dl.train), list(dr.train)
        assert len(a) == len(b)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        orders.append(torch.cat([x[:, 0] for x, _ in b]))
    assert not torch.equal(orders[0], orders[1])  # reseeding per epoch changes the order
    for a, b in zip(dl.test, dr.test):  # eval splits: in order, unshuffled
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_device_resident_digits_match_the_dataloader_without_augmentation():
    from harness.config.run import load_config
    from harness.data import build_data

    cfg = load_config(REPO / "configs/digits_cnn.yaml", ["data.subset=120", "data.transforms.augment.rotation_deg=0"])
    data = build_data(cfg.data, cfg.seed)
    dl = build_loaders(data.train, data.dev, data.test, cfg.loader, cfg.seed)
    cfg.loader.kind = "device_resident"
    dr = build_loaders(data.train, data.dev, data.test, cfg.loader, cfg.seed)
    for epoch in (0, 1):
        dl.reseed(cfg.seed, epoch)
        dr.reseed(cfg.seed, epoch)
        for (xa, ya), (xb, yb) in zip(dl.train, dr.train, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("n,world,drop_last", [(45, 2, False), (50, 3, False), (45, 2, True), (5, 2, False)])
def test_device_resident_shards_exactly_as_accelerate_does(n, world, drop_last):
    """Each rank's batches equal those Accelerate's own sharding of the same DataLoader gives it,
    padding included; the real samples over all ranks are the data set, once each."""
    from accelerate.data_loader import prepare_data_loader

    dl, dr = _pair(n=n, batch_size=4, drop_last=drop_last)
    whole = dr.train
    real = []
    for rank in range(world):
        shard = DeviceResidentLoader.__new__(DeviceResidentLoader)
        shard.__dict__.update(whole.__dict__)
        shard.shard(rank, world)
        ref = prepare_data_loader(dl.train, num_processes=world, process_index=rank, put_on_device=False)
        for epoch in (0, 1):
            dr.reseed(3, epoch)
            ours = [x[:, 0] for x, _ in shard]
            dl.reseed(3, epoch)
            theirs = [x[:, 0] for x, _ in ref]
            assert len(ours) == len(theirs) == len(shard) == len(ref)
            assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
        # What the meter counts as real: all but the last batch, and the last one's unpadded part.
        kept = []
        for x, y in shard:
            k = real_batch_size_at(shard, x, rank, world)
            kept.append(x[:k, 0])
        real.append(torch.cat(kept) if kept else torch.empty(0))
    seen = torch.cat(real)
    expected = n - n % (4 * world) if drop_last else n
    assert seen.numel() == expected and seen.unique().numel() == expected


def real_batch_size_at(loader, x, rank, world):
    """``real_batch_size`` as rank ``rank`` of ``world`` would compute it."""
    from unittest import mock

    from harness.measure import meter

    with mock.patch.object(meter.torch.distributed, "is_initialized", lambda: True), \
            mock.patch.object(meter.torch.distributed, "get_rank", lambda: rank), \
            mock.patch.object(meter.torch.distributed, "get_world_size", lambda: world):
        return meter.real_batch_size(loader, (x,))


@pytest.mark.parametrize("path", sorted((REPO / "configs/sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    from harness.sweep.spec import load_sweep

    spec = load_sweep(path)
    assert spec.cells and all(c.config.train.epochs > 0 for c in spec.cells)


def test_retry_failed_needs_resume(tmp_path, capsys):
    path = write_sweep(tmp_path, [{"loader.batch_size": 32}])
    assert main(["sweep", str(path), "--output", str(tmp_path / "out"), "--retry-failed"]) == 2
    assert "--retry-failed" in capsys.readouterr().err


@pytest.mark.slow
def test_device_resident_under_two_process_ddp(tmp_path):
    """Two real gloo ranks: each trains on its shard of the resident tensors; dev/test are gathered once."""
    from support.cli import run_cli
    from support.recipes import TINY
    from harness.report.io import load_report

    proc = run_cli("launch", "--mode", "ddp", "--nproc", "2", "configs/digits_cnn.yaml", *TINY,
                   "loader.kind=device_resident", "--output", str(tmp_path), timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = load_report(tmp_path)
    assert report["status"] == "completed"
    assert report["distributed"]["world_size"] == 2 and report["distributed"]["backend"] == "gloo"
    # 252 train samples, 32 per rank per step: 4 global steps an epoch, the last global
    # batch 60 real samples, 32 on rank 0 and 28 on rank 1 (Accelerate's padding tops rank
    # 1 up to 32 and is not counted). Two epochs less the 1 warm-up step of 32 a rank.
    assert [r["samples"] for r in report["per_rank"]] == [2 * 128 - 32, 2 * 124 - 32]
    assert report["throughput"]["measured_samples"] == 2 * 252 - 64
    assert report["accuracy"]["test_samples"] == report["data"]["sizes"]["test"]


# --- one sweep per folder; names and files that become paths ---------------------------

def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder``, with each file's bytes (links are not followed)."""
    return {str(p.relative_to(folder)): (p.is_dir(), None if p.is_dir() or p.is_symlink() else p.read_bytes())
            for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_a_second_sweep_on_a_running_sweeps_folder_is_refused_and_touches_nothing(tmp_path, cells_import_tests):
    """Before: the second sweep ran the same cell beside the first's, and one row ended
    'failed: in use by another run' while the cell's report said completed."""
    import signal
    import subprocess
    import sys
    import time

    path = write_sweep(tmp_path, [{"model.name": "fixtures.sweep_models:Slow", "train.epochs": 100}])
    out = tmp_path / "out"
    harness = [sys.executable, "-m", "harness", "sweep", str(path), "--output", str(out)]
    first = subprocess.Popen(harness, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("cells/*/stderr.log")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read()[-2000:]
        before = {name: (out / name).read_bytes() for name in (".lock", "sweep.yaml")}
        second = subprocess.run([*harness, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first sweep's cell ended before the test could overlap it"
        assert {name: (out / name).read_bytes() for name in before} == before
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=120)
    err = second.stderr.strip()
    assert second.returncode == 2 and len(err.splitlines()) == 1, err
    assert str(out) in err and f"pid {first.pid}" in err, err
    assert first.returncode == 128 + signal.SIGTERM, first_err[-2000:]
    (row,) = read_rows(out)
    assert row["status"] == "interrupted"  # the first sweep's row, as its own cell left it
    assert not (out / ".lock").exists()


def test_the_sweep_folder_lock_is_released_and_an_empty_folder_it_made_removed(tmp_path):
    from harness.files.lock import RunLock
    from harness.sweep.command import sweep_folder

    out = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), sweep_folder(out) as created:
        assert created and (out / ".lock").is_file()
        raise RuntimeError("refused before writing")
    assert not (tmp_path / "a").exists()
    with RunLock(tmp_path / "held"), pytest.raises(BadInput, match="in use by another run"), \
            sweep_folder(tmp_path / "held"):
        pass
    assert (tmp_path / "held").is_dir()  # the holder's folder is not removed by the refused sweep


@pytest.mark.parametrize("name,says", [
    ("../../x", "name: expected a folder name"),
    ("..", "name: expected a folder name"),
    ("a/b", "name: expected a folder name"),
    ("tab\there", "name: expected a folder name"),
    (None, "name (the file's stem): expected a folder name"),  # a file named "..yaml": its stem is "."
])
def test_a_sweep_name_that_would_leave_sweeps_is_refused(tmp_path, capsys, monkeypatch, name, says):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    spec = {"base": {"config": str(REPO / "configs/digits_cnn.yaml")}, "cells": [{"seed": 1}]}
    if name is not None:
        spec["name"] = name
    path = tmp_path / ("sweep.in.yaml" if name is not None else "..yaml")
    path.write_text(yaml.safe_dump(spec))
    before = _snapshot(tmp_path)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert _snapshot(tmp_path) == before


DEEP = "schema_version: 1\ncells: " + "[" * 5000 + "]" * 5000 + "\n"


def _sweep_yaml(body: str | None = None, link: str | None = None):
    def make(out: Path) -> None:
        if link:
            (out / "sweep.yaml").symlink_to(link)
        else:
            (out / "sweep.yaml").write_text(body)
    return make


@pytest.mark.parametrize("make,says", [
    (_sweep_yaml("schema_version: 1\ncells:\n- {id: [a, b], status: completed}\n"), "cells[0].id: expected a cell id"),
    (_sweep_yaml("schema_version: 1\ncells:\n- {id: x, job_id: ../../y, status: running}\n"), "cells[0].job_id"),
    (_sweep_yaml("schema_version: 1\ncells: {id: x}\n"), "cells: expected a list"),
    (_sweep_yaml(DEEP), "nested more than 64 levels"),
    (_sweep_yaml(link="/dev/zero"), "not a regular file"),
    (_sweep_yaml("schema_version: 1\ncells: [\n"), "malformed YAML"),
], ids=["id_list", "job_id_path", "cells_mapping", "deep", "dev_zero", "malformed"])
def test_a_broken_sweep_yaml_on_resume_is_one_line_and_changes_nothing(tmp_path, capsys, make, says):
    path = write_sweep(tmp_path, [{"loader.batch_size": 32}])
    out = tmp_path / "out"
    out.mkdir()
    make(out)
    before = _snapshot(tmp_path)
    assert main(["sweep", str(path), "--output", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and says in err, err
    assert str(out / "sweep.yaml") in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("report", ["/dev/zero", "link"])
def test_a_sweep_yaml_pointing_its_report_at_a_device_is_one_line(tmp_path, capsys, report):
    """Before: the size cap read st_size, 0 for /dev/zero, and the read never ended."""
    (tmp_path / "link").symlink_to("/dev/zero")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"schema_version": 1, "cells": [{"id": "a", "status": "completed",
                                                                    "report": report}]}))
    before = _snapshot(tmp_path)
    assert main(["compare", str(sweep), str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a regular file" in err, err
    assert _snapshot(tmp_path) == before


def test_sweep_yaml_rows_read_back_as_written(tmp_path):
    """The depth-capped reader resolves scalars as the writer does: a hex config hash that
    YAML 1.2 would read as a float (1234e5678901234 -> inf) stays the string it was."""
    from types import SimpleNamespace

    from harness.sweep.file import read_rows, write_sweep

    spec = SimpleNamespace(name="s", source=tmp_path / "s.yaml", raw={"time_limit_s": 3e-4})
    row = {"id": "a-1", "config_hash": "1234e5678901234", "status": "completed", "job_id": "41_0", "seconds": 1.5}
    write_sweep(tmp_path, spec, [row], "2026-01-01T00:00:00+00:00")
    assert read_rows(tmp_path) == {"a-1": row}
