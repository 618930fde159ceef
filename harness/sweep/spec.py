"""SWEEP.yaml: a base recipe and the cells to run, read strictly.

```yaml
name: dataloader                 # optional; default: the file's stem
base:
  config: ../digits_cnn.yaml     # relative to this file, else to the working directory
  overrides: {train.epochs: 3}   # dotted key -> value, applied to every cell
grid:                            # cartesian product, in key order ...
  loader.batch_size: [32, 64]
  loader.num_workers: [0, 2]
extra_cells:                     # ... plus these cells (grid only)
  - {loader.kind: device_resident}
# or, instead of grid: cells: [{dotted.key: value, ...}, ...]
#   a cell's ``config: other.yaml`` runs that file instead of base.config (a suite of
#   different recipes, e.g. configs/sweeps/hardware.yaml); base.overrides still apply

time_limit_s: 1800               # per cell, per attempt
oom_backoff: false               # retry an out-of-memory cell with half the batch size
executor: local                  # or slurm, with a slurm: block (harness/sweep/slurm_config.py)
```

Axes named ``launch.nproc``/``launch.mode`` run a cell through ``harness launch``;
axes named ``slurm.*`` are that cell's own Slurm resources. Neither is a config key.

``base`` may also be just a path. Every cell's resolved config is validated
with ``load_config`` before anything runs.

``harness sweep`` validates them in a forked child (``load_sweep_apart``) so that the sweep's
own process never imports torch: a parent holding libtorch's pages would share them with
every cell and lower each cell's measured PSS by the parent's share (~150 MB).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import BadInput
from harness.sweep.slurm_config import LaunchSpec, SlurmOptions, parse_executor, parse_slurm, split_axes

if TYPE_CHECKING:  # config.py imports torch; this module is also read by the torch-free sweep parent
    from harness.config.run import Config

TOP_KEYS = ("name", "base", "grid", "cells", "extra_cells", "time_limit_s", "oom_backoff", "executor", "slurm")
BASE_KEYS = ("config", "overrides")
DEFAULT_TIME_LIMIT_S = 1800.0


@dataclass
class Cell:
    id: str
    axes: dict[str, Any]
    """The cell's own dotted keys and values (the base's overrides excluded)."""
    overrides: list[str]
    """Base overrides then the cell's, as ``KEY=VALUE`` for ``harness run``."""
    config: Config | None
    """The resolved config, validated; None in the sweep's own process (``load_sweep_apart``)."""
    config_hash: str = ""
    """The resolved config's hash: a sweep.yaml row of another recipe is not this cell's."""
    batch_size: int = 0
    """``loader.batch_size``, which the out-of-memory back-off halves."""
    config_file: Path | None = None
    """The cell's own config file (its ``config`` key), in place of the base's."""
    launch: LaunchSpec | None = None
    """Run through ``harness launch`` with this many processes; None: a plain ``harness run``."""
    resources: dict[str, Any] = field(default_factory=dict)
    """The cell's own ``slurm.*`` axes (over the sweep's ``slurm:`` block)."""


@dataclass
class SweepSpec:
    name: str
    source: Path
    base_config: Path | None
    base_overrides: dict[str, Any]
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    oom_backoff: bool = False
    executor: str = "local"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    cells: list[Cell] = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    """The spec as written, for sweep.yaml."""


def override_text(key: str, value: Any) -> str:
    # JSON is YAML, so ``parse_override`` reads the value back with its type.
    return f"{key}={json.dumps(value)}"


