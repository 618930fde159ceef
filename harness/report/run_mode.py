"""How a run used its machine, named for people: ``cpu ×1``, ``ddp gloo ×2``, ``gpu ×1 bf16 compiled``.

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


def _process_part(report: dict) -> str:
    d = report.get("distributed") or {}
    kind, ws = d.get("distributed_type") or "NO", world_size(report)
    if kind == "NO":
        return f"{_device(d)} ×{ws}"
    if kind in ("MULTI_CPU", "MULTI_GPU"):
        backend = d.get("backend") or ("gloo" if kind == "MULTI_CPU" else "nccl")
        return f"ddp {backend} ×{ws}"
    return f"{str(kind).lower()} ×{ws}"


def settings(report: dict) -> list[str]:
    """Everything of the mode but the process count: precision, compile, memory format, loader knobs."""
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
    """The mode without its process count: ``cpu ×1`` and ``ddp gloo ×2`` are one family."""
    d = report.get("distributed") or {}
    return " ".join([_device(d), *settings(report)])


def mode_order(label: str) -> tuple:
    """cpu before gpu, one process before many, plain before tuned."""
    head = label.split(" ")
    count = next((int(p[1:]) for p in head if p.startswith("×") and p[1:].isdigit()), 1)
    return ("gpu" in head[:1] or "nccl" in head[:2], count, len(head), label)
