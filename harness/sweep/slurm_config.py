"""A sweep's ``executor:`` and ``slurm:`` blocks, and the ``launch.*`` / ``slurm.*`` cell axes, read strictly.

```yaml
executor: slurm                # local (default): cells run here, one after another
slurm:
  array_parallelism: 2         # how many of the array's cells run at once (default: all)
  partition: gpu               # optional, like account, qos
  account: my-project
  time_limit_s: 600            # default: the sweep's time_limit_s; Slurm counts whole minutes
  nodes: 1                     # > 1: one `harness launch` per node, launch.nproc processes on each
  tasks_per_node: 1
  gpus_per_node: 1
  cpus_per_task: 8             # default: none asked (a multi-process cell: one per process)
  mem_gb: 32
  additional_parameters: {constraint: a100, hold: true}   # any other sbatch option
  python: /shared/venv/bin/python   # the interpreter on the nodes (default: this one)
grid:
  launch.nproc: [1, 2]         # a cell run through `harness launch` with that many processes (per node)
  launch.mode: [ddp]           # cpu | gpu | ddp | fsdp (default: ddp for nproc > 1 or nodes > 1; else a plain `harness run`)
  slurm.cpus_per_task: [2]     # one cell's own resources
  slurm.nodes: [1, 2]          # a cell over 2 nodes: world size = nodes x launch.nproc
```

Torch-free: ``harness sweep --help`` and the readers of sweep.yaml never build a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from harness.errors import BadInput

EXECUTORS = ("local", "slurm")
LAUNCH_MODES = ("cpu", "gpu", "ddp", "fsdp")
MULTI_MODES = ("ddp", "fsdp")
"""Modes of several processes: fsdp is ddp's launch with runtime.sharding=fsdp2 (harness launch)."""
LAUNCH_KEYS = ("nproc", "mode")