def cell_id(axes: dict[str, Any]) -> str:
    """A short readable slug of the axis values plus a hash of the whole cell."""
    parts = []
    for key, value in axes.items():
        short = key.rsplit(".", 1)[-1]
        text = json.dumps(value) if not isinstance(value, str) else value
        if key == "config" and isinstance(value, str):  # a cell's own config file: its name says it
            short, text = "config", Path(value).stem
        parts.append(f"{short}-{text}")
    slug = re.sub(r"[^a-z0-9.-]+", "_", "_".join(parts).lower()).strip("_")[:60] or "base"
    digest = hashlib.sha1(json.dumps(axes, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{slug}-{digest}"


def _mapping_of_keys(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise BadInput(f"{where}: expected a mapping of dotted keys to values, got {value!r}")
    return dict(value)


def _resolve_path(text: Any, sweep_file: Path, where: str) -> Path:
    if not isinstance(text, str) or not text:
        raise BadInput(f"{where}: expected a path to a config file, got {text!r}")
    for candidate in (sweep_file.parent / text, Path(text)):
        if candidate.is_file():
            return candidate.resolve()
    raise BadInput(f"{where}: no such config file {text!r} (looked beside {sweep_file} and in the working directory)")


def _base(raw: Any, sweep_file: Path) -> tuple[Path | None, dict[str, Any]]:
    if raw is None:
        return None, {}
    if isinstance(raw, str):
        return _resolve_path(raw, sweep_file, "base"), {}
    if not isinstance(raw, dict):
        raise BadInput(f"base: expected a config path or a mapping with config/overrides, got {raw!r}")
    for key in raw:
        if key not in BASE_KEYS:
            raise BadInput(f"base.{key}: unknown key (expected one of: {', '.join(BASE_KEYS)})")
    path = _resolve_path(raw["config"], sweep_file, "base.config") if raw.get("config") is not None else None
    return path, _mapping_of_keys(raw.get("overrides"), "base.overrides")


def _axes_list(raw: dict) -> list[dict[str, Any]]:
    if ("grid" in raw) == ("cells" in raw):
        raise BadInput("sweep: give exactly one of grid (axes to cross) or cells (an explicit list)")
    if "grid" in raw:
        grid = _mapping_of_keys(raw["grid"], "grid")
        if not grid:
            raise BadInput("grid: expected at least one axis")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise BadInput(f"grid.{key}: expected a non-empty list of values, got {values!r}")
        combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        extra = raw.get("extra_cells") or []
    else:
        if "extra_cells" in raw:
            raise BadInput("extra_cells: only with grid (with cells, list every cell there)")
        combos, extra = [], raw["cells"]
        if not isinstance(extra, list) or not extra:
            raise BadInput(f"cells: expected a non-empty list of mappings, got {extra!r}")
    if not isinstance(extra, list):
        raise BadInput(f"extra_cells: expected a list of mappings, got {extra!r}")
    label = "cells" if "cells" in raw else "extra_cells"
    combos += [_mapping_of_keys(c, f"{label}[{i}]") for i, c in enumerate(extra)]
    return combos


def _positive_number(raw: dict, key: str, default: float) -> float:
    value = raw.get(key, default)
    # NaN fails no comparison, so "<= 0" alone would let .nan through and turn the limit off.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise BadInput(f"{key}: expected a finite number of seconds > 0, got {value!r}")
    return float(value)


def _folder_name(name: Any, where: str) -> str:
    """The sweep's name is its default folder (``sweeps/<name>``): one plain folder name,
    refused rather than changed, so that the folder is the one the user named or none."""
    if not isinstance(name, str) or not name:
        raise BadInput(f"{where}: expected a non-empty string, got {name!r}")
    if name in (".", "..") or any(c in name for c in "/\\") or not name.isprintable():
        raise BadInput(f"{where}: expected a folder name (no '/', '\\', control characters, '.' or '..'; "
                       f"the default output is sweeps/<name>), got {name[:80]!r}")
    return name


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate SWEEP.yaml and every cell's resolved config; runs nothing."""
    from harness.config.run import config_hash, load_config, read_yaml

    path = Path(path)
    raw = read_yaml(path)
    try:
        for key in raw:
            if key not in TOP_KEYS:
                raise BadInput(f"{key}: unknown key (expected one of: {', '.join(TOP_KEYS)})")
        name = _folder_name(raw.get("name", path.stem), "name" if "name" in raw else "name (the file's stem)")
        oom = raw.get("oom_backoff", False)
        if not isinstance(oom, bool):
            raise BadInput(f"oom_backoff: expected a boolean, got {oom!r}")
        spec = SweepSpec(name=name, source=path.resolve(), base_config=None, base_overrides={},
                         time_limit_s=_positive_number(raw, "time_limit_s", DEFAULT_TIME_LIMIT_S),
                         oom_backoff=oom, raw=raw, executor=parse_executor(raw.get("executor")),
                         slurm=parse_slurm(raw.get("slurm")))
        spec.base_config, spec.base_overrides = _base(raw.get("base"), path)
        seen: dict[str, int] = {}
        for i, axes in enumerate(_axes_list(raw)):
            cid = cell_id(axes)
            if cid in seen:
                raise BadInput(f"cell {i} ({cid}): the same cell as cell {seen[cid]}")
            seen[cid] = i
            keys, launch, resources = split_axes({**spec.base_overrides,
                                                  **{k: v for k, v in axes.items() if k != "config"}}, f"cell {cid}",
                                                 spec.slurm.resources)
            own = _resolve_path(axes["config"], path, f"cell {cid}: config") if "config" in axes else None
            overrides = [override_text(k, v) for k, v in keys.items()]
            try:
                cfg = load_config(own or spec.base_config, overrides)
            except BadInput as err:
                raise BadInput(f"cell {cid}: {err}") from None
            spec.cells.append(Cell(cid, axes, overrides, cfg, config_hash=config_hash(cfg),
                                   batch_size=cfg.loader.batch_size, config_file=own, launch=launch,
                                   resources=resources))
    except BadInput as err:
        raise BadInput(f"{path}: {err}") from None
    return spec


def _plain_spec(path: str | Path) -> SweepSpec:
    spec = load_sweep(path)
    for cell in spec.cells:
        cell.config = None  # a Config would need harness.config.run (torch) to unpickle
    return spec


def load_sweep_apart(path: str | Path) -> SweepSpec:
    """``load_sweep`` in a forked child (harness/process/apart.py): the cells come back without their
    ``config`` (hash and batch size kept), so the sweep's own process stays torch-free."""
    from harness.process.apart import call_apart

    return call_apart(_plain_spec, path)
