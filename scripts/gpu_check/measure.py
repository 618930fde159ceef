"""Figures taken in this process against physical truth: the harness's meter and its
accelerator, on steps that are known GPU sleeps and phases that hold blocks of known size."""

from __future__ import annotations

SLEEP_MS = 20.0
BLOCK_MB = {"train": 1024, "eval": 512, "checkpoint": 256}
MB = 2**20


def sleep_cycles(ms: float) -> int:
    """``torch.cuda._sleep`` cycles that take ``ms`` on this GPU, calibrated by CUDA events."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    probe = 10_000_000
    start.record()
    torch.cuda._sleep(probe)
    end.record()
    torch.cuda.synchronize()
    return int(probe * ms / start.elapsed_time(end))


def slept_ms(cycles: int, times: int = 5) -> float:
    """What ``cycles`` really take, by CUDA events around each of ``times`` sleeps: the median."""
    import torch

    reads = []
    for _ in range(times):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        torch.cuda.synchronize()
        reads.append(start.elapsed_time(end))
    return sorted(reads)[len(reads) // 2]


def _block(mb: int):
    import torch

    return torch.empty(mb * MB, dtype=torch.uint8, device="cuda")


def meter_figures() -> dict:
    """A timed window of GPU-bound steps through the harness's accelerator and meter.

    Each step is a ~20 ms GPU sleep that uses its batch; the batches are pinned on the host
    and ready, so a loader that copies without blocking never makes the host wait (a blocking
    copy inside next() would wait out the previous step's sleep). The train window allocates
    a block once, then eval and checkpoint phases each allocate their own: each phase's device
    peak over its opening must read its block.
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from harness.measure.aggregate import aggregate
    from harness.measure.config import MeasureConfig
    from harness.measure.meter import Meter
    from harness.run.accel import RuntimeConfig, build_accelerator

    acc, _ = build_accelerator(RuntimeConfig(device="gpu"))
    batch, steps, warmup = 64, 30, 3
    ds = TensorDataset(torch.randn(batch * steps, 3, 64, 64), torch.zeros(batch * steps, dtype=torch.long))
    loader = acc.prepare(DataLoader(ds, batch_size=batch, pin_memory=True))
    cycles = sleep_cycles(SLEEP_MS)
    meter = Meter(MeasureConfig(warmup_steps=warmup), acc.device)
    opened = {}
    for i, (inputs, _) in enumerate(meter.steps(loader)):
        torch.cuda._sleep(cycles)
        inputs.add_(1)  # the step uses its batch: the copy is ordered before it
        if i == warmup + 1:  # inside the window: its peak must hold this block
            opened["train"] = torch.cuda.memory_allocated()
            block = _block(BLOCK_MB["train"])
            del block
    del inputs
    for phase in ("eval", "checkpoint"):
        opened[phase] = torch.cuda.memory_allocated()
        with meter.phase(phase):
            block = _block(BLOCK_MB[phase])
            del block
    summary = meter.summary()
    figures = aggregate([summary], batch)
    phases = summary["phases"]
    return {
        "sleep_step": {"slept_ms": slept_ms(cycles), "read_ms": figures["step_time_ms"]["p50"]},
        # The waits beside the fraction: a blocking copy waits out the step before (~20 ms each).
        "sleep_data_wait": {"fraction": figures["data_wait_fraction"], "wait_ms_p50": figures["data_wait_ms"]["p50"],
                            "wait_ms_max": figures["data_wait_ms"]["max"]},
        "phase_blocks": {p: {"block_mb": BLOCK_MB[p],
                             "read_mb": phases[p]["device_peak_allocated_mb"] - opened[p] / MB}
                         for p in BLOCK_MB},
    }


if __name__ == "__main__":  # run apart by __main__.py: a CUDA error here ends this process only
    import json

    print(json.dumps(meter_figures()))
