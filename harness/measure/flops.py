"""FLOPs per sample, a machine's measured matmul peak, and datasheet peaks.

FLOPs are counted as executed by ``torch.utils.flop_counter.FlopCounterMode`` on
one forward+backward pass of one batch; a matmul of (m,k)x(k,n) counts 2mkn. The
input gradient of the first layer is not computed by autograd, so it is not
counted either.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from harness.files.atomic import write_text_atomic
from harness.files.clock import now

# Dense (no sparsity) peaks in TFLOP/s from the vendors' datasheets, per device model:
# bf16/fp16/tf32 on the tensor cores, fp32 on the CUDA cores. Where a datasheet
# gives only the sparse figure, the dense one is half of it.
DATASHEET_TFLOPS = {
    "B200": {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1125.0, "fp32": 75.0},
    "H200 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H200 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "GH200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H100 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "A100 SXM": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "A100 PCIe": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},
    "L40": {"bf16": 181.05, "fp16": 181.05, "tf32": 90.5, "fp32": 90.5},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "A10G": {"bf16": 70.0, "fp16": 70.0, "tf32": 35.0, "fp32": 31.2},
    "V100 SXM": {"fp16": 125.0, "fp32": 15.7},
    "V100 PCIe": {"fp16": 112.0, "fp32": 14.0},
    "T4": {"fp16": 65.0, "fp32": 8.1},
}

# torch.cuda.get_device_name() as drivers report it, normalised (see ``normalise_device_name``),
# to the datasheet entry. Exact names only: a substring match reads "L40" as "L4" and an
# H100 NVL as an SXM part. A name not here has no datasheet peak.
DEVICE_MODELS = {
    "b200": "B200",
    "h200": "H200 SXM", "h200 141gb hbm3e": "H200 SXM", "h200 nvl": "H200 NVL",
    "gh200 480gb": "GH200", "gh200 144g hbm3e": "GH200", "gh200": "GH200",
    "h100 80gb hbm3": "H100 SXM", "h100 sxm5 80gb": "H100 SXM", "h100 sxm": "H100 SXM",
    "h100 pcie": "H100 PCIe", "h100 80gb pcie": "H100 PCIe",
    "h100 nvl": "H100 NVL",
    "a100 sxm4 40gb": "A100 SXM", "a100 sxm4 80gb": "A100 SXM", "a100 sxm 80gb": "A100 SXM",
    "a100 pcie 40gb": "A100 PCIe", "a100 pcie 80gb": "A100 PCIe", "a100 80gb pcie": "A100 PCIe",
    "a100 40gb pcie": "A100 PCIe",
    "l40s": "L40S", "l40": "L40", "l4": "L4",
    "a10": "A10", "a10g": "A10G",
    "v100 sxm2 16gb": "V100 SXM", "v100 sxm2 32gb": "V100 SXM",
    "v100 pcie 16gb": "V100 PCIe", "v100 pcie 32gb": "V100 PCIe",
    "t4": "T4",
}


def normalise_device_name(name: str) -> str:
    """"NVIDIA A100-SXM4-80GB" -> "a100 sxm4 80gb": vendor prefix off, case and separators folded."""
    words = name.replace("-", " ").replace("_", " ").lower().split()
    while words and words[0] in ("nvidia", "tesla"):
        words = words[1:]
    return " ".join(words)


def device_model(device_name: str | None) -> str | None:
    """The datasheet entry for a driver's device name; None when it is not known exactly."""
    return DEVICE_MODELS.get(normalise_device_name(device_name)) if device_name else None


def datasheet_peak_tflops(device_name: str | None, precision: str) -> float | None:
    """The datasheet peak for ``precision`` (bf16, fp16, tf32, fp32) on a known GPU; None when unknown.

    ``precision`` "no" (the run-mode setting) reads as fp32; pick tf32 with ``peak_precision``.
    """
    model = device_model(device_name)
    if model is None:
        return None
    table = DATASHEET_TFLOPS[model]
    precision = "fp32" if precision == "no" else precision
    # A part without TF32 tensor cores (V100, T4) runs "TF32" work in plain fp32.
    return table.get(precision) or (table.get("fp32") if precision == "tf32" else None)


