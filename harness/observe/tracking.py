"""Experiment trackers through Accelerate's own tracking API: the ``tracking`` section.

Every tracker Accelerate supports works with no code of ours per tracker: the run
builds ``Accelerator(log_with=..., project_dir=<run folder>)``, calls
``init_trackers`` with the resolved config as hyperparameters, ``accelerator.log``
at each interval (recorder.py) and ``end_training`` at the end. Only two things
here know a tracker by name: which pip extra installs it (so a missing one is bad
input at load, before anything is written) and the defaults that keep everything
local (wandb offline, mlflow's file store in the run folder).

Reads no torch and no accelerate at import: ``harness validate`` and the YAML-only
commands load configs through here.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BadInput, ConfigValueError

# tracker name -> (the module Accelerate imports for it, the pip extra that installs it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
    "aim": ("aim", "aim"),
    "comet_ml": ("comet_ml", "comet_ml"),
    "clearml": ("clearml", "clearml"),
    "dvclive": ("dvclive", "dvclive"),
}


def installed(name: str) -> bool:
    """Whether tracker ``name``'s package can be imported (found, not imported: cheap)."""
    return importlib.util.find_spec(TRACKERS[name][0]) is not None


# tracker name -> (module, the callable Accelerate hands init_kwargs to, the arguments it sets
# itself). The others (mlflow, clearml) rename or split their kwargs on the way.
CONSTRUCTORS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "tensorboard": ("torch.utils.tensorboard", "SummaryWriter", ("log_dir", "logdir")),
    "wandb": ("wandb", "init", ("project",)),
    "comet_ml": ("comet_ml", "Experiment", ("project_name",)),
    "aim": ("aim", "Run", ("repo",)),
    "dvclive": ("dvclive", "Live", ()),
}

NAME_MAX = 255
"""Bytes in one file name (Linux, macOS): TensorBoard makes a folder of the project's name."""


def check_project(project: str) -> None:
    """``tracking.project`` becomes a folder inside the run folder: one plain name, never a path."""
    if not project or project in (".", "..") or any(c in project for c in "/\\\0"):
        raise ConfigValueError("project", "expected a plain name (no '/', '\\', '.' or '..'): TensorBoard "
                               f"writes to <run folder>/<project>/; got {project!r}")
    if len(project.encode()) > NAME_MAX:
        raise ConfigValueError("project", f"expected at most {NAME_MAX} bytes (a file name's limit), "
                               f"got {len(project.encode())}")


