"""harness compare reads a language model's bench-inference file (RUN/inference/inference.yaml)
beside each run's report: prefill p50 latency per prompt length, decode tokens/s per batch size."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.cli import main
from support.paths import REPO
from support.reports import make_report, sides
from support.threads import one_torch_thread

pytestmark = pytest.mark.usefixtures("one_thread")


def lm_report(samples_per_s: float = 1000.0) -> dict:
    r = make_report(samples_per_s=samples_per_s)
    r["config_hash"] = "hash-tiny-gpt"
    r["throughput"]["tokens_per_s"] = samples_per_s * 64
    return r


def body(prefill_ms: float = 2.0, decode_tokens_per_s: float = 1000.0) -> dict:
    """What harness/infer/text_bench.py writes, the figures compare reads."""
    def quiet() -> dict:  # one mapping each: the file's reader refuses YAML aliases
        return {"verdict": "quiet", "foreign_cpu_fraction": 0.01}

    return {"kind": "lm_inference", "positions": 64, "contention": quiet(),
            "prefill": [{"prompt_tokens": t, "latency_ms": {"p50": prefill_ms * t / 8, "p90": 9.0},
                         "tokens_per_s": 1.0, "contention": quiet()} for t in (8, 32, 64)],
            "decode": [{"batch_size": b, "step_latency_ms": {"p50": 1.0}, "tokens_per_s": decode_tokens_per_s * b,
                        "contention": quiet()} for b in (1, 8)]}


def with_inference(folder, bodies: list[dict]) -> None:
    for i, b in enumerate(bodies):
        (folder / f"r{i}" / "inference").mkdir()
        (folder / f"r{i}" / "inference" / "inference.yaml").write_text(yaml.safe_dump(b))


def rows_of(capsys, *argv) -> tuple[int, dict]:
    code = main(["compare", *map(str, argv), "--format", "json"])
    return code, {(r["cell"].endswith(" inference"), r["metric"]): r for r in json.loads(capsys.readouterr().out)["rows"]}


def test_decode_tokens_per_s_and_prefill_latency_are_judged_per_row(tmp_path, capsys):
    base, cand = sides(tmp_path, [lm_report() for _ in range(4)], [lm_report() for _ in range(4)])
    with_inference(base, [body(2.0, d) for d in (1000, 990, 1010, 1005)])
    with_inference(cand, [body(2.02, d) for d in (700, 690, 710, 705)])
    code, rows = rows_of(capsys, base, cand)
    assert code == 1
    decode = rows[(True, "decode tokens/s, batch 8")]
    assert decode["verdict"] == "regression" and decode["baseline"] == 1002.5 * 8 and decode["change"] == "-29.9%"
    assert rows[(True, "decode tokens/s, batch 1")]["verdict"] == "regression"
    for t in (8, 32, 64):
        prefill = rows[(True, f"prefill p50 (ms), prompt {t}")]
        assert prefill["verdict"] == "ok" and prefill["baseline"] == pytest.approx(2.0 * t / 8)
        assert prefill["threshold"] == "30%"
    assert rows[(False, "tokens/s")]["verdict"] == "ok"  # the training cell's rows are as before
    # Its threshold is its own: a 35% bar lets the decode drop through.
    code, rows = rows_of(capsys, base, cand, "--threshold", "decode_tokens_per_s=35")
    assert code == 0 and rows[(True, "decode tokens/s, batch 8")]["threshold"] == "35%"


def test_an_inference_file_on_one_side_only_is_a_missing_or_new_cell(tmp_path, capsys):
    base, cand = sides(tmp_path, [lm_report()], [lm_report()])
    with_inference(base, [body()])
    code, rows = rows_of(capsys, base, cand)
    assert code == 1 and rows[(True, "-")]["verdict"] == "missing"
    assert "no candidate run has inference/inference.yaml" in rows[(True, "-")]["note"]
    code, rows = rows_of(capsys, cand, base, "--allow-new")
    assert code == 0 and rows[(True, "-")]["verdict"] == "new"


def test_runs_without_inference_files_have_no_inference_rows(tmp_path, capsys):
    base, cand = sides(tmp_path, [lm_report()], [lm_report()])
    code, rows = rows_of(capsys, base, cand)
    assert code == 0 and not any(inference for inference, _ in rows)


def test_a_broken_inference_file_is_one_line_naming_it(tmp_path, capsys):
    base, cand = sides(tmp_path, [lm_report()], [lm_report()])
    bad = body()
    bad["decode"][1]["tokens_per_s"] = "fast"
    with_inference(base, [bad])
    with_inference(cand, [body()])
    assert main(["compare", str(base), str(cand)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inference.yaml: decode[1]" in err and "tokens_per_s" in err


@pytest.mark.slow
def test_a_real_tiny_gpt_run_with_its_bench_inference_against_itself_passes(tmp_path, capsys):
    run = tmp_path / "run"
    with one_torch_thread():
        assert main(["run", str(REPO / "configs/tiny_gpt.yaml"), "train.max_steps=4", "measure.warmup_steps=1",
                     "measure.measure_peak=false", "output.progress=false", "--output", str(run)]) == 0
        assert main(["bench-inference", str(run), "inference.batches=5", "inference.warmup_batches=1"]) == 0
    capsys.readouterr()
    code, rows = rows_of(capsys, run, run)
    assert code == 0
    inference = {m: r for (inf, m), r in rows.items() if inf}
    assert set(inference) == {"prefill p50 (ms), prompt 8", "prefill p50 (ms), prompt 32",
                              "prefill p50 (ms), prompt 64", *(f"decode tokens/s, batch {b}" for b in (1, 8, 64))}
    assert all(r["verdict"] == "ok" and r["change"] == "+0.0%" for r in inference.values())
