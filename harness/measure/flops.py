"""FLOPs per sample, a machine's measured matmul peak, and datasheet peaks.

FLOPs are counted as executed by ``torch.utils.flop_counter.FlopCounterMode`` on
one forward+backward pass of one batch; a matmul of (m,k)x(k,n) counts 2mkn. The
input gradient of the first layer is not computed by autograd, so it is not
counted either.
"""

from __future__ import annotations

import copy
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml
from torch import nn

from harness.atomic import write_text_atomic

# Dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' datasheets,
# by precision. SXM parts; a name match picks the first entry that fits.
DATASHEET_TFLOPS = {
    "H200": {"bf16": 989.4, "fp16": 989.4, "no": 66.9},
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "no": 66.9},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "no": 51.2},
    "H100": {"bf16": 989.4, "fp16": 989.4, "no": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "no": 19.5},
    "L40S": {"bf16": 362.05, "fp16": 362.05, "no": 91.6},
    "L4": {"bf16": 121.0, "fp16": 121.0, "no": 30.3},
    "A10G": {"bf16": 70.0, "fp16": 70.0, "no": 31.2},
    "V100": {"fp16": 125.0, "no": 15.7},
    "T4": {"fp16": 65.0, "no": 8.1},
}


def datasheet_peak_tflops(device_name: str | None, precision: str) -> float | None:
    """The datasheet peak for ``precision`` on a known GPU; None when unknown."""
    if not device_name:
        return None
    for key, table in DATASHEET_TFLOPS.items():
        if key in device_name:
            return table.get(precision)
    return None


def flops_per_sample(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                     loss_fn: nn.Module) -> float:
    """Forward+backward FLOPs of one batch, divided by its size.

    Counted on a copy so the model's parameters, gradients and buffers (BatchNorm
    statistics) are untouched.
    """
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model)
    probe.train()
    with FlopCounterMode(display=False) as counter:
        loss = loss_fn(probe(inputs), targets)
        loss.backward()
    return counter.get_total_flops() / inputs.shape[0]


def _cache_file() -> Path:
    from harness.data.datasets import default_cache

    return default_cache() / "peak_flops.yaml"


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, size: int | None = None,
                        min_time_s: float = 0.5) -> float:
    """Dense matmul FLOP/s on this device in ``dtype``: the best of many short timings.

    A peak is what the machine can do, and other load only ever lowers a timing, so
    the best chunk (one product on the CPU, four on a GPU) is the honest estimate; a
    mean over the burst would bake a passing job's load into the cache for good.
    """
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    per_chunk = 4 if cuda else 1
    for _ in range(3):
        a @ b
    sync()
    best = 0.0
    deadline = time.perf_counter() + min_time_s
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(per_chunk):
            a @ b
        sync()
        best = max(best, 2.0 * size**3 * per_chunk / (time.perf_counter() - t0))
    return best


def measured_peak_flops(device: torch.device, dtype: torch.dtype, device_name: str) -> tuple[float, dict]:
    """The measured peak for (device model, dtype, torch version, threads), cached on disk.

    Returns the peak FLOP/s and when it was measured, with the machine's 1-minute load
    average then: a peak is measured once per machine, so a reader of any later report
    can see whether that one measurement shared the machine.
    """
    key = f"{device_name}|{dtype}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    path = _cache_file()
    cache = {}
    if path.is_file():
        try:
            cache = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            cache = {}
    entry = cache.get(key)
    if isinstance(entry, (int, float)):  # written before the context was kept
        entry = {"flops": float(entry), "measured_at": None, "load_avg_1m": None}
    if not isinstance(entry, dict) or not isinstance(entry.get("flops"), (int, float)):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        entry = {"flops": measure_matmul_peak(device, dtype),
                 "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "load_avg_1m": load}
        cache[key] = entry
        try:
            write_text_atomic(path, yaml.safe_dump(cache))
        except OSError:  # a read-only HARNESS_CACHE: measured again next time, never a failed run
            pass
    return float(entry["flops"]), {"measured_at": entry.get("measured_at"), "load_avg_1m": entry.get("load_avg_1m")}
