"""What a run computes, apart from how it is labelled: the recipe behind ``recipe_hash``.

``config_hash`` changes with any key but ``output.*``. Two runs that compute the same
thing under another ``name``, with other ``measure.*`` settings (how they are timed,
not what is trained) or with the same files at another ``data.root`` are one recipe,
and ``harness compare`` must match them. This module is plain Python (no torch), so
compare can diff two reports' configs with the same rules the writer hashed them by.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

NOT_RECIPE = ("name", "output", "measure", "tracking", "data.root", "data.download", "data.scan_images",
              "model.download")
"""Dotted config keys (and sections) that do not change what is computed (``tracking`` only
says where the figures are logged).

``data.root`` is where the files live: the recipe holds a fingerprint of the files
instead (``data.content``). ``data.download``, ``model.download`` and ``data.scan_images``
only decide whether files may be fetched or are checked first.
"""

BUILT_IN = ("digits", "fake", "mnist", "fashion_mnist", "cifar10")
"""Data sets whose content the name (with ``data.fake.*``) fixes."""


def _dropped(dotted: str) -> bool:
    return any(dotted == k or dotted.startswith(k + ".") for k in NOT_RECIPE)


def flatten(node, prefix: str = "") -> dict:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; lists stay values."""
    if isinstance(node, dict) and node:
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node} if prefix else {}


def data_fingerprint(data: dict) -> str:
    """Cheap identity of the data set's content: its name, or its files' names and sizes.

    Sizes and relative names survive a copy to another folder (mtimes do not); reading
    every byte would cost as much as a scan of the data set, on every run.
    """
    name = data.get("name")
    root = data.get("root")
    if name in BUILT_IN or not root:
        return str(name)
    base = Path(root)
    digest = hashlib.sha256()
    if base.is_file():  # a text corpus may be one .txt file
        digest.update(f"{base.name}\0{base.stat().st_size}\n".encode())
    for folder, dirs, files in os.walk(base):
        dirs.sort()
        for f in sorted(files):
            path = Path(folder) / f
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            digest.update(f"{path.relative_to(base).as_posix()}\0{size}\n".encode())
    return f"{name}:{digest.hexdigest()[:16]}"


INFERENCE_KEYS = ("scenario", "inference")
"""Keys a training run does not use: left out of its recipe, so adding them kept every
earlier training report's recipe_hash. An inference run keeps them (its scenario and
batch sizes are what it computes) but for ``inference.weights``, a file's path: the
forward pass costs the same whatever the weights' values."""


def drop_workload_defaults(config: dict) -> dict:
    """``config`` without the language-model keys at their image defaults (``task:
    classification``, no ``data.seq_len``, ``data.tokenizer`` or ``train.target_loss``) and
    without the settings of ``SETTING_DEFAULTS`` at their defaults: adding them kept every
    earlier run's config_hash and recipe_hash, so earlier reports still compare and earlier
    checkpoints still resume."""
    config = dict(config)
    for section, key, default in SETTING_DEFAULTS:
        config = _without(config, section.split("."), key, default)
    if config.get("task") == "classification":
        config.pop("task")
    for section, keys in (("data", ("seq_len", "tokenizer")), ("train", ("target_loss",))):
        block = config.get(section)
        if isinstance(block, dict):
            config[section] = {k: v for k, v in block.items() if not (k in keys and v is None)}
    return config


def _without(config: dict, path: list[str], key: str, default) -> dict:
    """``config`` (copied along ``path`` only) without ``key`` of the block at ``path`` where it holds ``default``."""
    block = config.get(path[0])
    if not isinstance(block, dict):
        return config
    if len(path) > 1:
        return {**config, path[0]: _without(block, path[1:], key, default)}
    if key in block and block[key] == default and type(block[key]) is type(default):
        return {**config, path[0]: {k: v for k, v in block.items() if k != key}}
    return config


SETTING_DEFAULTS = (("runtime", "activation_checkpointing", False), ("train", "grad_accum_steps", 1),
                    ("runtime", "sharding", "none"), ("optim.scheduler", "warmup_steps", 0),
                    ("optim", "grad_clip_norm", None))
"""Settings added after reports and checkpoints existed, left out of both hashes at their
defaults (off; one micro-batch a step; unsharded; no warm-up; no clipping), so every earlier
run keeps its config_hash and recipe_hash; otherwise they change the recipe (``harness
compare`` never pairs a checkpointed run with a plain one). A section may be dotted."""


def _dropped_for(config: dict, dotted: str) -> bool:
    if _dropped(dotted):
        return True
    if config.get("scenario", "training") == "training":
        return any(dotted == k or dotted.startswith(k + ".") for k in INFERENCE_KEYS)
    return dotted == "inference.weights"


def recipe_view(config: dict, fingerprint: str | None = None) -> dict:
    """The flat recipe of a resolved config: every computation-changing key, dotted."""
    flat = {k: v for k, v in flatten(drop_workload_defaults(config)).items() if not _dropped_for(config, k)}
    if fingerprint is not None:
        flat["data.content"] = fingerprint
    return flat


def recipe_hash_of(config: dict, fingerprint: str) -> str:
    text = json.dumps(recipe_view(config, fingerprint), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differing_keys(a: dict, b: dict) -> list[str]:
    """Dotted recipe keys whose values differ between two resolved configs."""
    fa, fb = recipe_view(a), recipe_view(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k, _MISSING) != fb.get(k, _MISSING))


_MISSING = object()