@dataclass(frozen=True)
class SlurmResources:
    """What one cell asks the scheduler for; cells with equal resources share one job array."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit_s: float | None = None
    """Wall-clock limit of one cell's job; None: the sweep's time_limit_s. Rounded up to minutes."""
    nodes: int = 1
    tasks_per_node: int | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    additional_parameters: tuple[tuple[str, Any], ...] = ()
    """Free sbatch options (``{constraint: a100}`` -> ``--constraint=a100``), as sorted pairs."""


@dataclass
class SlurmOptions:
    array_parallelism: int | None = None
    """Cells of one array running at once; None: all of them."""
    python: str | None = None
    """The interpreter the nodes run; None: the one running the sweep (shared file system)."""
    resources: SlurmResources = field(default_factory=SlurmResources)


@dataclass(frozen=True)
class LaunchSpec:
    """A cell run through ``harness launch --mode MODE --nproc NPROC [--nnodes NNODES]``."""

    mode: str | None
    """None: a plain ``harness run`` (one process, the device the config picks)."""
    nproc: int
    """Processes on each node."""
    nnodes: int = 1
    """Nodes, one launcher on each (``slurm.nodes``): the world size is nnodes x nproc."""


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadInput(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise BadInput(f"{where}: expected a finite number > 0, got {value!r}")
    return float(value)


def _additional(value: Any, where: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise BadInput(f"{where}: expected a mapping of sbatch option names to values, got {value!r}")
    for key, item in value.items():
        if not isinstance(item, (str, int, float, bool)):
            raise BadInput(f"{where}.{key}: expected a string, number or true, got {item!r}")
    return tuple(sorted(value.items()))


RESOURCE_CHECKS = {
    "partition": _str, "account": _str, "qos": _str,
    "time_limit_s": _positive,
    "nodes": lambda v, w: _int(v, w, 1),
    "tasks_per_node": lambda v, w: _int(v, w, 1),
    "gpus_per_node": lambda v, w: _int(v, w, 0),
    "cpus_per_task": lambda v, w: _int(v, w, 1),
    "mem_gb": _positive,
    "additional_parameters": _additional,
}
OPTION_KEYS = ("array_parallelism", "python")
SLURM_KEYS = (*OPTION_KEYS, *RESOURCE_CHECKS)


def _resource_values(raw: dict, where: str) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        if key not in RESOURCE_CHECKS:
            raise BadInput(f"{where}.{key}: unknown key (expected one of: {', '.join(RESOURCE_CHECKS)})")
        if value is not None:
            out[key] = RESOURCE_CHECKS[key](value, f"{where}.{key}")
    return out


def parse_executor(raw: Any) -> str:
    value = "local" if raw is None else raw
    if value not in EXECUTORS:
        raise BadInput(f"executor: expected one of {', '.join(EXECUTORS)}, got {raw!r}")
    return value


def parse_slurm(raw: Any) -> SlurmOptions:
    if raw is None:
        return SlurmOptions()
    if not isinstance(raw, dict):
        raise BadInput(f"slurm: expected a mapping of Slurm options, got {raw!r}")
    for key in raw:
        if key not in SLURM_KEYS:
            raise BadInput(f"slurm.{key}: unknown key (expected one of: {', '.join(SLURM_KEYS)})")
    options = SlurmOptions()
    if raw.get("array_parallelism") is not None:
        options.array_parallelism = _int(raw["array_parallelism"], "slurm.array_parallelism", 1)
    if raw.get("python") is not None:
        options.python = _str(raw["python"], "slurm.python")
    values = _resource_values({k: v for k, v in raw.items() if k in RESOURCE_CHECKS}, "slurm")
    options.resources = SlurmResources(**values)
    return options


def split_axes(merged: dict[str, Any], where: str,
               sweep_resources: SlurmResources | None = None) -> tuple[dict[str, Any], LaunchSpec | None, dict[str, Any]]:
    """A cell's dotted keys as (config overrides, its launch, its own Slurm resources);
    ``sweep_resources`` (the ``slurm:`` block) gives the nodes a cell without its own runs on."""
    overrides, launch, slurm = {}, {}, {}
    for key, value in merged.items():
        head, _, tail = key.partition(".")
        if head == "launch":
            if tail not in LAUNCH_KEYS:
                raise BadInput(f"{where}: {key}: unknown key (expected launch.nproc or launch.mode)")
            launch[tail] = value
        elif head == "slurm":
            slurm[tail] = value
        else:
            overrides[key] = value
    own = _resource_values(slurm, f"{where}: slurm") if slurm else {}
    base = sweep_resources or SlurmResources()
    nodes = own.get("nodes", base.nodes)
    if nodes > 1 and own.get("tasks_per_node", base.tasks_per_node) not in (None, 1):
        raise BadInput(f"{where}: slurm.tasks_per_node: a cell on {nodes} nodes runs one launcher per node "
                       f"(tasks_per_node 1); its processes per node are launch.nproc")
    return overrides, _launch(launch, where, nodes), own


def _launch(raw: dict[str, Any], where: str, nodes: int = 1) -> LaunchSpec | None:
    if not raw and nodes == 1:
        return None
    nproc = _int(raw.get("nproc", 1), f"{where}: launch.nproc", 1)
    mode = raw.get("mode", "ddp" if nproc > 1 or nodes > 1 else None)
    if mode is not None and mode not in LAUNCH_MODES:
        raise BadInput(f"{where}: launch.mode: expected one of {', '.join(LAUNCH_MODES)}, got {mode!r}")
    if nodes > 1 and mode not in MULTI_MODES:
        raise BadInput(f"{where}: launch.mode: a cell on {nodes} nodes runs one process group over them "
                       f"(launch.mode ddp or fsdp), got {mode!r}")
    if mode in MULTI_MODES and nproc * nodes < 2:
        raise BadInput(f"{where}: launch.nproc: {mode} needs at least 2 processes, got {nproc} "
                       "(a 1-process cell: launch.mode cpu or gpu)")
    if mode in ("cpu", "gpu") and nproc != 1:
        raise BadInput(f"{where}: launch.nproc: mode {mode} runs one process; use launch.mode ddp for {nproc}")
    return LaunchSpec(mode, nproc, nodes)


def cell_resources(options: SlurmOptions, own: dict[str, Any], launch: LaunchSpec | None) -> SlurmResources:
    """The sweep's resources, then the cell's own; a multi-process cell asks a CPU per process
    unless told otherwise (Slurm would otherwise give its N processes one CPU)."""
    res = replace(options.resources, **own)
    if launch is not None and launch.nproc > 1 and res.cpus_per_task is None and not res.gpus_per_node:
        res = replace(res, cpus_per_task=launch.nproc)
    if res.nodes > 1:
        res = replace(res, tasks_per_node=1)  # one launcher per node; it starts that node's ranks
    return res


def resource_dict(res: SlurmResources) -> dict[str, Any]:
    """For sweep.yaml: the fields that were set."""
    out = {}
    for f in fields(res):
        value = getattr(res, f.name)
        if value not in (None, ()):
            out[f.name] = dict(value) if f.name == "additional_parameters" else value
    return out
