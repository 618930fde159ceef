"""configs/sweeps/lm_shapes.yaml: a language model swept over data.seq_len, batch size and width,
each row in tokens/s and FLOPs per token by the published formula."""

from __future__ import annotations

import pytest
import yaml

from harness.cli import main
from harness.measure.lm_flops import flops_per_token_formula
from harness.report.io import load_report
from support.paths import REPO

SHAPES = REPO / "configs" / "sweeps" / "lm_shapes.yaml"
AXES = ("data.seq_len", "loader.batch_size", "model.kwargs.d_model")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_shipped_sweep_spans_window_batch_and_width_with_the_model_sized_by_the_window():
    from harness.sweep.spec import load_sweep

    spec = load_sweep(SHAPES)
    assert all(tuple(c.axes) == AXES for c in spec.cells) and len(spec.cells) == 8
    for c in spec.cells:  # the data.seq_len axis alone sizes the window and the model's positions
        assert c.config.data.seq_len == c.axes["data.seq_len"]
        assert c.config.model.kwargs["seq_len"] is None
        assert c.config.model.kwargs["d_model"] == c.axes["model.kwargs.d_model"]


def test_a_null_model_seq_len_gives_the_model_the_windows_positions():
    from harness.models.registry import ModelConfig, build_causal_lm

    model, _ = build_causal_lm(ModelConfig("gpt", {"n_layer": 1, "n_head": 2, "d_model": 16, "seq_len": None}),
                               vocab_size=256, seq_len=24)
    assert model.config.seq_len == 24


@pytest.mark.slow
def test_a_tiny_lm_shapes_sweep_reports_tokens_and_flops_per_token_by_the_formula(tmp_path):
    """The shipped sweep's base and axes at a tiny size, two cells that differ on every axis (each
    cell is a process that takes seconds to import torch). FLOPs per token follow the formula
    for each cell's shape, and tokens/s is samples/s times the cell's window."""
    shipped = yaml.safe_load(SHAPES.read_text())
    base = {"config": str(SHAPES.parent / shipped["base"]["config"]),
            "overrides": {**shipped["base"]["overrides"], "train.max_steps": 3, "measure.warmup_steps": 1,
                          "data.split": {"train": 0.98, "dev": 0.01, "test": 0.01}}}
    shapes = [(16, 2, 32), (32, 4, 64)]
    cells = [dict(zip(AXES, s)) for s in shapes]
    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump({"base": base, "cells": cells, "time_limit_s": 120}, sort_keys=False))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--output", str(out)]) == 0
    rows = yaml.safe_load((out / "sweep.yaml").read_text())["cells"]
    assert [r["status"] for r in rows] == ["completed"] * 2
    gpt = yaml.safe_load((REPO / "configs/tiny_gpt.yaml").read_text())["model"]["kwargs"]  # n_layer, n_head
    for row, (seq_len, batch, d_model) in zip(rows, shapes):
        expected = flops_per_token_formula(gpt["n_layer"], gpt["n_head"], d_model, seq_len, 256)
        assert row["flops_per_token"] == pytest.approx(expected, rel=1e-9)
        assert row["tokens_per_s"] == pytest.approx(row["samples_per_s"] * seq_len, rel=1e-9)
        report = load_report(out / row["report"])
        assert report["throughput"]["tokens_per_step"] == batch * seq_len
        assert report["model"]["parameters"] > 0
    # Twice the width and the window: 6 N grows about 3.5 times (12 d^2 L + d V), the attention
    # term 4 times; the batch changes neither.
    assert rows[1]["flops_per_token"] > 3 * rows[0]["flops_per_token"]


def test_the_sweep_table_shows_tokens_per_s_for_language_model_cells_only():
    from harness.sweep.table import summary_table

    row = {"status": "completed", "samples_per_s": 100.0, "seconds": 1.0}
    lm = summary_table([{**row, "id": "a", "tokens_per_s": 6400.0}, {**row, "id": "b", "tokens_per_s": 12800.0,
                                                                     "samples_per_s": 50.0}])
    assert "tokens/s" in lm.splitlines()[0] and "12,800" in lm
    assert "best throughput        b (12,800 tokens/s)" in lm  # fewer samples/s, more tokens/s
    image = summary_table([{**row, "id": "a", "tokens_per_s": None}])
    assert "tokens/s" not in image and "best throughput        a (100.0 samples/s)" in image
