"""What a report is a measurement of: its workload, its machine and its run mode.

A hardware comparison holds the workload fixed and varies the machine and the mode,
so the three are kept apart here:

- the **workload** is what is computed: the recipe (harness/config/recipe.py) less the
  settings that only say how it is run (``runtime.*``: device, precision, compile;
  the DataLoader's delivery knobs), plus the ``scenario`` (training or inference,
  never joined). Two runs of one workload may carry another ``name``.
- the **machine** is the box: its GPU model (and count) when it has one, else its CPU
  model and CPU count; ``--machine-by host`` adds the host name, and a label given on
  the command line replaces it.
- the **mode** is how the run used the machine, named for people: ``cpu ×1``,
  ``ddp gloo ×2``, ``gpu ×1 bf16 compiled``.

Plain Python: ``harness report`` reads YAML only and never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.config.recipe import NOT_RECIPE, differing_keys, flatten, recipe_view
from harness.report.figures import dig
from harness.report.run_mode import (  # noqa: F401 -- the mode belongs to what a report is a measurement of
    family_mode, mode_label, mode_order, node_count, settings, world_size)

NOT_WORKLOAD = (*NOT_RECIPE, "runtime", "launch", "loader.kind", "loader.num_workers", "loader.pin_memory",
                "loader.persistent_workers", "loader.prefetch_factor")
"""Config keys (dotted, or whole sections) that change how a workload runs, not what it computes."""

PER_DEVICE_BATCH = ("loader.batch_size", "loader.eval_batch_size")
"""Left out of a scaling family: strong scaling changes the per-device batch to hold the global one."""

DATA_SHAPE = ("num_classes", "sample_shape", "sizes")
"""The report's ``data`` block stands in for the files' fingerprint, which the reader cannot recompute."""


def _dropped(dotted: str, keys) -> bool:
    return any(dotted == k or dotted.startswith(k + ".") for k in keys)


def scenario(report: dict) -> str:
    """training or inference; reports older than the key are training runs."""
    return str(report.get("scenario") or dig(report, "config.scenario") or "training")


def _digest(report: dict, leave_out) -> str:
    view = {k: v for k, v in recipe_view(report.get("config") or {}).items() if not _dropped(k, leave_out)}
    data = report.get("data") or {}
    view.update({f"data.{k}": data.get(k) for k in DATA_SHAPE})
    view["scenario"] = scenario(report)
    text = json.dumps(view, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def workload_id(report: dict) -> str:
    return _digest(report, NOT_WORKLOAD)


def family_id(report: dict) -> str:
    """The workload less its per-device batch: the runs one scaling study may join."""
    return _digest(report, (*NOT_WORKLOAD, *PER_DEVICE_BATCH))


def workload_title(report: dict, batch: bool = True) -> str:
    """``digits_mlp: mlp on digits, batch 64``; the id tells apart two that read alike."""
    cfg = report.get("config") or {}
    bs = dig(cfg, "loader.batch_size")
    model = dig(cfg, "model.name") or "?"
    data = dig(cfg, "data.name") or "?"
    kind = scenario(report)
    tail = "" if kind == "training" else f" ({kind})"
    size = f", batch {bs}" if batch else ""
    return f"{report.get('name') or cfg.get('name') or 'run'}: {model} on {data}{size}{tail}"


def tell_apart(meta: dict[str, dict]) -> None:
    """Workloads whose titles read alike get the keys they differ in: ``(train.max_steps=40)``."""
    by_title: dict[str, list[dict]] = {}
    for info in meta.values():
        by_title.setdefault(info["title"], []).append(info)
    for same in by_title.values():
        if len(same) < 2:
            continue
        keys = sorted({k for a in same for b in same if a is not b for k in differing_keys(a["config"], b["config"])
                       if not _dropped(k, NOT_WORKLOAD)})
        for info in same:
            flat = flatten(info["config"])
            shown = ", ".join(f"{k}={flat.get(k)}" for k in keys[:3]) + (", …" if len(keys) > 3 else "")
            info["title"] += f" ({shown or 'data differs'})"


# --------------------------------------------------------------------------- machine

def hardware(report: dict) -> str:
    comp = dig(report, "environment.comparability") or {}
    gpu, count = comp.get("gpu_model"), comp.get("gpu_count")
    if gpu:
        return f"{count}× {gpu}" if isinstance(count, int) and count > 1 else str(gpu)
    cpu, cpus = comp.get("cpu_model") or "unknown CPU", comp.get("cpu_count")
    return f"{cpu}, {cpus} CPUs" if cpus else str(cpu)


@dataclass
class MachineNaming:
    by: str = "hardware"
    """hardware: GPU or CPU model; host: the host name as well."""
    labels: tuple[tuple[Path, str], ...] = ()
    """(folder or file, label): every report at or below the path is that machine."""

    def __call__(self, report: dict, path: Path) -> str:
        # A report reached through a link is below the link's folder and below its target.
        seen_as = {path.resolve(), Path(os.path.abspath(path))}
        for where, label in self.labels:
            if any(p == where or where in p.parents for p in seen_as):
                return label
        name = hardware(report)
        if self.by == "host":
            host = dig(report, "environment.info.hostname") or "unknown host"
            name = f"{host} ({name})"
        return name
