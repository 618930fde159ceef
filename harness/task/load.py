"""The run's task from its config's ``task:`` value: a built-in name or a user's class.

A user's task loads by import path like a user's model (``package.module:ClassName``);
it gets the arguments it takes of those the harness knows (``label_smoothing`` from
``loss.label_smoothing``, ``bytes_per_token`` of a text corpus) and must meet the
``Task`` protocol (harness/task/base.py).
"""

from __future__ import annotations

import importlib
import inspect

from harness.errors import BadInput
from harness.task import TASKS, Task


def _import_task(spec: str) -> type:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as err:  # any import-time failure is the user's to fix
        raise BadInput(f"task: cannot import {module_name!r}: {err.__class__.__name__}: {err}", key="task") from None
    cls = getattr(module, attr, None)
    if not inspect.isclass(cls):
        raise BadInput(f"task: module {module_name!r} has no class {attr!r}", key="task")
    return cls


def build_task(name: str, **known) -> Task:
    """The task ``name`` names, given the arguments of ``known`` its constructor takes."""
    cls = TASKS.get(name) or _import_task(name)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        task = cls(**{k: v for k, v in known.items() if takes_any or k in params})
    except Exception as err:  # noqa: BLE001 -- the user's constructor failed
        raise BadInput(f"task: {name}() raised {err.__class__.__name__}: {err}", key="task") from None
    if not isinstance(task, Task) or getattr(task, "unit", None) not in ("samples", "tokens"):
        raise BadInput(f"task: {name} is not a Task (harness/task/base.py: name, unit 'samples' or 'tokens', "
                       "batch, loss, units, eval_stats, metrics)", key="task")
    return task
