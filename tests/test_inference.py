"""The inference scenario: latency against a known sleep, and reports kept apart from training."""

from __future__ import annotations

import pytest

from support.paths import REPO
from support.recipes import TINY
from harness.cli import main
from harness.report.io import load_report

SLEEP_MS = 20.0
BASE = ["data.subset=120", "model.name=fixtures.inference_models:SleepyEval", "measure.count_flops=false",
        "output.progress=false"]


@pytest.fixture
def sleepy(monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_EVAL_SLEEP_MS", str(SLEEP_MS))


def test_latency_reads_the_sleep_of_the_eval_forward(sleepy, tmp_path, capsys):
    out = tmp_path / "inf"
    assert main(["run", *BASE, "scenario=inference", "inference.batch_sizes=[1, 8]", "inference.batches=15",
                 "inference.warmup_batches=2", "--output", str(out)]) == 0
    assert "samples/s" in capsys.readouterr().out
    report = load_report(out / "report.yaml")
    assert report["scenario"] == "inference" and report["status"] == "completed"
    rows = {r["batch_size"]: r for r in report["inference"]["batch_sizes"]}
    one, eight = rows[1], rows[8]
    assert one["latency_ms"]["count"] == 15  # the warm-up passes are not counted
    assert one["latency_ms"]["p50"] == pytest.approx(SLEEP_MS, rel=0.10)
    # samples/s is its own clock (the timed passes' wall time), and agrees with the latencies.
    assert eight["samples_per_s"] == pytest.approx(8 / (eight["latency_ms"]["mean"] / 1000.0), rel=0.05)
    assert report["throughput"]["samples_per_s"] == eight["samples_per_s"]
    assert report["step_time_ms"]["p50"] == one["latency_ms"]["p50"]
    assert report["inference"]["weights"] == "random" and report["inference"]["clock"] == "perf_counter"
    for r in rows.values():
        assert r["memory"]["peak_rss_mb"] > 100  # torch alone is more
    assert report["memory"]["setup"]["peak_rss_mb"] > 100


def test_an_inference_report_is_never_matched_with_a_training_one(tmp_path, capsys):
    from harness.gate.compare import compare
    from harness.report.sources import collect
    from support.reports import make_report, write

    training = make_report(config_hash="same-recipe")
    training["recipe_hash"] = "same-recipe"
    inference = {**training, "scenario": "inference"}
    write(tmp_path / "a", "cell", training)
    write(tmp_path / "b", "cell", inference)
    result = compare(collect(tmp_path / "a"), collect(tmp_path / "b"))
    assert result.cells == 0
    assert sorted(r.verdict for r in result.rows) == ["missing", "new"]
    assert "scenario" in next(r.note for r in result.rows if r.verdict == "missing")
    # Two inference reports of one recipe do pair.
    write(tmp_path / "c", "cell", inference)
    assert compare(collect(tmp_path / "b"), collect(tmp_path / "c")).cells == 1


def test_bench_inference_on_a_run_measures_its_model(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", str(REPO / "configs/digits_mlp.yaml"), *TINY, "train.epochs=1", "--output", str(run)]) == 0
    assert main(["bench-inference", str(run), "inference.batch_sizes=[2]", "inference.batches=3"]) == 0
    report = load_report(run / "inference" / "report.yaml")
    assert report["inference"]["weights"] == str(run / "model.pt")
    assert report["recipe_hash"] != load_report(run / "report.yaml")["recipe_hash"]
    # The run's folder now holds both; compare keeps them apart (missing + new, not a pair).
    capsys.readouterr()
    assert main(["compare", str(run / "report.yaml"), str(run / "inference" / "report.yaml")]) == 1
    assert "missing" in capsys.readouterr().out


def test_bench_inference_refuses_weights_of_another_model(tmp_path, capsys):
    import torch

    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    code = main(["bench-inference", str(REPO / "configs/digits_mlp.yaml"), "data.subset=60",
                 f"inference.weights={tmp_path / 'other.pt'}", "--output", str(tmp_path / "out")])
    assert code == 2
    assert "other.pt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_events_read_a_known_gpu_sleep():
    """On a GPU each pass is timed by CUDA events: a forward that is a ~20 ms GPU sleep reads
    20 ms, although the host only queues it (a host clock would read microseconds)."""
    import torch

    from harness.infer.bench import time_batches

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    torch.cuda.synchronize()
    cycles = int(10_000_000 * 20.0 / start.elapsed_time(end))

    class GpuSleep(torch.nn.Module):
        def forward(self, x):
            torch.cuda._sleep(cycles)
            return x * 2

    x = torch.ones(8, 4, device="cuda")
    lat, wall = time_batches(GpuSleep(), x, warmup=2, batches=10, device=torch.device("cuda"))
    assert len(lat) == 10
    assert sorted(lat)[5] == pytest.approx(20.0, rel=0.10)
    assert wall == pytest.approx(sum(lat) / 1000.0, rel=0.10)


def test_an_inference_report_never_replaces_a_training_one(tmp_path, capsys):
    from support.reports import make_report, write

    write(tmp_path, "run", make_report())
    before = (tmp_path / "run" / "report.yaml").read_text()
    assert main(["run", *BASE, "scenario=inference", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier run (report.yaml" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "run" / "report.yaml").read_text() == before


def test_inference_keys_stay_out_of_training_hashes_and_in_inference_ones():
    from harness.config.run import config_hash, load_config, recipe_hash

    train, train_other = load_config(None), load_config(None, ["inference.batches=7"])
    assert config_hash(train) == config_hash(train_other) and recipe_hash(train) == recipe_hash(train_other)
    inf = load_config(None, ["scenario=inference"])
    assert recipe_hash(inf) != recipe_hash(train)
    assert recipe_hash(load_config(None, ["scenario=inference", "inference.batch_sizes=[4]"])) != recipe_hash(inf)
    # The weights' values do not change what a forward pass costs: random and trained pair.
    assert recipe_hash(load_config(None, ["scenario=inference", "inference.weights=a/model.pt"])) == recipe_hash(inf)
