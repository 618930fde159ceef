"""The run's configuration: typed dataclasses, loaded strictly from YAML.

Each component owns a small dataclass next to the code that uses it; this module
composes them into one ``Config`` and converts raw YAML into it. The loader is
strict on purpose: an unknown key, a value of the wrong type or one out of range
is refused with one line naming the file and the dotted key, never ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from harness.config.raw import apply_overrides, parse_override, read_yaml  # noqa: F401 -- re-exported
from harness.run.accel import RuntimeConfig
from harness.run.checkpoint import OutputConfig
from harness.data.datasets import TEXT_SETS, DataConfig
from harness.data.loaders import LoaderConfig
from harness.errors import BadInput, ConfigValueError
from harness.config.inference import InferenceConfig
from harness.measure.config import MeasureConfig
from harness.models.registry import LM_MODELS, ModelConfig
from harness.run.optim import LossConfig, OptimConfig
from harness.observe.tracking import TrackingConfig
from harness.config.train import TrainConfig
from harness.config.typecheck import describe, fits


@dataclass
class Config:
    name: str = "run"
    """A label for the run; reports carry it."""
    seed: int = 0
    """Seeds the split, the shuffling order, initial weights and augmentation."""
    data: DataConfig = field(default_factory=DataConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    scenario: Literal["training", "inference"] = "training"
    """training: train, test and measure (runner.py); inference: measure the forward pass alone (inference.py)."""
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    task: str | None = None
    """What is learnt: classification (images), causal_lm (next token of a text), or
    package.module:ClassName for your own task (harness/task/base.py's Task). Null:
    inferred from the data set (data.name: text -> causal_lm, else classification)."""

    def __post_init__(self):
        self.task = self.task or default_task(self.data.name)
        check_workload(self)
        if not 0 <= self.seed < 2**32:
            # numpy's seed, which every per-epoch seed also feeds, takes 32 bits.
            raise ConfigValueError("seed", f"expected an integer in [0, 2**32), got {self.seed}")
        if self.runtime.compile.enabled and self.measure.warmup_steps < 1:
            # The first step compiles; compile time must never be timed as throughput.
            raise ConfigValueError("measure.warmup_steps",
                                   "expected >= 1 with runtime.compile.enabled (the first step compiles)")


TASK_NAMES = ("classification", "causal_lm")
"""The built-in tasks (harness.task.TASKS, named here without importing torch)."""


def default_task(data_name: str) -> str:
    return "causal_lm" if data_name in TEXT_SETS else "classification"


def check_workload(cfg: Config) -> None:
    """The task, the data set and the model must be one kind of workload: a text
    task given an image model (or the reverse) is refused at load, naming the key."""
    task, data, model = cfg.task, cfg.data.name, cfg.model.name
    if task not in TASK_NAMES and ":" not in task:
        raise ConfigValueError("task", f"unknown task {task!r} (expected one of: {', '.join(TASK_NAMES)}, "
                                       "or package.module:ClassName)")
    text = data in TEXT_SETS
    if task == "causal_lm" and not text:
        raise ConfigValueError("task", f"causal_lm needs a text corpus (data.name: text); data.name {data} "
                                       "holds images")
    if task == "classification" and text:
        raise ConfigValueError("task", "classification needs an image data set; data.name text is a corpus "
                                       "(task: causal_lm)")
    if model in LM_MODELS and not text:
        raise ConfigValueError("model.name", f"{model} is a language model; data.name {data} holds images "
                                             "(use an image model, or data.name: text)")
    if text and ":" not in model and model not in LM_MODELS:
        raise ConfigValueError("model.name", f"{model} is an image model; a text corpus (data.name: text) needs "
                                             f"{', '.join(LM_MODELS)} or package.module:ClassName")
    if text and cfg.loader.kind == "device_resident":
        raise ConfigValueError("loader.kind", "device_resident holds images; a text corpus needs dataloader")
    if text and cfg.runtime.channels_last:
        raise ConfigValueError("runtime.channels_last", "a memory format of images; a language model has none")
    positions = cfg.model.kwargs.get("seq_len") if model in LM_MODELS else None
    if isinstance(positions, int) and cfg.data.seq_len is not None and cfg.data.seq_len > positions:
        raise ConfigValueError("data.seq_len", f"{cfg.data.seq_len} is longer than the model's "
                                               f"model.kwargs.seq_len = {positions} positions")


# --- YAML -> dataclasses ---------------------------------------------------------

def _convert(tp: Any, value: Any, key: str) -> Any:
    """``value`` as type ``tp``: the kinds are typecheck's (the report's too); only a whole
    number where a float is asked is converted, and a dataclass built from its mapping."""
    origin = typing.get_origin(tp)
    wrong = BadInput(f"{key}: expected {describe(tp)}, got {value!r}", key=key)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise wrong
        for arg in args:
            if arg is type(None):
                continue
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value, key)  # its own errors name the key inside it
            try:
                return _convert(arg, value, key)
            except BadInput:
                continue
        raise wrong
    if origin is Literal or tp in (bool, int, str):
        if fits(value, tp):
            return value
        raise wrong
    if tp is float:
        # NaN passes every range check (all comparisons are false), so refuse it here.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
            if math.isfinite(number):
                return number
            raise BadInput(f"{key}: expected a finite number, got {value!r}", key=key)
        raise wrong
    if origin in (list, tuple):
        if not fits(value, tp):
            raise wrong
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not fits(value, tp) or not all(isinstance(k, str) for k in value):
            raise wrong
        return dict(value)
    raise TypeError(f"config field {key} has an unsupported type {tp!r}")


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, refusing unknown keys and wrong types."""
    where = prefix or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: expected a mapping, got {raw!r}", key=prefix or None)
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in raw.items():
        # A key is the user's text: one with a newline or another control character is
        # shown quoted, so the error stays one line.
        shown = key if isinstance(key, str) and key.isprintable() else repr(key)
        dotted = f"{prefix}.{shown}" if prefix else shown
        if key not in known:
            raise BadInput(f"{dotted}: unknown key (expected one of: {', '.join(known)})", key=dotted)
        kwargs[key] = _convert(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except ConfigValueError as err:
        dotted = f"{prefix}.{err.field}" if prefix else err.field
        raise BadInput(f"{dotted}: {err.message}", key=dotted) from None


def _override_of(key: str | None, overrides: list[str]) -> str | None:
    """The last override that set ``key`` (or a section holding it, or a key inside it)."""
    if not key:
        return None
    for text in reversed(overrides):
        dotted = text.split("=", 1)[0].strip()
        if key == dotted or key.startswith(dotted + ".") or dotted.startswith(key + "."):
            return text
    return None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``path`` (or the defaults), apply ``KEY=VALUE`` overrides, validate.

    An error in a value an override set names the override, not the file.
    """
    raw = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    overrides = list(overrides or [])
    raw = apply_overrides(raw, overrides)  # its errors already name the override
    try:
        return from_dict(Config, raw)
    except BadInput as err:
        blamed = _override_of(getattr(err, "key", None), overrides)
        if blamed is not None:
            raise BadInput(f"override {blamed!r}: {err}", key=err.key) from None
        raise BadInput(f"{source}: {err}", key=getattr(err, "key", None)) from None


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Config) -> str:
    """A stable hash of what makes two runs the same recipe.

    The output section says where results go, not what was run, so it is left out.
    """
    from harness.config.recipe import drop_workload_defaults

    body = drop_workload_defaults(to_dict(cfg))
    body.pop("output", None)
    if cfg.scenario == "training":  # keys a training run does not use: its hash is as before them
        body.pop("scenario"), body.pop("inference")
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe_hash(cfg: Config) -> str:
    """A stable hash of what the run computes; ``harness compare`` matches cells on it.

    Unlike ``config_hash`` it leaves out the labels (``name``), where results go
    (``output``), how they are measured (``measure``) and where the data lives
    (``data.root``, replaced by a fingerprint of its files): harness/config/recipe.py.
    """
    from harness.config.recipe import data_fingerprint, recipe_hash_of

    body = to_dict(cfg)
    return recipe_hash_of(body, data_fingerprint(body["data"]))
