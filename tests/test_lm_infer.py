"""A language model's finished run reloaded: harness evaluate and predict on configs/tiny_gpt.yaml."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from harness.cli import main
from harness.report.io import load_report
from support.groups import one_worker
from support.paths import REPO
from support.threads import one_torch_thread

GPT = str(REPO / "configs/tiny_gpt.yaml")


pytestmark = [pytest.mark.usefixtures("one_thread"), one_worker(__name__)]


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    with one_torch_thread():
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


def _predict(run, *args, capsys) -> str:
    assert main(["predict", str(run), *args]) == 0
    return capsys.readouterr().out


def test_greedy_prediction_is_the_models_own_generate(gpt_run, capsys):
    from harness.infer.reload import build_trained_model, open_run

    prompt = "The return statement"
    out = _predict(gpt_run, prompt, "--max-new-tokens", "20", capsys=capsys)
    assert out == _predict(gpt_run, prompt, "--max-new-tokens", "20", capsys=capsys)
    model = build_trained_model(open_run(gpt_run))
    ids = torch.tensor([list(prompt.encode())])
    want = model.generate(ids, 20)[0, ids.shape[1]:].tolist()
    assert out == bytes(want).decode("utf-8", errors="replace") + "\n"


def test_a_seeded_sample_repeats(gpt_run, capsys):
    sample = ["def f(x):", "--temperature", "1.0", "--top-k", "20", "--max-new-tokens", "30"]
    first = _predict(gpt_run, *sample, "--seed", "3", capsys=capsys)
    assert first == _predict(gpt_run, *sample, "--seed", "3", capsys=capsys)
    from harness.infer.reload import open_run
    from harness.infer.text_predict import generate_text

    assert first == generate_text(open_run(gpt_run), "def f(x):", 30, 1.0, 20, seed=3) + "\n"
    # The default length: 64 new tokens, or what the 64 positions leave after the prompt.
    assert len(_predict(gpt_run, "x" * 60, capsys=capsys).encode("utf-8", errors="replace")) <= 4 * 4 + 1


def _refused(run, capsys, *args) -> str:
    before = sorted(p.name for p in run.iterdir())
    assert main(["predict", str(run), *args]) == 2
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    return err


def test_a_prompt_longer_than_the_positions_is_refused(gpt_run, capsys):
    assert "prompt: 64 tokens" in _refused(gpt_run, capsys, "x" * 64)
    assert "--max-new-tokens: 10" in _refused(gpt_run, capsys, "x" * 60, "--max-new-tokens", "10")
    assert "--temperature" in _refused(gpt_run, capsys, "x", "--temperature", "-1")


def test_a_prompt_outside_a_tokenizer_json_vocabulary_is_refused(tmp_path, capsys):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["[UNK]", "the", "cat", "sat", "on", "mat", "."]
    tok = tokenizers.Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat . " * 300)
    run = tmp_path / "run"
    assert main(["run", GPT, f"data.root={corpus}", f"data.tokenizer={tmp_path / 'tokenizer.json'}",
                 "train.max_steps=2", "measure.warmup_steps=1", "measure.measure_peak=false",
                 "output.progress=false", "--output", str(run)]) == 0
    capsys.readouterr()
    err = _refused(run, capsys, "the dog sat")
    assert "prompt: 'dog'" in err and "vocabulary" in err
    out = _predict(run, "the cat", "--max-new-tokens", "5", capsys=capsys)
    assert out.strip() and all(w in words for w in out.split())


def test_bench_inference_measures_prefill_and_cached_decode(gpt_run, tmp_path, capsys):
    small = ["inference.batch_sizes=[1,4]", "inference.batches=5", "inference.warmup_batches=1"]
    assert main(["bench-inference", str(gpt_run), *small, "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "KV cache" in out and "decode batch" in out
    body = yaml.safe_load((tmp_path / "inference.yaml").read_text())
    assert body["kind"] == "lm_inference" and body["positions"] == 64
    assert [r["prompt_tokens"] for r in body["prefill"]] == [8, 32, 64]
    assert [r["batch_size"] for r in body["decode"]] == [1, 4]
    assert all(r["tokens_per_s"] > 0 and r["step_latency_ms"]["count"] == 5 for r in body["decode"])
    assert all(r["latency_ms"]["count"] == 5 for r in body["prefill"])
    # Every row knows what other processes took of the CPUs while it was measured; the table
    # names the conditions under the figures, as harness run's summary does.
    rows = body["prefill"] + body["decode"]
    assert all(r["contention"]["verdict"] in ("quiet", "contended", "unknown") for r in rows)
    worst = max(r["contention"]["foreign_cpu_fraction"] or 0.0 for r in rows)
    assert (body["contention"]["foreign_cpu_fraction"] or 0.0) == worst
    assert "timing conditions" in out
    # An earlier measurement is kept unless --overwrite.
    assert main(["bench-inference", str(gpt_run), *small, "--output", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
