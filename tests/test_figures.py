"""Every figure against physical truth: tree memory by PSS, peaks per phase, the report
always written, time-to-target without checkpoint writes."""

from __future__ import annotations

import time

import psutil
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from support.recipes import TINY
from harness.cli import main
from harness.measure.memory import MB, read_tree
from harness.report.io import load_report

MLP = "configs/digits_mlp.yaml"


class WholeTensorReads(Dataset):
    """Each item reads every page of one shared tensor, so each worker maps all of it."""

    def __init__(self, data: torch.Tensor, items: int):
        self.data, self.items = data, items

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data.sum()


def test_tree_pss_counts_pages_shared_with_forked_workers_once():
    """Two forked workers over a 200 MB tensor: the tree's PSS is the parent's own PSS
    plus what the workers allocated themselves; summed RSS counts the tensor three times."""
    data = torch.ones(200 * MB // 4)  # 200 MB, every page touched
    proc = psutil.Process()
    single = read_tree(proc, children=[])
    loader = DataLoader(WholeTensorReads(data, items=4), batch_size=1, num_workers=2,
                        multiprocessing_context="fork", persistent_workers=True)
    try:
        assert len(list(loader)) == 4  # both workers have now read the whole tensor
        workers = proc.children(recursive=True)
        assert len(workers) == 2
        own = sum(w.memory_full_info().uss for w in workers)
        tree = read_tree(proc, workers)
        # The figure no report holds (harness/measure/memory.py says why): shared pages once per process.
        summed_rss = proc.memory_info().rss + sum(w.memory_info().rss for w in workers)
    finally:
        del loader
    expected = single.pss + own
    assert tree.pss == pytest.approx(expected, rel=0.15)
    # The old figure: shared pages once per process, far outside the same tolerance.
    assert summed_rss != pytest.approx(expected, rel=0.15)
    assert summed_rss > expected + 1.5 * 200 * MB


def _fake_save(real, megabytes: int, hold_s: float, calls: list, reads: list | None = None):
    """``real`` after holding a touched buffer of ``megabytes`` for ``hold_s``, and, when
    ``reads`` counts the sampler's full (PSS) readings, until one more has been taken: that
    reading's spacing grows with the time a reading takes, which a loaded machine stretches
    past any fixed hold."""
    def save(*args, **kwargs):
        buffer = torch.ones(megabytes * MB // 4)  # touched: resident, not just reserved
        before = len(reads) if reads is not None else 0
        time.sleep(hold_s)  # the sampler (every 10 ms) sees it
        deadline = time.monotonic() + 120
        while reads is not None and len(reads) <= before + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        calls.append(float(buffer[0]))
        del buffer
        return real(*args, **kwargs)
    return save


def _counting_reads(monkeypatch) -> list:
    """Each full reading of the process tree (PSS) the memory sampler takes, counted."""
    import harness.measure.memory as memory

    reads: list = []
    real = memory.read_tree

    def read_tree(*args, **kwargs):
        result = real(*args, **kwargs)
        reads.append(1)
        return result

    monkeypatch.setattr(memory, "read_tree", read_tree)
    return reads


# The checkpoint's host buffer: large against what else moves a process's PSS between two
# phases (code pages first touched by torch.save, and the share of torch's shared libraries,
# which grows when another process mapping them exits): 45 MB of that on a 300 MB buffer
# read 345 under `pytest -n 2`.
CKPT_BUFFER_MB = 1000


@pytest.mark.slow
def test_a_checkpoints_host_buffer_shows_in_the_checkpoint_phase_not_train(tmp_path, monkeypatch):
    import harness.run.fit as fit

    calls: list = []
    monkeypatch.setattr(fit.checkpoint, "save_checkpoint",
                        _fake_save(fit.checkpoint.save_checkpoint, CKPT_BUFFER_MB, 0.5, calls,
                                   _counting_reads(monkeypatch)))
    # Dev accuracy reads 0 after epoch 1 and 1 after epoch 2: the target falls after one checkpoint.
    real_evaluate = fit.evaluate

    def evaluate(parts, loader):
        result = real_evaluate(parts, loader)
        result.accuracy = float(len(calls) >= 1)
        return result

    monkeypatch.setattr(fit, "evaluate", evaluate)
    assert main(["run", MLP, *TINY, "measure.rss_interval_ms=10", "train.target_accuracy=0.5",
                 "--output", str(tmp_path)]) == 0
    report = load_report(tmp_path / "report.yaml")
    assert len(calls) == 2
    mem = report["memory"]
    train, ckpt = mem["train"]["peak_pss_mb"], mem["checkpoint"]["peak_pss_mb"]
    assert ckpt - train == pytest.approx(CKPT_BUFFER_MB, rel=0.15)
    assert mem["peak_pss_mb"] == train and mem["eval"]["peak_pss_mb"] < ckpt - 0.8 * CKPT_BUFFER_MB
    assert mem["peak_rss_mb"] == mem["train"]["peak_rss_mb"] > 0
    # Time-to-target: training and dev evaluation only; epoch 1's 0.5 s checkpoint is outside.
    acc = report["accuracy"]
    assert acc["time_to_target_wall_s"] - acc["time_to_target_s"] >= 0.5
    assert acc["time_to_target_s"] <= report["timing"]["train_wall_s"]


class _Clock:
    """The sampler's clock, moved forward by hand: its interval passes without waiting."""

    def __init__(self):
        self.ahead_s = 0.0
        self.perf_counter = time.perf_counter

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead_s


def test_a_phase_opening_within_the_interval_reuses_the_tree_reading_but_reads_rss_again(monkeypatch):
    """Phases follow each other with only bookkeeping between them: the reading one phase
    closed with serves as the next one's opening (no second walk of the page tables), its
    RSS read fresh. What is allocated in between shows in RSS at once and in the phase's
    PSS at its close; once the interval has passed, a phase opens with a reading of its own."""
    import harness.measure.memory as memory

    clock = _Clock()
    monkeypatch.setattr(memory, "time", clock)
    reads = _counting_reads(monkeypatch)
    block_mb = CKPT_BUFFER_MB  # large against what other processes move this one's PSS by
    # An interval of a minute: the sampler's thread takes no reading of its own here.
    with memory.MemorySampler(interval_s=60) as sampler:
        sampler.enter("train")
        sampler.leave()
        assert len(reads) == 2  # the baseline (which opened train) and train's close
        block = torch.ones(block_mb * MB // 4)  # touched between one phase's close and the next's open
        sampler.enter("eval")
        assert len(reads) == 2
        train, opened = sampler.phases["train"], sampler.phases["eval"]
        assert (opened.rss - train.rss) / MB == pytest.approx(block_mb, rel=0.15)
        assert opened.pss <= train.pss  # the close's reading, taken before the block
        sampler.leave()
        assert len(reads) == 3
        assert (sampler.phases["eval"].pss - train.pss) / MB == pytest.approx(block_mb, rel=0.15)
        clock.ahead_s += 61  # a minute later, by the sampler's clock
        sampler.enter("checkpoint")
        assert len(reads) == 4
        sampler.leave()
        del block


def test_a_failing_flop_counter_costs_its_figures_not_the_report(tmp_path, monkeypatch):
    import harness.run.finish as finish

    def explode(*args, **kwargs):
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(finish, "training_flops", explode)
    assert main(["run", MLP, *TINY, "train.epochs=1", "--output", str(tmp_path)]) == 0
    report = load_report(tmp_path / "report.yaml")
    assert report["status"] == "completed"
    assert report["compute"]["flops_per_sample"] is None and report["compute"]["mfu_measured_peak"] is None
    assert report["compute"]["forward_flops_per_sample"] is None
    assert any("RuntimeError: probe exploded" in w and "flops_per_sample" in w for w in report["warnings"])


@pytest.mark.slow
def test_ddp_counts_each_sample_once_when_the_data_set_does_not_divide(tmp_path):
    """Two gloo ranks, 252 train samples in global batches of 64: Accelerate pads the last
    batch (60 real) to 64; the padding is not samples."""
    from support.cli import run_cli

    proc = run_cli("launch", "--mode", "ddp", "--nproc", "2", MLP, *TINY, "measure.warmup_steps=0",
                   "--output", str(tmp_path), timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = load_report(tmp_path / "report.yaml")
    train = report["data"]["sizes"]["train"]
    assert train % 64 and report["distributed"]["world_size"] == 2
    assert report["throughput"]["measured_samples"] == 2 * train  # two epochs, each sample once
    assert [r["samples"] for r in report["per_rank"]] == [2 * 128, 2 * (train - 128)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_bound_step_with_a_ready_loader_reads_almost_no_data_wait():
    """Each step is a known-length GPU sleep and every batch is ready on the host: the
    host must never wait for a batch. A blocking copy inside next() would wait for the
    previous step's sleep, and the data-wait fraction would read most of the window."""
    from torch.utils.data import TensorDataset

    from harness.run.accel import RuntimeConfig, build_accelerator
    from harness.measure.aggregate import aggregate
    from harness.measure.config import MeasureConfig
    from harness.measure.meter import Meter

    acc, _ = build_accelerator(RuntimeConfig(device="gpu"))
    ds = TensorDataset(torch.randn(64 * 40, 3, 64, 64), torch.zeros(64 * 40, dtype=torch.long))
    loader = acc.prepare(DataLoader(ds, batch_size=64, pin_memory=True))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    torch.cuda.synchronize()
    cycles = int(10_000_000 * 20.0 / start.elapsed_time(end))  # ~20 ms of GPU time
    meter = Meter(MeasureConfig(warmup_steps=3), acc.device)
    for inputs, _ in meter.steps(loader):
        torch.cuda._sleep(cycles)
        inputs.add_(1)  # the step uses the batch: its copy is ordered before it
    figures = aggregate([meter.summary()], 64)
    assert figures["step_time_ms"]["p50"] == pytest.approx(20.0, rel=0.25)
    assert figures["data_wait_fraction"] < 0.05
