"""The step's layout (runtime.sharding, train.grad_accum_steps, runtime.activation_checkpointing)
on the surfaces that read reports: the mode label, harness compare's cells, harness report's
scaling families, and harness sweep's axes.

Reports here are synthetic (support/reports.py), carrying the keys as the run writes them:
``distributed.sharding``, the ``batch`` block, ``model.activation_checkpointing``; or only
the config's keys, as a reader meets a report whose block is missing.
"""

from __future__ import annotations

import json

import pytest
import yaml

from harness.cli import main
from harness.hwreport import identity
from harness.hwreport.scaling import _global_batch
from harness.report.run_mode import family_mode, layout, mode_label
from support.paths import REPO
from support.reports import make_report, sides

pytestmark = pytest.mark.usefixtures("one_thread")


def fsdp2(report: dict) -> dict:
    report["distributed"].update(sharding="fsdp2", backend="gloo")
    report["config"]["runtime"] = {"sharding": "fsdp2"}
    return report


def accum(report: dict, k: int, micro: int) -> dict:
    world = report["distributed"]["world_size"]
    report["batch"] = {"micro_batch_size": micro, "grad_accum_steps": k, "world_size": world,
                       "global_batch_size": micro * k * world}
    report["config"]["train"] = {"grad_accum_steps": k}
    return report


def act_ckpt(report: dict) -> dict:
    report["model"] = {"name": "gpt", "activation_checkpointing": {"blocks": 2, "block_class": "Block",
                                                                   "first": "blocks.0", "last": "blocks.1"}}
    report["config"]["runtime"] = {**report["config"].get("runtime", {}), "activation_checkpointing": True}
    return report


def ddp2(**kw) -> dict:
    r = make_report(world_size=2, distributed_type="MULTI_CPU", **kw)
    r["distributed"]["backend"] = "gloo"
    return r


def test_the_mode_label_names_sharding_accumulation_and_checkpointing():
    assert mode_label(make_report()) == "cpu ×1"
    assert mode_label(ddp2()) == "ddp gloo ×2"
    assert mode_label(fsdp2(ddp2())) == "fsdp2 gloo ×2"  # each rank holds a shard: not DDP
    assert mode_label(accum(make_report(batch_size=8), 4, 8)) == "cpu ×1 accum 4"
    assert mode_label(act_ckpt(make_report())) == "cpu ×1 act-ckpt"
    everything = act_ckpt(accum(fsdp2(ddp2(batch_size=8)), 4, 8))
    assert mode_label(everything) == "fsdp2 gloo ×2 accum 4 act-ckpt"
    assert layout(everything) == ("fsdp2", 4, True)
    everything["distributed"]["precision"] = "bf16"
    assert mode_label(everything) == "fsdp2 gloo ×2 bf16 accum 4 act-ckpt"
    # A scaling family is the mode less its process count: DDP and FSDP2 are two.
    assert family_mode(ddp2()) == family_mode(make_report()) == "cpu"
    assert family_mode(fsdp2(ddp2())) == "cpu fsdp2"


def test_what_ran_is_read_before_the_config_and_older_reports_read_plain():
    r = make_report()
    r["config"]["runtime"] = {"sharding": "fsdp2", "activation_checkpointing": True}
    r["config"]["train"] = {"grad_accum_steps": 2}
    assert layout(r) == ("fsdp2", 2, True)  # no blocks: the config says
    r["distributed"]["sharding"] = "none"
    r["model"] = {"activation_checkpointing": None}
    r["batch"] = {"grad_accum_steps": 1}
    assert layout(r) == ("none", 1, False)  # the blocks say what ran
    assert layout(make_report()) == ("none", 1, False)  # a report older than the keys
    assert mode_label(r) == "cpu ×1"


@pytest.mark.parametrize("ident", ["recipe_hash", "config_hash"])
@pytest.mark.parametrize("change", [fsdp2, lambda r: accum(r, 4, 64), act_ckpt],
                         ids=["sharding", "grad_accum", "act_ckpt"])
