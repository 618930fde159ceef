"""Contention during a timed window: the arithmetic on recorded numbers, the cgroup files,
the verdict, the peak cache's refusal, threads against cores, and one real run beside
two CPU-bound processes (the more load, the higher the fraction: that direction is safe
on a machine that is never idle)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from harness.measure import contention
from harness.measure.contention import CONTENDED_AT, Probe, Tally, Window
from support.paths import REPO


# Two CPUs' lines of a real /proc/stat (user nice system idle iowait irq softirq steal ...), 100 Hz.
PROC_STAT = """cpu  300 10 100 5000 20 5 5 40 0 0
cpu0 100 10 50 2500 10 5 5 30 0 0
cpu1 200 0 50 2500 10 0 0 10 0 0
intr 12345
ctxt 999
"""


def fake_probe(foreign_cpu_s: float, own_cpu_s: float = 1.0, wall_s: float = 1.0, cpus: int = 2,
               quota: float | None = None, steal_s: float = 0.0) -> Probe:
    """A probe whose every later reading is ``wall_s`` on, with the run's tree ``own_cpu_s``
    busier and the CPUs ``own_cpu_s + foreign_cpu_s`` busier (split over cpu0..)."""
    n = {"reads": 0}

    def stat() -> str:
        k = n["reads"]
        busy = (own_cpu_s + foreign_cpu_s) * k * 100 / cpus
        steal = steal_s * k * 100 / cpus
        return "".join(f"cpu{i} {busy:.0f} 0 0 1000 0 0 0 {steal:.0f}\n" for i in range(cpus))

    def own() -> float:
        return own_cpu_s * n["reads"]

    def clock() -> float:
        n["reads"] += 1  # clock is read last: the next reading is one step on
        return wall_s * (n["reads"] - 1)

    return Probe(cpus=set(range(cpus)), quota=quota, root_pid=os.getpid(), proc_stat=stat, own=own,
                 throttle=lambda: 0.5 * n["reads"], load=lambda: 1.0 + n["reads"], clock=clock)


def test_proc_stat_busy_and_steal_over_the_affinity_cpus_only():
    both = contention.parse_proc_stat(PROC_STAT)
    assert (both.busy_s, both.steal_s, both.cpus) == (pytest.approx(4.2), pytest.approx(0.4), 2)
    one = contention.parse_proc_stat(PROC_STAT, {1})  # cpu1: 200 + 50 busy, 10 steal
    assert (one.busy_s, one.steal_s, one.cpus) == (pytest.approx(2.5), pytest.approx(0.1), 1)
    assert contention.parse_proc_stat("intr 1\n") is None


def test_foreign_share_is_busy_minus_own_over_capacity_times_wall():
    with Window(fake_probe(foreign_cpu_s=1.0, own_cpu_s=1.0, wall_s=1.0, cpus=2)) as w:
        pass
    b = w.block()
    assert b["foreign_cpu_fraction"] == pytest.approx(0.5)  # one of two CPUs went to others
    assert b["verdict"] == "contended" and b["capacity_cpus"] == 2.0
    assert b["load_avg_start"] == 1.0 and b["load_avg_end"] == 2.0
    assert b["throttled_s"] == pytest.approx(0.5)
    assert b["steal_fraction"] == 0.0


def test_the_fraction_is_clamped_and_steal_is_apart():
    # The run's own tree counted busier than the CPUs (tick rounding): 0, never negative.
    with Window(fake_probe(foreign_cpu_s=-0.3, own_cpu_s=1.0)) as w:
        pass
    assert w.block()["foreign_cpu_fraction"] == 0.0
    with Window(fake_probe(foreign_cpu_s=5.0, own_cpu_s=1.0, steal_s=0.5)) as w:
        pass
    assert w.block()["foreign_cpu_fraction"] == 1.0
    assert w.block()["steal_fraction"] == pytest.approx(0.25)


def test_a_quota_below_the_affinity_is_the_capacity():
    with Window(fake_probe(foreign_cpu_s=0.3, own_cpu_s=1.0, cpus=2, quota=1.5)) as w:
        pass
    assert w.block()["capacity_cpus"] == 1.5
    assert w.block()["foreign_cpu_fraction"] == pytest.approx(0.2)


def test_segments_of_one_window_add_up():
    probe = fake_probe(foreign_cpu_s=0.6, own_cpu_s=1.0, wall_s=2.0)
    w = Window(probe)
    for _ in range(3):  # three epochs' segments, evaluation between them unprobed
        w.open()
        w.close()
        probe.read()
    b = w.block()
    assert b["window_s"] == pytest.approx(6.0)
    assert b["foreign_cpu_fraction"] == pytest.approx(0.15)  # 0.6 CPU-s every 2 s of 2 CPUs
    total = Tally(2.0)
    total.merge(w.tally)
    total.merge(w.tally)
    assert total.block()["foreign_cpu_fraction"] == pytest.approx(0.15) and total.wall_s == pytest.approx(12.0)


@pytest.mark.parametrize("foreign, wall, verdict", [
    (CONTENDED_AT - 0.01, 1.0, "quiet"), (CONTENDED_AT, 1.0, "contended"), (0.9, 1.0, "contended"),
    (0.9, contention.MIN_WALL_S / 2, "unknown"), (None, 5.0, "unknown")])
def test_verdict_threshold(foreign, wall, verdict):
    assert contention.verdict(foreign, wall) == verdict


def test_no_psutil_figure_reads_unknown():
    probe = fake_probe(foreign_cpu_s=1.0)
    probe.own = lambda: (_ for _ in ()).throw(RuntimeError("no psutil"))
    with Window(probe) as w:
        pass
    assert w.block()["foreign_cpu_fraction"] is None and w.block()["verdict"] == "unknown"


def test_the_worst_block_is_the_most_foreign():
    a, b = {"foreign_cpu_fraction": 0.1}, {"foreign_cpu_fraction": 0.7}
    assert contention.worst([a, None, b, {"foreign_cpu_fraction": None}]) is b
    assert contention.worst([None]) is None


# --- cgroups ------------------------------------------------------------------------------

def test_cgroup_v2_quota_is_the_tightest_of_the_chain(tmp_path):
    (tmp_path / "job" / "step").mkdir(parents=True)
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "job" / "step" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "job" / "step" / "cpu.stat").write_text("usage_usec 10\nthrottled_usec 2500000\n")
    assert contention.quota_cpus(tmp_path, "0::/job/step\n") == 1.5
    assert contention.throttled_s(tmp_path, "0::/job/step\n") == pytest.approx(2.5)
    assert contention.quota_cpus(tmp_path, "0::/job/step/missing\n") == 1.5  # a dir not there: its parent's


def test_cgroup_v1_quota_and_throttled_time(tmp_path):
    cpu = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("50000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    (cpu / "cpu.stat").write_text("nr_periods 4\nnr_throttled 2\nthrottled_time 3000000000\n")
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")  # the root: unlimited
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    lines = "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n"
    assert contention.quota_cpus(tmp_path, lines) == 0.5
    assert contention.throttled_s(tmp_path, lines) == pytest.approx(3.0)
    assert contention.capacity_cpus({0, 1, 2, 3}, 0.5) == 0.5
    assert contention.capacity_cpus({0, 1}, None) == 2.0


def test_no_cgroup_files_mean_no_quota(tmp_path):
    assert contention.quota_cpus(tmp_path, "0::/\n") is None
    assert contention.throttled_s(tmp_path, "0::/\n") is None


# --- the run's own processes ---------------------------------------------------------------

def test_other_local_ranks_are_the_runs_own(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert contention.launched_ranks() == 2
    assert contention.own_root_pid() == os.getppid()  # the launcher's agent, parent of every local rank
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert contention.own_root_pid() == os.getpid()


def test_a_busy_child_counts_as_the_runs_own():
    """A DataLoader worker is a child process: its CPU time is the run's, not foreign."""
    burn = "import time,sys\nwhile time.process_time() < 0.4: pass\nprint('done', flush=True)\ntime.sleep(30)"
    before = contention.tree_cpu_s(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"
        assert contention.tree_cpu_s(os.getpid()) - before >= 0.35  # 0.4 s, less a tick of rounding per figure
    finally:
        child.kill()
        child.wait()
    # Reaped: its time stays in the tree, through children_user/children_system.
    assert contention.tree_cpu_s(os.getpid()) - before >= 0.35  # 0.4 s, less a tick of rounding per figure


# --- the GPU ------------------------------------------------------------------------------

def fake_nvml(pids, fail_init=False):
    procs = [SimpleNamespace(pid=p, usedGpuMemory=2**30) for p in pids]

    def init():
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    return SimpleNamespace(nvmlInit=init, nvmlShutdown=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: i,
                           nvmlDeviceGetComputeRunningProcesses=lambda h: procs,
                           nvmlDeviceGetGraphicsRunningProcesses=lambda h: procs[:1])


def test_other_processes_holding_the_gpu_are_listed_and_ours_are_not():
    held = contention.device_holders(0, {100}, nvml=fake_nvml([100, 4242]))
    assert held == [{"pid": 4242, "used_memory_mb": 1024.0}]
    assert contention.device_holders(0, {100}, nvml=fake_nvml([], fail_init=True)) is None


def test_without_pynvml_there_is_nothing_to_say(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert contention.device_holders(0, {os.getpid()}) is None


# --- threads against cores -----------------------------------------------------------------

def test_threads_against_cores_and_free_cores():
    import torch

    from harness.measure.threads import start_warning, threads_block

    per = torch.get_num_threads()
    b = threads_block(capacity=float(per), processes=2, foreign=0.5)
    assert b["total_threads"] == 2 * per and b["oversubscribed"] is True
    assert b["free_cpus"] == pytest.approx(per / 2) and b["oversubscribed_free"] is True
    assert "threads on" in start_warning(b)
    alone = threads_block(capacity=float(per), processes=1, foreign=None)
    assert alone["oversubscribed"] is False and alone["oversubscribed_free"] is None
    assert start_warning(alone) is None


# --- the peak cache ------------------------------------------------------------------------

def test_a_peak_measured_under_contention_is_not_cached(monkeypatch, tmp_path):
    import torch
    import yaml

    from harness.measure import flops

    monkeypatch.setattr(flops, "_cache_file", lambda: tmp_path / "peak_flops.yaml")
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda device, dtype: 6e10)
    # Two CPU-bound processes beside it on two CPUs: 1.3 of 2 CPU-s went elsewhere.
    busy = lambda: fake_probe(foreign_cpu_s=1.3, own_cpu_s=0.7)  # noqa: E731
    monkeypatch.setattr(flops, "peak_probe", busy)
    peak, context = flops.measured_peak_flops(torch.device("cpu"), torch.float32, "busy-cpu")
    assert peak == 6e10 and context["contended"] is True
    assert context["contention"]["foreign_cpu_fraction"] == pytest.approx(0.65)
    assert not (tmp_path / "peak_flops.yaml").exists()
    # Quiet: cached, and read back without measuring again.
    monkeypatch.setattr(flops, "peak_probe", lambda: fake_probe(foreign_cpu_s=0.0))
    assert flops.measured_peak_flops(torch.device("cpu"), torch.float32, "busy-cpu")[1]["contended"] is False
    cached = yaml.safe_load((tmp_path / "peak_flops.yaml").read_text())
    assert list(cached.values())[0]["flops"] == 6e10 and list(cached.values())[0]["foreign_cpu_fraction"] == 0.0


# --- the report blocks ---------------------------------------------------------------------

def test_the_meter_writes_a_block_per_window_and_one_for_all():
    import torch

    from harness.measure.aggregate import aggregate
    from harness.measure.config import MeasureConfig
    from harness.measure.meter import Meter

    meter = Meter(MeasureConfig(warmup_steps=1, window_steps=2, repeats=2), torch.device("cpu"))
    meter.probe = fake_probe(foreign_cpu_s=0.8, own_cpu_s=1.0)
    for k in range(2):
        meter.windows[k].contention = Tally(meter.probe.capacity)
    for _ in meter.steps([(torch.zeros(4, 3), torch.zeros(4))] * 5):
        pass
    report = aggregate([meter.summary()], 4)
    assert report["contention"]["foreign_cpu_fraction"] == pytest.approx(0.4)
    assert [b["verdict"] for b in report["repeats"]["contention"]] == ["contended", "contended"]


def test_whole_run_repeats_keep_each_block_and_the_worst(tmp_path):
    from harness.run.repeats import combine
    from support.reports import make_report as synthetic

    reports = []
    for rate, foreign in ((100.0, 0.05), (90.0, 0.6), (95.0, 0.1)):
        r = synthetic(samples_per_s=rate)
        r["contention"] = {"foreign_cpu_fraction": foreign, "verdict": contention.verdict(foreign, 5.0),
                           "capacity_cpus": 2.0}
        reports.append(r)
    plan = {"config": reports[0]["config"], "config_hash": reports[0]["config_hash"],
            "recipe_hash": reports[0].get("recipe_hash", "x")}
    out = combine(plan, reports, tmp_path)
    assert [b["foreign_cpu_fraction"] for b in out["repeats"]["contention"]] == [0.05, 0.6, 0.1]
    assert out["repeats"]["contention_worst"]["foreign_cpu_fraction"] == 0.6
    assert out["contention"]["verdict"] == "contended"  # the median run's figures, the worst run's conditions


# --- one real run -------------------------------------------------------------------------

def test_a_run_beside_two_cpu_bound_processes_reads_contended(tmp_path):
    """Two `yes` beside a run on this machine's CPUs take at least a third of them: the
    fraction can only rise with whatever else runs here, so the bound holds on a busy
    machine too."""
    cpus = len(os.sched_getaffinity(0))
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(max(2, cpus))]
    try:
        time.sleep(0.2)
        run = subprocess.run(
            [sys.executable, "-m", "harness", "run", str(REPO / "configs" / "digits_cnn.yaml"), "train.epochs=1",
             "measure.warmup_steps=2", "output.progress=false", "output.save_model=false",
             "output.checkpoint_every_epoch=false", "measure.measure_peak=false", "--output", str(tmp_path / "r")],
            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert run.returncode == 0, run.stderr[-2000:]
    import yaml

    report = yaml.safe_load((tmp_path / "r" / "report.yaml").read_text())
    assert report["contention"]["foreign_cpu_fraction"] >= 0.3, report["contention"]
    assert report["contention"]["verdict"] == "contended"
    assert any("contended" in w for w in report["warnings"])


# --- the benchmarks' rounds ------------------------------------------------------------------

class FakeBenchmark:
    def __init__(self):
        self.extra_info = {}

    def pedantic(self, fn, rounds, iterations):
        return fn()


def test_contended_benchmark_rounds_are_dropped_and_too_few_say_not_measured():
    from benchmarks.budget import Budget, interleaved, not_measured

    # Rounds 0, 2, 4, ... quiet; 1, 3, 5, ... beside two CPU-bound processes.
    seq = iter([0.0, 1.3] * 10)
    bench = FakeBenchmark()
    rounds = interleaved(bench, Budget(600, min_rounds=3, max_rounds=8), lambda k: (2.0 + k,), lambda k: (1.0,),
                         probe=lambda: fake_probe(foreign_cpu_s=next(seq), own_cpu_s=0.7))
    assert [a[0] for a, _ in rounds] == [2.0, 4.0, 6.0, 8.0]  # the quiet rounds' sides, in order
    info = bench.extra_info
    assert info["rounds"] == 8 and info["dropped_contended"] == 4 and info["stopped_because"] == "max_rounds"
    assert not_measured(info, 0.875).startswith("not measured: contended (4 of 8 rounds")
    assert not_measured(info, None).startswith("not measured: contended")
    assert not_measured(info, 0.96) is None
    assert "too few to judge" in not_measured({"rounds": 2, "budget_s": 10.0}, 0.5)


def test_an_inference_report_has_a_block_per_batch_size_and_the_worst(tmp_path):
    from harness.cli import main
    from harness.report.io import load_report
    from support.recipes import TINY

    out = tmp_path / "inf"
    assert main(["run", "configs/digits_cnn.yaml", *TINY, "data.subset=160", "scenario=inference",
                 "inference.batch_sizes=[1,4]", "inference.batches=3", "inference.warmup_batches=1",
                 "--output", str(out)]) == 0
    report = load_report(out / "report.yaml")
    rows = report["inference"]["batch_sizes"]
    assert [r["contention"]["verdict"] in ("quiet", "contended", "unknown") for r in rows] == [True, True]
    assert report["contention"] == contention.worst([r["contention"] for r in rows])
    assert report["threads"]["processes"] == 1 and report["threads"]["cpus_available"] > 0


def test_contention_and_free_cpus_are_named_in_the_warnings():
    from harness.run.finish import contention_warnings

    block = {"verdict": "contended", "foreign_cpu_fraction": 0.62, "capacity_cpus": 2.0, "load_avg_end": 4.25}
    out = contention_warnings(block, {"oversubscribed_free": True, "total_threads": 2, "free_cpus": 0.76})
    assert "contended" in out[0] and "62%" in out[0] and "4.25" in out[0]
    assert "2 threads ran on 0.76 free CPUs" in out[1]
    assert contention_warnings({**block, "verdict": "quiet"}, {"oversubscribed_free": False}) == []


def test_a_run_warns_once_at_its_start_when_threads_exceed_its_cpus(tmp_path, monkeypatch, capsys):
    from harness.cli import main
    from support.recipes import TINY

    monkeypatch.setattr(contention, "capacity_cpus", lambda cpus=None, quota=None: 0.5)  # a half-CPU quota
    assert main(["run", "configs/digits_cnn.yaml", *TINY, "data.subset=160", "train.epochs=1",
                 "--output", str(tmp_path / "r")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "torch threads" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: 1 process(es) x ") and "on 0.5 CPUs" in lines[0]
