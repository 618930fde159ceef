"""configs/tiny_gpt.yaml in every mode but DDP (tests/test_distributed.py): bf16 autocast and
torch.compile, each a handful of steps that completes and reports in tokens."""

from __future__ import annotations

import math

import pytest
import torch

from harness.cli import main
from harness.report.io import load_report
from support.paths import REPO

GPT = str(REPO / "configs/tiny_gpt.yaml")
FEW = ["train.max_steps=6", "measure.warmup_steps=2", "output.progress=false", "output.save_model=false",
       "output.checkpoint_every_epoch=false"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _tokens_report(out) -> dict:
    report = load_report(out)
    t = report["throughput"]
    assert report["status"] == "completed" and t["measured_steps"] == 4
    assert t["tokens_per_s"] > 0 and t["tokens_per_s"] == pytest.approx(t["samples_per_s"] * 64)
    assert t["tokens_per_step"] == 16 * 64
    assert report["compute"]["flops_per_token_formula"] > 0
    assert math.isfinite(report["accuracy"]["test_loss"]) and report["accuracy"]["test_loss"] < math.log(256)
    return report


MODES = {  # name -> overrides, then what the report must say of the mode
    "bf16": (["runtime.precision=bf16"], lambda r: r["distributed"]["precision"] == "bf16"),
    "compile_aot_eager": (["runtime.compile.enabled=true", "runtime.compile.backend=aot_eager"],
                          lambda r: r["compile"]["backend"] == "aot_eager" and r["compile"]["compiles"] >= 1
                          and r["compile"]["recompiles_in_window"] == 0),
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_tiny_gpt_runs_and_reports_tokens_per_s(mode, tmp_path):
    """bf16 is CPU autocast here; compile traces with aot_eager (inductor's code generation takes
    over a minute on the 2-core VM: the GPU test below runs it)."""
    overrides, says = MODES[mode]
    assert main(["run", GPT, *overrides, *FEW, "--output", str(tmp_path)]) == 0
    assert says(_tokens_report(tmp_path))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_gpt_on_a_gpu_in_bf16_compiled_by_inductor(tmp_path):
    assert main(["run", GPT, "runtime.device=gpu", "runtime.precision=bf16", "runtime.compile.enabled=true",
                 *FEW, "--output", str(tmp_path)]) == 0
    report = _tokens_report(tmp_path)
    assert report["distributed"]["precision"] == "bf16" and report["distributed"]["device"].startswith("cuda")
    assert report["compile"]["backend"] == "inductor" and report["compile"]["recompiles_in_window"] == 0
