"""How a run used its machine, named for people: ``cpu ×1``, ``ddp gloo ×2``, ``gpu ×1 bf16 compiled``,
``fsdp2 gloo ×2 accum 4 act-ckpt``.

The one naming of a run mode for every surface (the run summary, ``harness compare``'s
rows, ``harness report``'s tables). Plain Python over a report's dict: no torch.
"""

from __future__ import annotations

from harness.report.figures import dig


def _device(d: dict) -> str:
    dev = str(d.get("device") or "")
    if dev.startswith("cuda") or d.get("distributed_type") == "MULTI_GPU":
        return "gpu"
    return dev.split(":")[0] or "cpu"


def world_size(report: dict) -> int:
    ws = dig(report, "distributed.world_size")
    return ws if isinstance(ws, int) and ws > 0 else 1


def node_count(report: dict) -> int:
    """The nodes the run's ranks were on (``per_node``); one for a run without that block."""
    nodes = report.get("per_node")
    return len(nodes) if isinstance(nodes, list) and nodes else 1


def sharding(report: dict) -> str:
    """``runtime.sharding`` as it ran (``distributed.sharding``, read from the live model),
    else as configured; ``none`` for a report older than the key."""
    value = dig(report, "distributed.sharding") or dig(report, "config.runtime.sharding")
    return str(value) if value else "none"


def grad_accum_steps(report: dict) -> int:
    """Micro-batches per optimizer step (the ``batch`` block, else ``train.grad_accum_steps``); 1 before the key."""
    value = dig(report, "batch.grad_accum_steps")
    if not isinstance(value, int):
        value = dig(report, "config.train.grad_accum_steps")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def activation_checkpointing(report: dict) -> bool:
    """Whether blocks were checkpointed: the model block says what ran, else the config."""
    model = report.get("model")
    if isinstance(model, dict) and "activation_checkpointing" in model:
        return bool(model["activation_checkpointing"])
    return bool(dig(report, "config.runtime.activation_checkpointing"))


def layout(report: dict) -> tuple[str, int, bool]:
    """How the training step is laid out over memory and time: (sharding, grad_accum_steps,
    activation_checkpointing). Two runs that differ in it run differently, whatever they compute."""
    return sharding(report), grad_accum_steps(report), activation_checkpointing(report)


def _process_part(report: dict) -> str:
    d = report.get("distributed") or {}
    kind, ws = d.get("distributed_type") or "NO", world_size(report)
    if sharding(report) != "none":  # each rank holds a shard: not DDP, whatever the Accelerator's type
        backend = d.get("backend") or ("nccl" if _device(d) == "gpu" else "gloo")
        return f"{sharding(report)} {backend} ×{ws}"
    if kind == "NO":
        return f"{_device(d)} ×{ws}"
    if kind in ("MULTI_CPU", "MULTI_GPU"):
        backend = d.get("backend") or ("gloo" if kind == "MULTI_CPU" else "nccl")
        return f"ddp {backend} ×{ws}"
    return f"{str(kind).lower()} ×{ws}"


def settings(report: dict) -> list[str]:
    """Everything of the mode but the process count and sharding: precision, compile, memory
    format, accumulation, activation checkpointing, loader knobs."""
    d = report.get("distributed") or {}
    cfg = report.get("config") or {}
    out = []
    precision = d.get("precision") or d.get("mixed_precision") or dig(cfg, "runtime.precision")
    if precision and precision != "no":
        out.append(str(precision))
    if dig(report, "compile.enabled") or dig(cfg, "runtime.compile.enabled"):
        backend = dig(report, "compile.backend") or dig(cfg, "runtime.compile.backend")
        out.append("compiled" if backend in (None, "inductor") else f"compiled {backend}")
    if dig(cfg, "runtime.channels_last"):
        out.append("channels-last")
    if grad_accum_steps(report) > 1:
        out.append(f"accum {grad_accum_steps(report)}")
    if activation_checkpointing(report):
        out.append("act-ckpt")
    loader = cfg.get("loader") or {}
    if loader.get("kind") == "device_resident":
        out.append("resident")
    if loader.get("num_workers"):
        out.append(f"workers {loader['num_workers']}")
    if loader.get("pin_memory"):
        out.append("pinned")
    if loader.get("persistent_workers"):
        out.append("persistent")
    if loader.get("prefetch_factor"):
        out.append(f"prefetch {loader['prefetch_factor']}")
    return out


def mode_label(report: dict) -> str:
    return " ".join([_process_part(report), *settings(report)])


def family_mode(report: dict) -> str:
    """The mode without its process count: ``cpu ×1`` and ``ddp gloo ×2`` are one family;
    ``fsdp2 gloo ×2`` is of another (``cpu fsdp2``)."""
    d = report.get("distributed") or {}
    shard = [sharding(report)] if sharding(report) != "none" else []
    return " ".join([_device(d), *shard, *settings(report)])


def mode_order(label: str) -> tuple:
    """cpu before gpu, one process before many, plain before tuned."""
    head = label.split(" ")
    count = next((int(p[1:]) for p in head if p.startswith("×") and p[1:].isdigit()), 1)
    return ("gpu" in head[:1] or "nccl" in head[:2], count, len(head), label)
