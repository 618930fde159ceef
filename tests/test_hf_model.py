"""model.name: hf_causal_lm, a transformers causal LM built from its config alone (the hf extra).

The dev extras install transformers, so CI runs these; without it the recipe is refused at
load (checked here with the package hidden), and the rest skips."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest

from harness.cli import main
from harness.errors import BadInput
from support.paths import REPO

GPT = str(REPO / "configs/tiny_gpt.yaml")
HF = ["model.name=hf_causal_lm",
      "model.kwargs={config: gpt2, n_layer: 2, n_head: 4, n_embd: 64, resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"]
HAVE = importlib.util.find_spec("transformers") is not None
needs_hf = pytest.mark.skipif(not HAVE, reason="needs transformers (pip install 'harness[hf]')")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_without_transformers_the_recipe_is_refused_at_load(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # find_spec and import see no package
    assert main(["run", GPT, *HF, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'harness[hf]'" in err and "model.name" in err
    assert not (tmp_path / "out").exists()


@needs_hf
def test_the_model_takes_the_datas_vocabulary_and_positions_and_downloads_nothing(monkeypatch):
    from harness.models.registry import ModelConfig, build_causal_lm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, info = build_causal_lm(ModelConfig("hf_causal_lm", {"config": "gpt2", "n_layer": 1, "n_head": 2,
                                                               "n_embd": 32}), vocab_size=256, seq_len=48)
    assert model.config.vocab_size == 256 and model.config.n_positions == 48 and model.config.n_layer == 1
    assert model.config.eos_token_id is None  # GPT-2's 50256 is no byte
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    with pytest.raises(BadInput, match="model.kwargs.n_layr: gpt2's config has no such field"):
        build_causal_lm(ModelConfig("hf_causal_lm", {"config": "gpt2", "n_layr": 1}), vocab_size=256, seq_len=48)
    with pytest.raises(BadInput, match="model.kwargs.config: 'gpt3'"):
        build_causal_lm(ModelConfig("hf_causal_lm", {"config": "gpt3"}), vocab_size=256, seq_len=48)


@needs_hf
@pytest.mark.slow
def test_a_tiny_gpt2_from_its_config_trains_and_reports_in_tokens(tmp_path):
    assert main(["run", GPT, *HF, "train.max_steps=30", "measure.warmup_steps=2", "output.progress=false",
                 "--output", str(tmp_path)]) == 0
    from harness.report.io import load_report

    report = load_report(tmp_path)
    assert report["status"] == "completed" and report["model"]["name"] == "hf_causal_lm"
    t = report["throughput"]
    assert t["tokens_per_s"] == pytest.approx(t["samples_per_s"] * 64)
    assert report["compute"]["flops_per_token"] > 0 and report["compute"]["flops_per_token_formula"] is None
    assert report["accuracy"]["test_loss"] < math.log(256) - 1.0
