"""harness report: machines compared per workload, scaling, markdown/HTML/CSV that agree.

tests/data/hwreport holds real reports (tests/data/hwreport/README.md says how they
were made): machine_a/ and machine_b/ ran digits mlp and cnn with 3 timed windows
each, and machine_b/ was relabelled as another machine in its environment block;
scaling/ ran digits mlp on 1 process (batch 64) and 2 gloo processes (batch 64 and 32).
"""

from __future__ import annotations

import base64
import copy
import csv
import re
import shutil
import statistics
from pathlib import Path

import pytest

from harness.cli import main
from harness.hwreport import charts, identity
from harness.hwreport.compare_machines import Estimate
from harness.hwreport.scaling import STRONG, WEAK, Point, series_of
from harness.report.io import load_report, write_report
from support.reports import CPU_A, GPU_B, make_report, write

DATA = Path(__file__).parent / "data" / "hwreport"
MACHINE_A, MACHINE_B = "AMD EPYC, 2 CPUs", "Intel Xeon Gold 6338, 8 CPUs"


def _run(args: list[str], capsys) -> None:
    code = main(["report", *args])
    assert code == 0, capsys.readouterr().err


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _median_sps(path: Path) -> float:
    return statistics.median(load_report(path)["repeats"]["samples_per_s"])


@pytest.fixture
def two_machines(tmp_path):
    """The recorded reports of both machines, copied so a test may edit them."""
    for side in ("machine_a", "machine_b"):
        shutil.copytree(DATA / side, tmp_path / side)
    return tmp_path


def test_speedup_per_workload_from_real_reports(two_machines, tmp_path, capsys):
    _run([str(two_machines / "machine_a"), str(two_machines / "machine_b"), "--output", str(tmp_path / "out"),
          "--no-plots"], capsys)
    rows = _csv(tmp_path / "out" / "report.csv")
    assert len(rows) == 4 and len({r["workload_id"] for r in rows}) == 2  # mlp and cnn, one row per machine
    for model in ("mlp", "cnn"):
        a, b = (two_machines / side / model / "report.yaml" for side in ("machine_a", "machine_b"))
        mine = [r for r in rows if r["reports"].endswith(f"{model}/report.yaml")]
        assert {r["workload_id"] for r in mine} == {identity.workload_id(load_report(a))}
        ref, other = sorted(mine, key=lambda r: r["machine"] != MACHINE_A)
        assert (ref["machine"], ref["reference"], float(ref["speedup"])) == (MACHINE_A, "True", 1.0)
        assert other["machine"] == MACHINE_B and other["mode"] == "cpu ×1"
        assert float(other["speedup"]) == pytest.approx(_median_sps(b) / _median_sps(a), rel=1e-12)
        # Three windows a side: the median's interval is the range (75%), the ratio's at least 50%.
        assert float(other["speedup_low"]) < float(other["speedup"]) < float(other["speedup_high"])
        assert float(other["speedup_coverage_at_least"]) == 0.5
    summary = _csv(tmp_path / "out" / "summary.csv")
    b_row = next(r for r in summary if r["machine"] == MACHINE_B)
    ups = [float(r["speedup"]) for r in rows if r["machine"] == MACHINE_B]
    assert float(b_row["geomean_speedup"]) == pytest.approx((ups[0] * ups[1]) ** 0.5)
    assert b_row["workloads"] == "2"


def test_a_workload_never_run_in_the_reference_mode_is_measured_against_the_reference_machine(
        two_machines, tmp_path, capsys):
    """The hardware suite's mobilenet runs channels-last on every machine: its mode is never
    the plain 'cpu ×1' of the other workloads, yet machine B must still get its speed-up."""
    for side in ("machine_a", "machine_b"):
        path = two_machines / side / "cnn" / "report.yaml"
        report = load_report(path)
        report["config"]["runtime"]["channels_last"] = True
        write_report(path, report)
    _run([str(two_machines / "machine_a"), str(two_machines / "machine_b"), "--output", str(tmp_path / "out"),
          "--no-plots"], capsys)
    rows = [r for r in _csv(tmp_path / "out" / "report.csv") if r["mode"] == "cpu ×1 channels-last"]
    ref, other = sorted(rows, key=lambda r: r["machine"] != MACHINE_A)
    assert ref["reference"] == "True" and float(ref["speedup"]) == 1.0
    a, b = (two_machines / side / "cnn" / "report.yaml" for side in ("machine_a", "machine_b"))
    assert float(other["speedup"]) == pytest.approx(_median_sps(b) / _median_sps(a), rel=1e-12)
    # An explicit --baseline-mode is kept to the letter: that workload then has no reference.
    _run([str(two_machines / "machine_a"), str(two_machines / "machine_b"), "--output", str(tmp_path / "out2"),
          "--no-plots", "--baseline-mode", "cpu ×1"], capsys)
    rows = [r for r in _csv(tmp_path / "out2" / "report.csv") if r["mode"] == "cpu ×1 channels-last"]
    assert {r["speedup"] for r in rows} == {""}


