"""The language-model workload end to end: configs/tiny_gpt.yaml trains and reports in tokens."""

from __future__ import annotations

import math

import pytest

from harness.cli import main
from harness.report.io import load_report
from support.groups import one_worker
from support.paths import REPO
from support.threads import one_torch_thread

GPT = str(REPO / "configs/tiny_gpt.yaml")
QUICK = ["train.max_steps=3", "measure.warmup_steps=1", "output.progress=false", "output.save_model=false"]


pytestmark = [pytest.mark.usefixtures("one_thread"), one_worker(__name__)]


@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory):
    with one_torch_thread():
        out = tmp_path_factory.mktemp("tiny_gpt")
        assert main(["run", GPT, "output.progress=false", "--output", str(out)]) == 0
        report = load_report(out)
        report["_folder"] = out
        return report


def test_tiny_gpt_reports_tokens_per_s(tiny_gpt):
    t = tiny_gpt["throughput"]
    assert tiny_gpt["status"] == "completed" and tiny_gpt["config"]["task"] == "causal_lm"
    assert t["tokens_per_s"] > 0
    # Windows of data.seq_len tokens, none of them padding: tokens are samples x 64.
    assert t["tokens_per_step"] == 16 * 64
    assert t["measured_tokens"] == t["measured_samples"] * 64
    assert t["tokens_per_s"] == pytest.approx(t["samples_per_s"] * 64)


def test_counted_flops_per_token_agree_with_the_formula(tiny_gpt):
    c = tiny_gpt["compute"]
    assert c["flops_per_token_formula_source"] == "6*N + 12*L*H*Q*T"
    assert c["flops_per_token"] == pytest.approx(c["flops_per_token_formula"], rel=0.02)
    assert c["flops_per_token"] == pytest.approx(c["flops_per_sample"] / 64)


def test_tiny_gpt_learns_well_below_an_untrained_model(tiny_gpt):
    a = tiny_gpt["accuracy"]
    assert a["test_loss"] < math.log(256) - 1.5  # nats per token; untrained: ln 256 = 5.55
    assert a["test_perplexity"] == pytest.approx(math.exp(a["test_loss"]))
    assert a["test_bits_per_byte"] == pytest.approx(a["test_loss"] / math.log(2))  # bytes: 1 byte per token
    assert a["test_tokens"] == a["test_samples"] == tiny_gpt["data"]["sizes"]["test"] * 64
    assert a["dev"][-1]["loss"] == a["final_dev_loss"] and "perplexity" in a["dev"][-1]


def test_the_corpus_fingerprint_travels_with_the_report(tiny_gpt):
    d = tiny_gpt["data"]
    assert d["source"].endswith("topics.py") and len(d["sha256"]) == 64 and d["size_bytes"] > 100_000
    assert d["vocab_size"] == 256 and d["seq_len"] == 64 and d["tokenizer"] == "bytes"


def test_validate_describes_the_corpus(capsys):
    assert main(["validate", GPT]) == 0
    said = capsys.readouterr().out
    assert "ok" in said and "vocabulary 256" in said and "windows of 64 tokens" in said


def test_a_users_corpus_model_and_task_by_import_path(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    out = tmp_path / "run"
    assert main(["run", GPT, f"data.root={corpus}", "model.name=fixtures.lm_models:Bigram", "model.kwargs={}",
                 "task=fixtures.lm_models:MyTask", *QUICK, "--output", str(out)]) == 0
    report = load_report(out)
    assert report["throughput"]["tokens_per_s"] > 0
    assert report["data"]["size_bytes"] == corpus.stat().st_size
    assert report["compute"]["flops_per_token_formula"] is None  # a user's model: no formula
    assert report["compute"]["flops_per_token"] == 0  # an embedding lookup: no matmul, no model FLOPs


def test_an_image_report_gains_no_token_keys(tmp_path):
    out = tmp_path / "digits"
    assert main(["run", str(REPO / "configs/digits_mlp.yaml"), "data.subset=64", *QUICK, "--output", str(out)]) == 0
    report = load_report(out)
    assert "tokens_per_s" not in report["throughput"] and "flops_per_token" not in report["compute"]
    assert "test_perplexity" not in report["accuracy"] and report["config"]["task"] == "classification"


def test_a_model_without_vocabulary_logits_is_bad_input(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", GPT, "model.name=fixtures.lm_models:NoVocab", "model.kwargs={}", *QUICK,
                 "--output", str(out)]) == 2
    assert "expected (1, 64, 256)" in capsys.readouterr().err and not out.exists()


def test_time_to_a_target_loss_and_stop_there(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a stitch in time saves nine. " * 2000)
    out = tmp_path / "run"
    assert main(["run", GPT, f"data.root={corpus}", "train.epochs=4", "train.max_steps=null",
                 "train.target_loss=4.5", "train.stop_at_target=true", "output.progress=false",
                 "output.save_model=false", "--output", str(out)]) == 0
    report = load_report(out)
    a = report["accuracy"]
    # A line said over and over is learnt long before the fourth epoch.
    assert report["stop_reason"] == "target_loss" and len(a["dev"]) < 4 and a["time_to_target_s"] > 0
    assert a["target_loss"] == 4.5 and a["dev"][-1]["loss"] <= 4.5 < min([d["loss"] for d in a["dev"][:-1]] or [9])


def test_the_new_keys_at_their_defaults_keep_an_image_recipe_and_its_resume():
    from harness.config.run import config_hash, load_config, recipe_hash, to_dict
    from harness.run.resume import recipe_changes

    cfg = load_config(REPO / "configs/digits_cnn.yaml")
    before = to_dict(cfg)  # what a config written before the language-model keys held
    before.pop("task"), before["data"].pop("seq_len"), before["data"].pop("tokenizer")
    before["train"].pop("target_loss")
    assert recipe_changes(before, to_dict(cfg), epochs_done=1) == []
    # digits_cnn's hashes as the harness wrote them before the language-model keys existed.
    assert (config_hash(cfg), recipe_hash(cfg)) == ("96f349f9af877476", "52eea0d449068e59")
