"""A language model's finished run reloaded: harness evaluate and predict on configs/tiny_gpt.yaml."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from harness.cli import main
from harness.report.io import load_report
from support.paths import REPO

GPT = str(REPO / "configs/tiny_gpt.yaml")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny_gpt")
    assert main(["run", GPT, "train.max_steps=20", "measure.warmup_steps=2", "measure.measure_peak=false",
                 "output.progress=false", "--output", str(out)]) == 0
    return out


def test_evaluate_reproduces_the_runs_test_figures_exactly(gpt_run, capsys):
    assert main(["evaluate", str(gpt_run)]) == 0
    out = capsys.readouterr().out
    assert "nats/token" in out and "wrote" in out
    body = yaml.safe_load((gpt_run / "eval-test.yaml").read_text())
    acc = load_report(gpt_run)["accuracy"]
    assert body["kind"] == "evaluation" and body["data"]["own_split"] and body["data"]["split"] == "test"
    assert body["loss"] == acc["test_loss"]
    assert body["perplexity"] == acc["test_perplexity"] == pytest.approx(math.exp(body["loss"]))
    assert body["bits_per_byte"] == acc["test_bits_per_byte"]
    assert body["accuracy"] == acc["test_accuracy"] and body["tokens"] == acc["test_tokens"]
    assert body["run_report"]["test_loss"] == body["loss"]
    assert "confusion_matrix" not in body and "per_class" not in body


def test_evaluate_the_dev_split(gpt_run, tmp_path):
    assert main(["evaluate", str(gpt_run), "--split", "dev", "--output", str(tmp_path)]) == 0
    body = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    assert body["data"]["split"] == "dev" and body["run_report"] is None
    assert body["loss"] == pytest.approx(load_report(gpt_run)["accuracy"]["final_dev_loss"])