def test_workload_is_the_recipe_not_the_name_and_scenarios_stay_apart(two_machines, tmp_path, capsys):
    """The old report told rows apart by ``name``: a renamed run joined the wrong curve."""
    path = two_machines / "machine_b" / "cnn" / "report.yaml"
    renamed = load_report(path)
    renamed["name"] = renamed["config"]["name"] = "digits_mlp"  # the cnn, under the mlp's name
    write_report(path, renamed)
    inference = copy.deepcopy(load_report(two_machines / "machine_b" / "mlp" / "report.yaml"))
    inference["scenario"] = "inference"
    write_report(two_machines / "machine_b" / "mlp_inference" / "report.yaml", inference)
    _run([str(two_machines), "--output", str(tmp_path / "out"), "--no-plots"], capsys)
    rows = _csv(tmp_path / "out" / "report.csv")
    cnn = [r for r in rows if "/cnn/" in r["reports"]]
    assert len({r["workload_id"] for r in cnn}) == 1 and len(cnn) == 2  # still one workload, both machines
    alone = [r for r in rows if "mlp_inference" in r["reports"]]
    assert len(alone) == 1 and alone[0]["scenario"] == "inference" and alone[0]["speedup"] == ""
    assert len({r["workload_id"] for r in rows}) == 3