def tf32_switches() -> dict:
    """The switches that decide whether fp32 work runs on the TF32 tensor cores."""
    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_conv": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def peak_precision(precision: str, has_conv: bool, switches: dict | None = None) -> str:
    """Which datasheet column the run's work really runs at.

    Mixed precision: its dtype. fp32 ("no"): TF32 when TF32 is on for the work the
    model does -- convolutions (cuDNN's switch, on by default) or matmuls (off by
    default, on with ``set_float32_matmul_precision("high")``) -- else plain fp32.
    """
    if precision != "no":
        return precision
    s = switches or tf32_switches()
    matmul_tf32 = s["matmul"] or s["float32_matmul_precision"] != "highest"
    return "tf32" if matmul_tf32 or (has_conv and s["cudnn_conv"]) else "fp32"


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def _conv_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                   _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """torch's ``conv_backward_flop`` with the weight gradient divided by ``groups``.

    torch counts the weight gradient of a grouped convolution as if it were dense, so a
    depthwise 3x3 over 64 channels counted 64 times its real cost (mobilenet_v3_small's
    backward came out 17x its forward instead of about 2x).
    """
    from torch.utils.flop_counter import conv_flop_count

    def t(shape):
        return [shape[1], shape[0], *shape[2:]]

    count = 0
    if output_mask[0]:  # grad_input: a transposed convolution of grad_out with the weight
        count += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:  # grad_weight: a convolution of the input with grad_out, per group
        a, b = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        count += conv_flop_count(t(a), t(b), t(out_shape[1]), transposed=False) // groups
    return count


def extra_formulas() -> dict:
    """Formulas FlopCounterMode lacks, or gets wrong, for kernels a training step runs.

    On the CPU, ``scaled_dot_product_attention`` with gradients runs the fused
    ``_scaled_dot_product_flash_attention_for_cpu`` (and its backward), which torch
    2.x does not count: a ViT-B/16 step would lose its attention matmuls (1.4 GFLOPs
    of 35.1 per sample forward). They count as the CUDA flash kernels do. The
    convolution backward is replaced for grouped convolutions (``_conv_backward``).
    """
    from torch.utils.flop_counter import flop_registry

    aten = torch.ops.aten
    pairs = (("_scaled_dot_product_flash_attention_for_cpu", _cpu_attention),
             ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_attention_backward))
    extra = {getattr(aten, op): formula for op, formula in pairs
             if hasattr(aten, op) and getattr(aten, op) not in flop_registry}
    extra[aten.convolution_backward] = _conv_backward
    return extra


def training_flops(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   loss_fn: nn.Module, device: torch.device | str | None = None) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs per sample of one training step of one batch.

    The forward is the train-mode forward a step runs (dropout, batch statistics,
    attention through scaled_dot_product_attention), not the inference fast path.
    Counted on a copy so the model's parameters, gradients and buffers (BatchNorm
    statistics) are untouched; on ``device`` when given: "meta" counts from shapes
    alone, without allocating or computing anything.
    """
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model)
    if device is not None:
        probe, inputs, targets = probe.to(device), inputs.to(device), targets.to(device)
    probe.train()
    with FlopCounterMode(display=False, custom_mapping=extra_formulas()) as counter:
        loss = loss_fn(probe(inputs), targets)
        forward = counter.get_total_flops()
        loss.backward()
    n = inputs.shape[0]
    return forward / n, counter.get_total_flops() / n


def block_forward_flops(model: nn.Module, inputs: torch.Tensor, blocks: list[str],
                        device: torch.device | str | None = None) -> float:
    """Forward FLOPs per sample spent inside the submodules named ``blocks`` (dotted names,
    none inside another), in one train-mode forward of ``inputs``: what activation
    checkpointing runs again in the backward. Counted as ``training_flops`` counts, on a copy."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model)
    if device is not None:
        probe, inputs = probe.to(device), inputs.to(device)
    probe.train()
    inside = [0.0]
    with FlopCounterMode(display=False, custom_mapping=extra_formulas()) as counter:
        def enter(*_):
            inside[0] -= counter.get_total_flops()

        def leave(*_):
            inside[0] += counter.get_total_flops()

        for name in blocks:
            block = probe.get_submodule(name)
            block.register_forward_pre_hook(enter)
            block.register_forward_hook(leave)
        probe(inputs)
    return inside[0] / inputs.shape[0]