@dataclass
class TrackingConfig:
    log_with: list[str] = field(default_factory=list)
    """Trackers to log to: tensorboard, wandb, mlflow, aim, comet_ml, clearml, dvclive,
    or all (every one of those installed). Empty: metrics.jsonl only."""
    every_n_steps: int = 10
    """Log the training figures every this many optimizer steps (global step)."""
    project: str = "harness"
    """The project (run name) handed to every tracker; TensorBoard writes to <run folder>/<project>/,
    so it is one plain name (check_project)."""
    init_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per tracker, keyword arguments for its constructor, e.g. {wandb: {tags: [a]}}."""

    def __post_init__(self):
        if self.every_n_steps <= 0:
            raise ConfigValueError("every_n_steps", f"expected an integer > 0, got {self.every_n_steps}")
        check_project(self.project)
        known = (*TRACKERS, "all")
        for i, name in enumerate(self.log_with):
            if name not in known:
                raise ConfigValueError(f"log_with[{i}]", f"expected one of {', '.join(known)}, got {name!r}")
            if name != "all" and not installed(name):
                raise ConfigValueError(f"log_with[{i}]", f"{name} is not installed; install it with "
                                       f"pip install 'harness[{TRACKERS[name][1]}]'")
        for name, kwargs in self.init_kwargs.items():
            if name not in TRACKERS:
                raise ConfigValueError(f"init_kwargs.{name}", f"expected a tracker name ({', '.join(TRACKERS)})")
            if not isinstance(kwargs, dict):
                raise ConfigValueError(f"init_kwargs.{name}", f"expected a mapping, got {kwargs!r}")

    def names(self) -> list[str]:
        """The trackers that will run: ``all`` expanded to the installed ones."""
        if "all" in self.log_with:
            return [n for n in TRACKERS if installed(n)]
        return list(dict.fromkeys(self.log_with))


def accelerator_kwargs(cfg: TrackingConfig, output: str | Path) -> dict:
    """``Accelerator(**this)``: the trackers, and the run folder as their project folder.

    The trackers start after the run has written its config; what would stop them is
    bad input found here, before the run writes anything.
    """
    names = cfg.names()
    if not names:
        return {}
    check_can_start(cfg, names, Path(output))
    return {"log_with": names, "project_dir": str(output)}


def check_can_start(cfg: TrackingConfig, names: list[str], output: Path) -> None:
    if "tensorboard" in names:
        folder = output / cfg.project
        if folder.exists() and not folder.is_dir():
            raise BadInput(f"tracking.project: {folder} exists and is not a folder (TensorBoard writes its "
                           "events there); move it or choose another tracking.project", key="tracking.project")
    for name in names:
        if cfg.init_kwargs.get(name) and name in CONSTRUCTORS:
            check_init_kwargs(name, cfg.init_kwargs[name])


def check_init_kwargs(name: str, kwargs: dict) -> None:
    """``init_kwargs.NAME`` against the signature of what receives them: an unknown argument, one
    the harness sets, or a value of another type than a non-None default is bad input."""
    module, attr, reserved = CONSTRUCTORS[name]
    target = getattr(importlib.import_module(module), attr)
    params = inspect.signature(target).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in kwargs.items():
        where = f"tracking.init_kwargs.{name}.{key}"
        if key in reserved:
            raise BadInput(f"{where}: set by the harness (the run folder, tracking.project); leave it out", key=where)
        param = params.get(key)
        if param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            if open_ended:
                continue
            known = [k for k, p in params.items() if k != "self" and k not in reserved
                     and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            raise BadInput(f"{where}: {module}.{attr} takes no such argument (it takes {', '.join(known)})",
                           key=where)
        if not _same_kind(value, param.default):
            raise BadInput(f"{where}: expected {type(param.default).__name__} (the default is "
                           f"{param.default!r}), got {value!r}", key=where)


def _same_kind(value, default) -> bool:
    if default is None or default is inspect.Parameter.empty:
        return True  # nothing to compare with: the tracker decides
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) if isinstance(default, float) else isinstance(value, int)
    return isinstance(value, type(default))


def local_defaults(names: list[str], output: Path, user: dict[str, dict]) -> dict[str, dict]:
    """Per-tracker init kwargs that keep everything in the run folder and off the network.

    Set only where the user did not: an environment variable they exported, or a key
    of their ``init_kwargs``, wins.
    """
    if "wandb" in names:
        os.environ.setdefault("WANDB_MODE", "offline")
    if "mlflow" in names:
        os.environ.setdefault("MLFLOW_TRACKING_URI", (output / "mlruns").resolve().as_uri())
    if "comet_ml" in names:
        os.environ.setdefault("COMET_OFFLINE_DIRECTORY", str(output / "comet"))
    if "clearml" in names:
        os.environ.setdefault("CLEARML_OFFLINE_MODE", "1")
    defaults = {"wandb": {"dir": str(output)}, "comet_ml": {"online": False},
                "dvclive": {"dir": str(output / "dvclive")}}
    out = {}
    for name in names:
        out[name] = {**defaults.get(name, {}), **user.get(name, {})}
    return out


def hparams(config: dict) -> dict[str, bool | int | float | str]:
    """The resolved config flattened to dotted scalar keys, as every tracker accepts them.

    Trackers take bool/int/float/str only: null becomes "null", a list or mapping its JSON.
    """
    from harness.run.resume import flatten

    out = {}
    for key, value in flatten(config).items():
        if value is None:
            value = "null"
        elif not isinstance(value, (bool, int, float, str)):
            value = json.dumps(value, sort_keys=True, default=str)
        out[key] = value
    return out