def test_compare_never_pairs_runs_of_another_layout(tmp_path, capsys, change, ident):
    """The same recipe hash (or, for older reports, config hash) on both sides, as a reader
    may meet reports whose configs do not tell them apart: the layout alone keeps them two
    cells, the baseline's missing and the candidate's new."""
    def same(r):
        r[ident] = "same"
        return r

    plain = [same(ddp2()) for _ in range(2)]
    other = [same(change(ddp2())) for _ in range(2)]
    base, cand = sides(tmp_path, plain, other)
    code = main(["compare", str(base), str(cand), "--format", "json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["counts"]["compared"] == 0 and result["counts"]["missing"] == 1 and result["counts"]["new"] == 1
    # ... and a layout against itself is one cell.
    base, cand = sides(tmp_path / "again", other, other)
    assert main(["compare", str(base), str(cand)]) == 0
    assert "1 cell(s) compared" in capsys.readouterr().out


def test_four_micro_batches_of_8_and_one_of_32_are_two_cells(tmp_path, capsys):
    big = make_report(batch_size=32, config_hash="b32")
    small = accum(make_report(batch_size=8, config_hash="b8k4"), 4, 8)
    assert _global_batch(big) == _global_batch(small) == 32  # the same global batch ...
    base, cand = sides(tmp_path, [big], [small])
    assert main(["compare", str(base), str(cand), "--format", "json"]) == 1
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert (counts["compared"], counts["missing"], counts["new"]) == (0, 1, 1)  # ... run two ways


def test_the_scaling_table_keeps_fsdp2_in_a_family_of_its_own(tmp_path, capsys):
    one = make_report(samples_per_s=1000.0)
    two = ddp2(samples_per_s=1800.0)
    sharded = fsdp2(ddp2(samples_per_s=1500.0))
    for name, r in (("n1", one), ("n2", two), ("n2_fsdp2", sharded)):
        r["config"]["model"] = {"name": "cnn"}
        sides(tmp_path, [r], [])[0].rename(tmp_path / name)
    assert main(["report", str(tmp_path / "n1"), str(tmp_path / "n2"), str(tmp_path / "n2_fsdp2"),
                 "--output", str(tmp_path / "out"), "--no-plots"]) == 0, capsys.readouterr().err
    import csv

    with open(tmp_path / "out" / "scaling.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    weak = [r for r in rows if r["scaling"] == "weak"]
    # ddp ×2 over cpu ×1 is the family's series; the FSDP2 run, with no 1-process run of its
    # family, makes no series and is never a third point of this one.
    assert [(r["mode"], r["processes"]) for r in weak] == [("cpu", "1"), ("cpu", "2")]
    assert float(weak[1]["speedup"]) == pytest.approx(1.8)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "fsdp2 gloo ×2" in md


def test_the_layout_keys_are_sweep_axes(tmp_path):
    """Each layout key is an axis, fsdp a cell's launch mode, and every cell its own recipe."""
    from harness.sweep.spec import load_sweep

    grid = {"runtime.activation_checkpointing": [False, True], "train.grad_accum_steps": [1, 2]}
    extra = [{"launch.mode": "fsdp", "launch.nproc": 2}]
    path = tmp_path / "layout.yaml"
    path.write_text(yaml.safe_dump({"base": str(REPO / "configs/tiny_gpt.yaml"), "grid": grid,
                                    "extra_cells": extra}))
    spec = load_sweep(path)
    assert len(spec.cells) == 4 + 1
    assert [c.config.runtime.activation_checkpointing for c in spec.cells[:4]] == [False, False, True, True]
    assert [c.config.train.grad_accum_steps for c in spec.cells[:4]] == [1, 2, 1, 2]
    assert spec.cells[4].launch.mode == "fsdp" and spec.cells[4].launch.nproc == 2
    assert len({c.config_hash for c in spec.cells[:4]}) == 4


def test_the_shipped_layouts_sweep_runs_fsdp_cells_through_harness_launch():
    from harness.sweep.cells import cell_command
    from harness.sweep.spec import load_sweep

    spec = load_sweep(REPO / "configs/sweeps/layouts.yaml")
    modes = [(c.launch.mode, c.launch.nproc) for c in spec.cells]
    assert modes == [("ddp", 2), ("fsdp", 2), ("ddp", 2), ("fsdp", 2), ("fsdp", 2)]
    cmd = cell_command(spec, spec.cells[1].overrides, REPO / "runs/x", spec.cells[1].launch)
    assert cmd[cmd.index("--mode") + 1] == "fsdp"
    # 16 x 1 x 2 and 4 x 4 x 2: one global batch of 32 in every cell
    assert {c.config.loader.batch_size * c.config.train.grad_accum_steps * 2 for c in spec.cells} == {32}


@pytest.mark.slow
def test_a_sweep_over_activation_checkpointing_runs_and_compares_as_two_cells(tmp_path, capsys, monkeypatch):
    # The cells are processes of their own: one torch thread each, as the one_thread fixture
    # gives this process (two threads of tiny_gpt's small steps spin on a busy 2-core machine).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = {"base": {"config": str(REPO / "configs/tiny_gpt.yaml"),
                     "overrides": {"train.max_steps": 2, "measure.warmup_steps": 1, "output.progress": False,
                                   "output.save_model": False, "output.checkpoint_every_epoch": False,
                                   "measure.measure_peak": False}},
            "grid": {"runtime.activation_checkpointing": [False, True]}, "time_limit_s": 300}
    path = tmp_path / "sweep.in.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--output", str(out)]) == 0, capsys.readouterr().err
    rows = yaml.safe_load((out / "sweep.yaml").read_text())["cells"]
    assert [r["status"] for r in rows] == ["completed", "completed"]
    from harness.report.io import load_report

    reports = [load_report(out / r["report"]) for r in rows]
    assert [mode_label(r) for r in reports] == ["cpu ×1", "cpu ×1 act-ckpt"]
    assert [r["model"]["activation_checkpointing"] is not None for r in reports] == [False, True]
    capsys.readouterr()
    assert main(["compare", str(out / "sweep.yaml"), str(out / "sweep.yaml")]) == 0
    assert "2 cell(s) compared" in capsys.readouterr().out
    assert identity.workload_id(reports[0]) == identity.workload_id(reports[1])  # one workload, two modes