def test_baseline_machine_and_labels(two_machines, tmp_path, capsys):
    out = tmp_path / "out"
    _run([str(two_machines), "--output", str(out), "--no-plots", "--label", f"{two_machines / 'machine_b'}=box B",
          "--baseline-machine", "box B"], capsys)
    rows = _csv(out / "report.csv")
    assert {r["machine"] for r in rows} == {MACHINE_A, "box B"}
    assert all(r["reference"] == str(r["machine"] == "box B") for r in rows)
    a_cnn = next(r for r in rows if r["machine"] == MACHINE_A and "/cnn/" in r["reports"])
    cnn = [two_machines / s / "cnn" / "report.yaml" for s in ("machine_a", "machine_b")]
    assert float(a_cnn["speedup"]) == pytest.approx(_median_sps(cnn[0]) / _median_sps(cnn[1]))
    assert main(["report", str(two_machines), "--output", str(tmp_path / "o2"), "--baseline-machine", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--baseline-machine" in err and MACHINE_A in err
    assert not (tmp_path / "o2").exists()
    assert main(["report", str(two_machines), "--output", str(tmp_path / "o3"), "--baseline-mode", "gpu ×1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--baseline-mode" in err and "cpu ×1" in err


def test_markdown_html_and_csv_agree(two_machines, tmp_path, capsys):
    out = tmp_path / "out"
    _run([str(two_machines), "--output", str(out), "--no-plots"], capsys)
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for row in _csv(out / "report.csv"):
        sps = f"{float(row['samples_per_s']):,.1f}"
        up = "reference" if row["reference"] == "True" else f"×{float(row['speedup']):.2f}"
        md_line = f"| {row['machine']} | {row['mode']} | 3 | {sps} |"
        assert md_line in md and up in md.split(md_line, 1)[1].splitlines()[0]
        assert f"<td>{row['machine']}</td><td>{row['mode']}</td><td class=n>3</td><td class=n>{sps}</td>" in page
    for doc in (md, page):
        assert doc.count("digits_cnn: cnn on digits, batch 64") >= 1 and "Machines" in doc


def test_scaling_from_recorded_reports(tmp_path, capsys):
    _run([str(DATA / "scaling"), "--output", str(tmp_path / "out"), "--no-plots"], capsys)
    rows = _csv(tmp_path / "out" / "scaling.csv")
    sps = {p: load_report(DATA / "scaling" / p)["throughput"]["samples_per_s"] for p in ("n1_b64", "n2_b64", "n2_b32")}
    by = {(r["scaling"], r["processes"]): r for r in rows}
    assert set(by) == {(WEAK, "1"), (WEAK, "2"), (STRONG, "1"), (STRONG, "2")}
    weak, strong = by[(WEAK, "2")], by[(STRONG, "2")]
    assert (weak["per_device_batch"], weak["global_batch"]) == ("64", "128")
    assert (strong["per_device_batch"], strong["global_batch"]) == ("32", "64")
    assert float(weak["speedup"]) == pytest.approx(sps["n2_b64"] / sps["n1_b64"])
    assert float(weak["efficiency"]) == pytest.approx(sps["n2_b64"] / sps["n1_b64"] / 2)
    assert float(strong["speedup"]) == pytest.approx(sps["n2_b32"] / sps["n1_b64"])
    assert float(by[(WEAK, "1")]["efficiency"]) == 1.0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "weak scaling (per-device batch 64)" in md and "strong scaling (global batch 64)" in md


def test_two_nodes_of_one_process_are_a_point_of_their_own_not_a_replicate(tmp_path, capsys):
    """2 processes on one node and 1 on each of two nodes are two layouts of world size 2."""
    shutil.copytree(DATA / "scaling", tmp_path / "in")
    two_nodes = load_report(tmp_path / "in" / "n2_b64" / "report.yaml")
    two_nodes["per_rank"] = [{**r, "node_rank": r["rank"]} for r in two_nodes["per_rank"]]
    two_nodes["per_node"] = [{"node_rank": r["rank"], "hostname": "vm", "ranks": [r["rank"]],
                              "samples_per_s": 1000.0} for r in two_nodes["per_rank"]]
    two_nodes["throughput"]["samples_per_s"] /= 2  # a slower interconnect, say
    two_nodes["repeats"]["samples_per_s"] = [v / 2 for v in two_nodes["repeats"]["samples_per_s"]]
    write_report(tmp_path / "in" / "n2x1_b64" / "report.yaml", two_nodes)
    _run([str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-plots"], capsys)
    weak = [r for r in _csv(tmp_path / "out" / "scaling.csv") if r["scaling"] == WEAK]
    assert [(r["processes"], r["nodes"]) for r in weak] == [("1", "1"), ("2", "1"), ("2", "2")]
    one_node = load_report(DATA / "scaling" / "n2_b64" / "report.yaml")["throughput"]["samples_per_s"]
    assert float(weak[1]["samples_per_s"]) == pytest.approx(one_node)  # not the median of both layouts
    assert float(weak[2]["samples_per_s"]) == pytest.approx(one_node / 2)
    assert "| 2 (2 nodes) |" in (tmp_path / "out" / "report.md").read_text()


def test_ranks_are_grouped_by_node_and_the_slowest_named():
    from harness.hwreport.ranks import nodes

    def rank(r, node, host, samples, window):
        return {"rank": r, "node_rank": node, "hostname": host, "samples": samples, "window_s": window}

    # Two nodes of two ranks (as torchrun --nnodes 2 numbers them); rank 3 is the straggler.
    got = nodes([rank(0, 0, "a", 640, 1.0), rank(1, 0, "a", 640, 1.1), rank(2, 1, "b", 640, 1.0),
                 rank(3, 1, "b", 640, 2.0)])
    assert [(n["node_rank"], n["hostname"], [r["rank"] for r in n["rows"]]) for n in got] == \
        [(0, "a", [0, 1]), (1, "b", [2, 3])]
    assert [n["slowest_rank"] for n in got] == [1, 3]
    assert [n["samples_per_s"] for n in got] == [pytest.approx(1280 / 1.1), pytest.approx(1280 / 2.0)]


def test_the_report_shows_multi_process_runs_ranks_by_node(tmp_path, capsys):
    _run([str(DATA / "scaling"), "--output", str(tmp_path / "out"), "--no-plots"], capsys)
    md = (tmp_path / "out" / "report.md").read_text()
    section = md[md.index("## Ranks by node"):md.index("## Machines")]
    # The two 2-process runs, one node each; the 1-process run has no ranks to group.
    assert section.count("| ddp gloo ×2 | 0 | vm | 0, 1 |") == 2 and "cpu ×1" not in section
    assert "Ranks by node" in (tmp_path / "out" / "report.html").read_text()


def test_scaling_series_on_numbers():
    def pt(n, bs, sps):
        return Point(n, bs, n * bs, Estimate(sps))

    found = series_of([pt(2, 64, 100.0), pt(4, 64, 180.0), pt(8, 64, 300.0), pt(4, 32, 150.0), pt(8, 16, 160.0)])
    names = [s.name for s in found]
    assert names == ["weak scaling (per-device batch 64)", "strong scaling (global batch 128)"]
    weak, strong = found
    assert [p.processes for p in weak.points] == [2, 4, 8]  # no 1-process run: against the fewest, 2
    assert [round(p.speedup, 3) for p in weak.points] == [1.0, 1.8, 3.0]
    assert [round(p.efficiency, 3) for p in weak.points] == [1.0, 0.9, 0.75]  # 3.0 / (8 / 2)
    assert [(p.processes, p.per_device_batch) for p in strong.points] == [(2, 64), (4, 32), (8, 16)]
    assert [round(p.efficiency, 3) for p in strong.points] == [1.0, 0.75, 0.4]  # 150/100/(4/2), 160/100/(8/2)


def test_modes_are_named_for_people():
    def report(**distributed):
        return {"distributed": distributed, "config": {"loader": {"num_workers": 0}}}

    assert identity.mode_label(report(distributed_type="NO", world_size=1, device="cpu", precision="no")) == "cpu ×1"
    assert identity.mode_label(report(distributed_type="MULTI_CPU", world_size=2, backend="gloo",
                                      device="cpu:0", precision="no")) == "ddp gloo ×2"
    gpu = report(distributed_type="NO", world_size=1, device="cuda:0", precision="bf16")
    gpu["compile"] = {"enabled": True, "backend": "inductor"}
    assert identity.mode_label(gpu) == "gpu ×1 bf16 compiled"
    gpu["config"]["loader"].update(num_workers=4, pin_memory=True)
    assert identity.mode_label(gpu) == "gpu ×1 bf16 compiled workers 4 pinned"
    assert identity.family_mode(gpu) == "gpu bf16 compiled workers 4 pinned"


def test_colours_are_fixed_per_machine_and_mode():
    pairs = [("A", "cpu ×1"), ("A", "ddp gloo ×2"), ("B", "cpu ×1")]
    colour = charts.colours(pairs)
    assert len(set(colour.values())) == 3 and colour == charts.colours(pairs)
    assert colour[("B", "cpu ×1")] == charts.colours([*pairs, ("C", "gpu ×1")])[("B", "cpu ×1")]


def _fills(svg: str) -> set[str]:
    return {c for c in re.findall(r"fill: ?(#[0-9a-f]{6})", svg) if c in charts.PALETTE}


@pytest.mark.slow  # matplotlib's import and eight charts: seconds on a busy machine
def test_every_panel_gives_a_machine_and_mode_one_colour(two_machines, tmp_path, capsys):
    shutil.copytree(DATA / "scaling", two_machines / "scaling")
    out = tmp_path / "out"
    _run([str(two_machines), "--output", str(out)], capsys)
    page = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)'", page)
    svgs = [base64.b64decode(i).decode() for i in images]
    assert len(svgs) == 1 + 4 + 1  # summary, one per workload, one scaling family
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    rows = _csv(out / "report.csv")
    order = [(r["machine"], r["mode"]) for r in _csv(out / "summary.csv")]
    colour = charts.colours(order)
    for wid in {r["workload_id"] for r in rows}:
        svg = (out / "plots" / f"workload_{wid}.svg").read_text()
        pairs = {(r["machine"], r["mode"]) for r in rows if r["workload_id"] == wid}
        assert _fills(svg) == {colour[p] for p in pairs}, wid  # bars and legend: the pair's colour, no other
        assert all(f"{m} · {mode}" in svg for m, mode in pairs)  # the legend names each
        assert svg in svgs
    summary = (out / "plots" / "summary_speedup.svg").read_text()
    assert _fills(summary) == {colour[p] for p in order}
    scaling = (out / "plots" / "scaling_0.svg").read_text()
    strokes = {c for c in re.findall(r"stroke: ?(#[0-9a-f]{6})", scaling) if c in charts.PALETTE}
    assert strokes == {colour[(MACHINE_A, "cpu ×1")]}  # the family's lines: its 1-process pair's colour
    assert scaling.count("weak scaling (per-device batch 64)") == 2  # a legend in each of the two panels
    md = (out / "report.md").read_text()
    assert "(plots/summary_speedup.svg)" in md and "(plots/scaling_0.svg)" in md


def test_synthetic_machines_and_failed_cells(tmp_path, capsys):
    for bs, sps in ((32, 800.0), (64, 1200.0)):
        write(tmp_path / "cpu", f"bs{bs}", make_report(batch_size=bs, samples_per_s=sps))
        write(tmp_path / "gpu", f"bs{bs}", make_report(batch_size=bs, samples_per_s=sps * 20, machine=GPU_B))
    write(tmp_path / "cpu", "ddp", make_report(distributed_type="MULTI_CPU", world_size=2, samples_per_s=2000.0))
    write(tmp_path / "cpu", "failed", make_report(batch_size=4096, status="failed"))
    _run([str(tmp_path / "cpu"), str(tmp_path / "gpu"), "--output", str(tmp_path / "out"), "--no-plots"], capsys)
    rows = _csv(tmp_path / "out" / "report.csv")
    gpu = [r for r in rows if r["machine"] == GPU_B["gpu_model"]]
    assert [(r["mode"], float(r["speedup"])) for r in gpu] == [("gpu ×1", 20.0), ("gpu ×1", 20.0)]
    ddp = next(r for r in rows if r["mode"] == "ddp gloo ×2")
    assert float(ddp["speedup"]) == pytest.approx(2000.0 / 1200.0)
    failed = next(r for r in rows if r["not_completed"] == "1")
    assert failed["replicates"] == "0" and failed["samples_per_s"] == ""
    page = (tmp_path / "out" / "report.html").read_text()
    assert f"{CPU_A['cpu_model']}, 16 CPUs" in page and "(+1 not completed)" in page


def test_without_matplotlib_tables_are_still_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(charts, "figure_class", lambda: None)
    write(tmp_path / "runs", "a", make_report())
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib is not installed" in err
    page = (tmp_path / "out" / "report.html").read_text()
    assert "data:image" not in page and "<table>" in page


def test_bad_report_exits_2(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("schema_version: 99\n")
    assert main(["report", str(tmp_path / "r.yaml"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "schema_version 99" in err
    assert not (tmp_path / "out").exists()


def test_bad_label_exits_2(tmp_path, capsys):
    write(tmp_path / "runs", "a", make_report())
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "out"), "--label", "nolabel"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--label" in err and "PATH=NAME" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- conditions: contention, threads

def _md_row(md: str, start: str) -> str:
    """The last table row that starts so: the workload's row comes after the summary's."""
    return [line for line in md.splitlines() if line.startswith(start)][-1]


def test_a_speedup_from_a_contended_run_is_flagged_in_markdown_html_and_csv(tmp_path, capsys):
    write(tmp_path / "quiet", "r", make_report(samples_per_s=1000.0))
    write(tmp_path / "busy", "r", make_report(samples_per_s=400.0, machine=GPU_B, contention="contended", foreign=0.62))
    out = tmp_path / "out"
    _run([str(tmp_path / "quiet"), str(tmp_path / "busy"), "--output", str(out), "--no-plots"], capsys)
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    busy = _md_row(md, f"| {GPU_B['gpu_model']} | gpu ×1 |")
    assert "| contended 62% |" in busy and "×0.40 (not a finding: this row contended (contended 62%))" in busy
    assert "| quiet |" in _md_row(md, f"| {CPU_A['cpu_model']}, 16 CPUs | cpu ×1 |")
    assert "1 of 2 reports were timed on a contended machine" in md
    assert "<td>contended 62%</td>" in page and "×0.40 (not a finding: this row contended" in page
    assert "1 of 2 reports were timed on a contended machine" in page
    row = next(r for r in _csv(out / "report.csv") if r["machine"] == GPU_B["gpu_model"])
    assert row["timing_conditions"] == "contended 62%" and "this row contended" in row["speedup_doubts"]
    summary = _csv(out / "summary.csv")
    assert [r["speedups_not_findings"] for r in summary] == ["0", "1"]


def test_a_superlinear_efficiency_is_shown_with_its_reason(tmp_path, capsys):
    """The afternoon of issue 24: one process of 2 threads on 2 busy cores, two ranks of 1 thread each."""
    write(tmp_path / "in", "n1", make_report(samples_per_s=100.0, torch_threads=2, cpus=2.0,
                                             contention="contended", foreign=0.6))
    write(tmp_path / "in", "n2", make_report(samples_per_s=530.0, torch_threads=1, cpus=2.0, world_size=2,
                                             distributed_type="MULTI_CPU"))
    out = tmp_path / "out"
    _run([str(tmp_path / "in"), "--output", str(out), "--no-plots"], capsys)
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    two = _md_row(md, "| weak scaling (per-device batch 64) | 2 |")
    assert "265% (not a finding: above 100%" in two
    assert "the base run contended (contended 60%, 2 threads on 0.8 free CPUs)" in two
    assert "threads per process differ (2 the base run, 1 here)" in two
    assert "| 1, 2 |" in two and "| 2, 2 |" in _md_row(md, "| weak scaling (per-device batch 64) | 1 |")
    assert "265% (not a finding: above 100%" in page
    weak = [r for r in _csv(out / "scaling.csv") if r["scaling"] == WEAK]
    assert weak[0]["efficiency_doubts"] == "" and weak[1]["efficiency_doubts"].startswith("above 100%")


def test_runs_of_other_total_threads_are_said_to_differ(tmp_path, capsys):
    write(tmp_path / "in", "n1", make_report(samples_per_s=100.0, torch_threads=1))
    write(tmp_path / "in", "n2", make_report(samples_per_s=150.0, torch_threads=4, world_size=2,
                                             distributed_type="MULTI_CPU"))
    out = tmp_path / "out"
    _run([str(tmp_path / "in"), "--output", str(out), "--no-plots"], capsys)
    md = (out / "report.md").read_text()
    assert "The runs differ in total threads (1, 8)" in md
    assert "75% (not a finding: threads per process differ (1 the base run, 4 here); total threads differ" \
        in _md_row(md, "| weak scaling (per-device batch 64) | 2 |")


def test_reports_without_the_blocks_are_unknown_and_not_flagged(tmp_path, capsys):
    write(tmp_path / "a", "r", make_report(contention=None))
    write(tmp_path / "b", "r", make_report(contention=None, machine=GPU_B, samples_per_s=3000.0))
    _run([str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "out"), "--no-plots"], capsys)
    md = (tmp_path / "out" / "report.md").read_text()
    gpu = _md_row(md, f"| {GPU_B['gpu_model']} | gpu ×1 |")
    assert "| contention unknown |" in gpu and "| ×3.00 |" in gpu and "quiet" not in gpu
    assert "2 of 2 reports predate the contention measurement" in md


def test_threads_that_differ_flag_a_speedup_on_one_machine_not_across_machines(tmp_path, capsys):
    write(tmp_path / "cpu", "n1", make_report(samples_per_s=100.0, torch_threads=2))
    write(tmp_path / "cpu", "n2", make_report(samples_per_s=473.0, torch_threads=1, world_size=2,
                                              distributed_type="MULTI_CPU"))
    write(tmp_path / "gpu", "g", make_report(samples_per_s=5000.0, torch_threads=8, machine=GPU_B))
    out = tmp_path / "out"
    _run([str(tmp_path / "cpu"), str(tmp_path / "gpu"), "--output", str(out), "--no-plots"], capsys)
    doubted = {(r["machine"], r["mode"]): r["speedup_doubts"] for r in _csv(out / "report.csv")}
    assert doubted[(f"{CPU_A['cpu_model']}, 16 CPUs", "ddp gloo ×2")] == \
        "threads per process differ (2 the reference, 1 this row)"
    assert doubted[(GPU_B["gpu_model"], "gpu ×1")] == ""  # another machine: its own cores, its own threads


@pytest.mark.parametrize("value, shown", [(0.5, "0.5"), (0.2, "0.2"), (12.34, "12.3"), (4682.2, "4,682")])
def test_bar_labels_keep_three_significant_figures(value, shown):
    assert charts.rate_label(value) == shown


def test_a_slow_workload_reads_its_figures_in_tables_and_bars(tmp_path, capsys):
    for name, sps, machine in (("a", 0.5, CPU_A), ("b", 0.2, GPU_B)):
        write(tmp_path / name, "r", make_report(samples_per_s=sps, machine=machine))
    out = tmp_path / "out"
    _run([str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(out)], capsys)
    md = (out / "report.md").read_text()
    assert "| 1 | 0.5 |" in _md_row(md, f"| {CPU_A['cpu_model']}, 16 CPUs | cpu ×1 |")
    svg = next((out / "plots").glob("workload_*.svg")).read_text()
    labels = re.findall(r">\s+(×?[0-9.,]+)\s*<", svg)
    assert "0.5" in labels and "0.2" in labels and "×0.40" in labels
