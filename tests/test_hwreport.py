"""harness report: tables and embedded plots from reports of several machines."""

from __future__ import annotations

import base64
import re

import pytest

from harness import hwreport
from harness.cli import main
from synthetic_reports import CPU_A, GPU_B, make_report, write


def two_machines(folder):
    for bs, sps in ((32, 800.0), (64, 1200.0), (128, 1500.0)):
        write(folder / "cpu", f"bs{bs}", make_report(batch_size=bs, samples_per_s=sps, peak_rss_mb=700 + bs))
        write(folder / "gpu", f"bs{bs}", make_report(batch_size=bs, samples_per_s=sps * 20, machine=GPU_B,
                                                     peak_rss_mb=2000 + bs, mfu=0.1 + bs / 1000))
    write(folder / "cpu", "workers2", make_report(num_workers=2, time_to_target_s=None))
    write(folder / "cpu", "ddp", make_report(distributed_type="MULTI_CPU", world_size=2))
    write(folder / "cpu", "failed", make_report(batch_size=4096, status="failed"))


@pytest.mark.slow  # matplotlib's import and five renders: ~4-5 s on a small machine
def test_report_has_embedded_plots_and_tables_per_machine(tmp_path, capsys):
    two_machines(tmp_path / "runs")
    code = main(["report", str(tmp_path / "runs" / "cpu"), str(tmp_path / "runs" / "gpu"),
                 "--output", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    page = (tmp_path / "out" / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 5  # samples/s, memory, data wait, accuracy, MFU
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    for text in (CPU_A["cpu_model"], GPU_B["gpu_model"], "MULTI_CPU x2", "24,000.0", "failed", "<table>"):
        assert text in page
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"## {GPU_B['gpu_model']}" in md and f"## {CPU_A['cpu_model']}" in md
    assert "(plots/samples_per_s.png)" in md and (tmp_path / "out" / "plots" / "samples_per_s.png").is_file()


def test_without_matplotlib_tables_are_still_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hwreport, "_figure", lambda: None)
    write(tmp_path / "runs", "a", make_report())
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib is not installed" in err
    page = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png" not in page and "<table>" in page


def test_bad_report_exits_2(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("schema_version: 99\n")
    assert main(["report", str(tmp_path / "r.yaml"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "schema_version 99" in err
    assert not (tmp_path / "out").exists()
