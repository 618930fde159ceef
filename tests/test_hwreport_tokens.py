"""harness report on language-model reports: tokens/s shown beside samples/s, image workloads as before."""

from __future__ import annotations

import csv
from pathlib import Path

from harness.cli import main
from support.reports import GPU_B, make_report, write

SEQ_LEN = 64


def lm_report(samples_per_s: float, **kw) -> dict:
    r = make_report(samples_per_s=samples_per_s, **kw)
    r["config_hash"] = "hash-tiny-gpt"
    r["throughput"]["tokens_per_s"] = samples_per_s * SEQ_LEN
    return r


def _report(tmp_path: Path, capsys) -> tuple[list[dict], str]:
    out = tmp_path / "out"
    assert main(["report", str(tmp_path / "runs"), "--output", str(out), "--no-plots"]) == 0, capsys.readouterr().err
    with open(out / "report.csv", newline="") as f:
        return list(csv.DictReader(f)), (out / "report.md").read_text()


def test_language_model_rows_show_tokens_per_s(tmp_path, capsys):
    for i, s in enumerate((1000.0, 990.0, 1010.0)):
        write(tmp_path / "runs" / "a", f"r{i}", lm_report(s))
        write(tmp_path / "runs" / "b", f"r{i}", lm_report(2 * s, machine=GPU_B))
    rows, md = _report(tmp_path, capsys)
    assert len(rows) == 2 and len({r["workload_id"] for r in rows}) == 1  # one workload, two machines
    by_rate = sorted(rows, key=lambda r: float(r["tokens_per_s"]))
    assert [float(r["tokens_per_s"]) for r in by_rate] == [1000.0 * SEQ_LEN, 2000.0 * SEQ_LEN]
    assert all(float(r["tokens_per_s"]) == float(r["samples_per_s"]) * SEQ_LEN for r in rows)
    assert all(r["tokens_per_s_low"] and r["tokens_per_s_coverage"] for r in rows)
    assert "| tokens/s | tokens/s interval (coverage) |" in md
    assert "128,000" in md or "128000" in md


def test_image_workloads_have_no_tokens_column(tmp_path, capsys):
    write(tmp_path / "runs" / "a", "r0", make_report(samples_per_s=1000.0))
    rows, md = _report(tmp_path, capsys)
    assert rows[0]["tokens_per_s"] == "" and "tokens/s" not in md


def test_a_hardware_suite_folder_shows_tokens_for_its_language_model_only(tmp_path, capsys):
    """configs/sweeps/hardware.yaml's cells side by side: gpt_small's row carries tokens/s, the
    image workloads' rows leave it empty."""
    for name, model, data, r in (("hw_gpt_small", "gpt", "text", lm_report(11.4)),
                                 ("hw_resnet50_224", "torchvision:resnet50", "fake", make_report(samples_per_s=5.3))):
        r["name"] = r["config"]["name"] = name
        r["config"].update(model={"name": model}, data={"name": data})
        r["config_hash"] = f"hash-{name}"
        write(tmp_path / "runs" / "a", name, r)
    rows, md = _report(tmp_path, capsys)
    by_tokens = {bool(r["tokens_per_s"]): r for r in rows}
    assert len(rows) == 2 and set(by_tokens) == {True, False}
    assert float(by_tokens[True]["tokens_per_s"]) == 11.4 * SEQ_LEN
    assert float(by_tokens[False]["samples_per_s"]) == 5.3
    assert "tokens/s" in md
