"""harness compare on language-model reports: tokens/s is a judged figure where both sides have it.

Synthetic reports (tests/support/reports.py) carry ``throughput.tokens_per_s`` as a
language model's run writes it; image reports have none and keep their rows as before.
"""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.gate.verdicts import BY_NAME, replicates
from support.paths import REPO
from support.reports import make_report, sides, write
from support.threads import one_torch_thread

SEQ_LEN = 64


def lm_report(samples_per_s: float = 1000.0, **kw) -> dict:
    """A language model's report: samples are windows of SEQ_LEN tokens."""
    r = make_report(samples_per_s=samples_per_s, **kw)
    r["config_hash"] = "hash-tiny-gpt"
    r["throughput"]["tokens_per_s"] = samples_per_s * SEQ_LEN
    return r


def rows_of(capsys, *argv) -> tuple[int, dict]:
    code = main(["compare", *map(str, argv), "--format", "json"])
    return code, {r["metric"]: r for r in json.loads(capsys.readouterr().out)["rows"]}


def test_language_model_cells_judge_tokens_per_s(tmp_path, capsys):
    base, cand = sides(tmp_path, [lm_report(s) for s in (1000, 990, 1010, 1005)],
                       [lm_report(s) for s in (700, 690, 710, 705)])
    code, rows = rows_of(capsys, base, cand)
    assert code == 1
    tokens = rows["tokens/s"]
    assert tokens["verdict"] == "regression"
    assert tokens["baseline"] == 1002.5 * SEQ_LEN and tokens["candidate"] == 702.5 * SEQ_LEN
    assert tokens["change"] == "-29.9%"


def test_image_cells_have_no_tokens_row(tmp_path, capsys):
    a, b = write(tmp_path, "a", make_report()), write(tmp_path, "b", make_report())
    code, rows = rows_of(capsys, a, b)
    assert code == 0
    assert "tokens/s" not in rows and "samples/s" in rows


def test_tokens_threshold_is_its_own(tmp_path, capsys):
    base, cand = sides(tmp_path, [lm_report(s) for s in (1000, 990, 1010, 1005)],
                       [lm_report(s) for s in (930, 920, 940, 935)])
    code, rows = rows_of(capsys, base, cand, "--threshold", "tokens_per_s=5")
    assert code == 1
    assert rows["tokens/s"]["verdict"] == "regression" and rows["samples/s"]["verdict"] == "ok"
    code, rows = rows_of(capsys, base, cand, "--threshold", "throughput.tokens_per_s=10")
    assert code == 0 and rows["tokens/s"]["threshold"] == "10%"


def test_window_repeats_become_tokens_replicates():
    """One report's samples/s windows, in tokens: tokens per sample is one number per report."""
    r = lm_report(1000.0)
    r["repeats"] = {"unit": "window", "count": 3, "samples_per_s": [990.0, 1000.0, 1010.0]}
    assert replicates([r], BY_NAME["tokens_per_s"]) == [990.0 * SEQ_LEN, 1000.0 * SEQ_LEN, 1010.0 * SEQ_LEN]
    assert replicates([make_report()], BY_NAME["tokens_per_s"]) == []


def test_a_real_tiny_gpt_run_against_itself_passes_on_tokens(tmp_path, capsys):
    with one_torch_thread():  # a busy 2-core machine: one thread keeps the run short
        assert main(["run", str(REPO / "configs/tiny_gpt.yaml"), "train.max_steps=6", "measure.warmup_steps=2",
                     "measure.measure_peak=false", "output.progress=false", "output.save_model=false",
                     "--output", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    code, rows = rows_of(capsys, tmp_path / "run", tmp_path / "run")
    assert code == 0
    assert rows["tokens/s"]["verdict"] == "ok" and rows["tokens/s"]["change"] == "+0.0%"
    assert rows["tokens/s"]["baseline"] == pytest.approx(rows["samples/s"]["baseline"] * 64)