def flops_per_sample(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                     loss_fn: nn.Module) -> float:
    """Forward+backward FLOPs of one batch, divided by its size (see ``training_flops``)."""
    return training_flops(model, inputs, targets, loss_fn)[1]


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


def peak_cache_key(device_name: str, dtype: torch.dtype) -> str:
    """What a measured peak depends on; the matmul precision and TF32 switches decide
    which units an fp32 product runs on (up to ~7x apart on an A100)."""
    tf32 = tf32_switches()
    return (f"{device_name}|{dtype}|torch {torch.__version__}|threads {torch.get_num_threads()}"
            f"|matmul {tf32['float32_matmul_precision']} tf32 {int(tf32['matmul'])}/{int(tf32['cudnn_conv'])}")


def measured_peak_flops(device: torch.device, dtype: torch.dtype, device_name: str,
                        at_least: float = 0.0, probe=None) -> tuple[float, dict]:
    """The measured peak for (device model, dtype, torch version, threads), cached on disk.

    Returns the peak FLOP/s and its context: when it was measured, the machine's 1-minute
    load average then, ``contended`` and, for a peak measured now, its ``contention``
    block (measure/contention.py; ``probe`` reads it, a fake in tests).

    A peak measured while other processes took the CPUs (verdict ``contended``) is used
    for this run only and never cached: a peak is measured once per machine, and one
    taken on a busy machine would inflate every later MFU there.

    ``at_least`` is a rate the run itself achieved: a cached peak below it was measured
    while other work shared the machine (a peak can only be underestimated), so it is
    measured again and the cache keeps the higher of the two.
    """
    key = peak_cache_key(device_name, dtype)
    path = _cache_file()
    cache = {}
    if path.is_file():
        from harness.files import safe_yaml
        from harness.errors import BadInput

        try:  # a damaged cache is measured again, never fatal
            cache = safe_yaml.read_yaml(path, "peak cache") or {}
        except BadInput:
            cache = {}
        if not isinstance(cache, dict):
            cache = {}
    entry = cache.get(key)
    if isinstance(entry, (int, float)):  # written before the context was kept
        entry = {"flops": float(entry), "measured_at": None, "load_avg_1m": None}
    usable = isinstance(entry, dict) and isinstance(entry.get("flops"), (int, float))
    stale = usable and entry["flops"] < at_least
    if usable and not stale:
        return float(entry["flops"]), {"measured_at": entry.get("measured_at"),
                                       "load_avg_1m": entry.get("load_avg_1m"),
                                       "contended": False, "contention": None}
    fresh, block = _measure_with_contention(device, dtype, probe or peak_probe())
    contended = block["verdict"] == "contended"
    if stale and entry["flops"] >= fresh["flops"]:
        chosen, contended = entry, False
    else:
        chosen = fresh
    if not contended:
        cache[key] = chosen
        try:
            write_text_atomic(path, yaml.safe_dump(cache))
        except OSError:  # a read-only HARNESS_CACHE: measured again next time, never a failed run
            pass
    return float(chosen["flops"]), {"measured_at": chosen.get("measured_at"),
                                    "load_avg_1m": chosen.get("load_avg_1m"),
                                    "contended": contended, "contention": block}


def peak_probe():
    """The contention probe around a peak measurement (the live machine; tests put a fake here)."""
    from harness.measure.contention import Probe

    return Probe()


def _measure_with_contention(device: torch.device, dtype: torch.dtype, probe) -> tuple[dict, dict]:
    from harness.measure.contention import Window

    with Window(probe) as window:
        flops = measure_matmul_peak(device, dtype)
    block = window.block()
    return {"flops": flops, "measured_at": now(),
            "load_avg_1m": block["load_avg_end"],
            "foreign_cpu_fraction": block["foreign_cpu_fraction"]}, block
