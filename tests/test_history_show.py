"""harness history show (harness/history/show.py) on constructed store entries."""

import re
import subprocess
import sys
import types

import pytest

from harness.history.show import run_show, show

pytestmark = pytest.mark.usefixtures("one_thread")

NOISE = [1.00, 1.02, 0.98, 1.01, 0.99, 1.00, 1.01, 0.98, 1.02, 0.99, 1.00, 1.01]


def entries(fall_from=6):
    out = []
    for i, n in enumerate(NOISE):
        v = 1000.0 * n * (0.7 if i >= fall_from else 1.0)
        out.append({"workload": "w" * 64, "workload_name": "digits_cnn", "mode": "cpu ×1", "machine": "vm",
                    "commit": f"{i:02d}" + "c" * 38, "dirty": False, "branch": "main", "order": i,
                    "time": f"2026-12-06T10:{i:02d}:00Z", "added_at": "2026-12-06T11:00:00Z",
                    "source": f"runs/{i}/report.yaml", "id": f"id{i}",
                    "figures": {"samples_per_s": {"value": v, "replicates": [v * 0.99, v, v * 1.01],
                                                  "unit": "samples/s", "higher_is_better": True},
                                "peak_rss_mb": {"value": 500.0 + i % 2, "replicates": [500.0 + i % 2],
                                                "unit": "MB", "higher_is_better": False}}})
    return out


def test_one_chart_per_series_with_the_change_marked_by_its_commit(tmp_path):
    show(entries(), tmp_path)
    page = (tmp_path / "history.html").read_text()
    assert page.count("<svg") == 2  # samples_per_s and peak_rss_mb of one workload, mode, machine
    seventh = entries()[6]["commit"]
    assert re.findall(r"class='change' data-commit='(\w+)'", page) == [seventh]
    assert f">{seventh[:7]} -30.0%" in page or f">{seventh[:7]} -29." in page
    md = (tmp_path / "history.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| digits_cnn")]
    assert len(table) == 1 and seventh in table[0] and "samples_per_s" in table[0]
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert len(plots) == 2 and all(f"(plots/{p})" in md for p in plots)


def test_no_change_says_so(tmp_path):
    show(entries(fall_from=99), tmp_path)
    assert "No change found." in (tmp_path / "history.md").read_text()
    assert "class='change'" not in (tmp_path / "history.html").read_text()


def test_run_show_reads_the_store_and_refuses_a_file_as_output(monkeypatch, tmp_path, capsys):
    stub = types.ModuleType("harness.history.store")
    stub.read_entries = lambda path: (entries(), ["x.yaml: damaged, skipped"])
    monkeypatch.setitem(sys.modules, "harness.history.store", stub)
    assert run_show(tmp_path / "store", tmp_path / "out") == 0
    assert (tmp_path / "out" / "history.html").is_file()
    assert "damaged" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    from harness.errors import BadInput
    with pytest.raises(BadInput, match="is a file"):
        run_show(tmp_path / "store", tmp_path / "file")


def test_show_and_check_import_no_torch():
    code = ("import sys, harness.history.show, harness.history.check; "
            "print(sorted(m for m in ('torch', 'accelerate', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
