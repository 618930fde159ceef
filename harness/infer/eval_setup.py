"""What ``harness evaluate`` does around any model's evaluation, image or text (evaluate.py,
text_eval.py): the run's mode and seed, its data rebuilt from its config, the evaluation's
parts as the run tested with them, and the closing blocks of eval.yaml."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.errors import BadInput
from harness.infer.reload import RunFolder


@dataclass
class Evaluation:
    run: RunFolder
    accelerator: Any
    precision: Any
    data: Any
    """``preprocess.recipe_data``: a DataBundle of images, or a language model's TextData."""
    t0: float


def start(run: RunFolder) -> Evaluation:
    """The run's Accelerator (its mode and precision) and seed, then its data rebuilt from its config."""
    from accelerate.utils import set_seed

    from harness.data.preprocess import recipe_data
    from harness.run import accel

    t0 = time.perf_counter()
    accelerator, precision = accel.build_accelerator(run.cfg.runtime)
    set_seed(run.cfg.seed)
    return Evaluation(run, accelerator, precision, recipe_data(run.cfg), t0)


def check_not_empty(view, split: str, source: str, unit: str) -> None:
    if not len(view):
        raise BadInput(f"--split {split}: the {split} split of {source} holds no {unit} "
                       f"(data.split.{split} is 0)" if split != "all" else f"data: {source} holds no {unit}")


def parts(ev: Evaluation, model, task=None):
    """``loop.evaluate``'s parts: the prepared model, the run's loss summed and per sample, its task."""
    from harness.run.loop import TrainParts
    from harness.run.optim import build_loss

    loss = ev.run.cfg.loss
    extra = (task,) if task is not None else ()
    return TrainParts(ev.accelerator, model, None, None, build_loss(loss), build_loss(loss, reduction="none"), *extra)


def closing(ev: Evaluation) -> dict:
    """eval.yaml's last blocks: where it ran, in which mode, how long it took, the run's config."""
    from harness.config.run import to_dict
    from harness.measure import environment
    from harness.run import accel

    return {"environment": environment.collect(ev.run.cfg.seed),
            "mode": {**accel.describe(ev.accelerator), "precision": ev.precision.name},
            "wall_s": time.perf_counter() - ev.t0,
            "config": to_dict(ev.run.cfg)}


def report_accuracy(run: RunFolder) -> dict | None:
    """The run's report's accuracy block, None without a report.yaml; BadInput when the file
    there is not a report."""
    from harness.report.io import load_report

    path = run.path / "report.yaml"
    if not path.exists():
        return None
    return load_report(path, raw=False).get("accuracy") or {}
