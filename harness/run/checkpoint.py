"""Checkpoints: the training state each epoch, the final model, and resume.

A checkpoint folder is written under a temporary name, its files flushed to disk,
and renamed into place once complete (an older one of the same name is replaced
only once the new one is in: ``atomic.replace_dir``), so a kill at any moment leaves
the previous checkpoint intact. Each checkpoint carries the recipe it was trained
with (``recipe.yaml``), which a resume is checked against (resume.py).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.files.atomic import (DiskFull, TMP_DIR_PREFIX, file_mode, is_disk_full, replace_dir, write_atomic,
                            write_text_atomic)
from harness.errors import BadInput, ConfigValueError

# epoch_0003: three whole epochs done. epoch_0003_step_0017: plus 17 steps of the
# fourth, saved when a signal stopped the run inside it.
EPOCH_DIR = re.compile(r"^epoch_(\d+)(?:_step_(\d+))?$")
STATE_FILE = "trainer_state.yaml"
RECIPE_FILE = "recipe.yaml"


@dataclass
class OutputConfig:
    dir: str = "runs/latest"
    """Where report.yaml, config.yaml, model.pt and checkpoints/ go (--output overrides)."""
    checkpoint_every_epoch: bool = True
    keep_checkpoints: int = 1
    """Epoch checkpoints kept on disk (the newest)."""
    save_model: bool = True
    """Write the final model's state_dict as model.pt."""
    progress: bool | None = None
    """Show training progress (harness/observe/progress.py): null, a step bar per epoch when stderr is
    a terminal and a plain line every progress_interval_s otherwise; true, the bar; false, nothing."""
    progress_interval_s: float = 10.0
    """Seconds between two plain progress lines (stderr not a terminal)."""

    def __post_init__(self):
        if not self.dir:
            raise ConfigValueError("dir", "expected a folder path")
        if self.keep_checkpoints <= 0:
            raise ConfigValueError("keep_checkpoints", f"expected an integer > 0, got {self.keep_checkpoints}")
        if not self.progress_interval_s > 0:
            raise ConfigValueError("progress_interval_s", f"expected seconds > 0, got {self.progress_interval_s}")


def checkpoints_dir(output: Path) -> Path:
    return output / "checkpoints"


def checkpoint_name(epochs_done: int, step_in_epoch: int = 0) -> str:
    name = f"epoch_{epochs_done:04d}"
    return f"{name}_step_{step_in_epoch:04d}" if step_in_epoch else name


def progress_of(path: Path) -> tuple[int, int] | None:
    m = EPOCH_DIR.match(path.name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def complete_checkpoints(output: Path) -> list[Path]:
    """The run's complete checkpoints (those with a trainer state), oldest first."""
    folder = checkpoints_dir(output)
    if not folder.is_dir():
        return []
    done = [(progress, p) for p in folder.iterdir()
            if (progress := progress_of(p)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(done)]


def latest_checkpoint(output: Path) -> Path | None:
    kept = complete_checkpoints(output)
    return kept[-1] if kept else None


def drop_newer(output: Path, chosen: Path) -> None:
    """Resuming from an older checkpoint: the newer ones belong to the abandoned future."""
    mine = progress_of(chosen)
    for p in checkpoints_dir(output).iterdir():
        if (progress := progress_of(p)) and progress > mine:
            shutil.rmtree(p, ignore_errors=True)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _state_bytes(accelerator) -> int:
    """About what a checkpoint of this run takes: its models' and optimizers' tensors."""
    import torch

    def tensors(tree):
        if isinstance(tree, torch.Tensor):
            yield tree
        elif isinstance(tree, dict):
            for v in tree.values():
                yield from tensors(v)
        elif isinstance(tree, (list, tuple)):
            for v in tree:
                yield from tensors(v)

    states = [m.state_dict() for m in accelerator._models] + [o.state_dict() for o in accelerator._optimizers]
    return sum(t.numel() * t.element_size() for t in tensors(states))


def _seal(folder: Path) -> None:
    """Give the files accelerate wrote the umask's mode (some come as 0600) and flush them to disk."""
    mode = file_mode()
    for p in folder.rglob("*"):
        if p.is_file():
            os.chmod(p, mode)
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def save_checkpoint(accelerator, output: Path, epochs_done: int, trainer_state: dict, keep: int,
                    step_in_epoch: int = 0, recipe: dict | None = None, shards: tuple | None = None) -> Path:
    """All ranks call this; rank 0 makes the folder visible once every rank has written.

    ``shards``: (model, optimizer) of a run the harness sharded itself (FSDP2 on the CPU):
    every rank writes its shards through torch.distributed.checkpoint (sharding.py) beside
    Accelerate's state of the rest (random states, scheduler, loader).

    A full disk raises ``DiskFull`` naming the folder and about the bytes it needed;
    the half-written folder is removed and the previous checkpoint stays.
    """
    from harness.run.guard import deferred_signals

    folder = checkpoints_dir(output)
    name = checkpoint_name(epochs_done, step_in_epoch)
    final = folder / name
    tmp = folder / f"{TMP_DIR_PREFIX}{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        if shards is None:
            accelerator.save_state(str(tmp))
        else:
            from harness.run import sharding

            with sharding.optimizers_hidden(accelerator):
                accelerator.save_state(str(tmp))
            sharding.save_shards(tmp, *shards)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_text_atomic(tmp / STATE_FILE, yaml.safe_dump(trainer_state, sort_keys=False))
            if recipe is not None:
                write_text_atomic(tmp / RECIPE_FILE, yaml.safe_dump(recipe, sort_keys=False))
            _seal(tmp)
    except BaseException as err:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err) or isinstance(err, DiskFull):
            previous = latest_checkpoint(output)
            needed = _folder_bytes(previous) if previous is not None else _state_bytes(accelerator)
            raise DiskFull(final, needed) from None
        raise
    if accelerator.is_main_process:
        with deferred_signals():  # a second signal waits until the checkpoint is in place
            replace_dir(tmp, final)
            old = complete_checkpoints(output)
            for stale in old[:-keep]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, folder: Path, shards: tuple | None = None) -> dict:
    """The trainer state of ``folder``, with its model, optimizer and random states loaded.

    resume.py has checked the files; what still fails to load (a tensor of another
    shape, say) is bad input naming the folder, not a traceback. ``shards``: as for
    ``save_checkpoint``; the model and optimizer come from the ranks' shards.
    """
    try:
        if shards is None:
            accelerator.load_state(str(folder))
        else:
            from harness.run import sharding

            with sharding.optimizers_hidden(accelerator):
                accelerator.load_state(str(folder))
            sharding.load_shards(folder, *shards)
    except BadInput:
        raise
    except Exception as err:  # noqa: BLE001 -- torch and accelerate raise many kinds
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise BadInput(f"--resume: {folder} cannot be loaded ({err.__class__.__name__}: {first})") from None
    from harness.files import safe_yaml

    return safe_yaml.read_yaml(folder / STATE_FILE, "trainer state")  # resume.py checked its shape


def save_model(accelerator, model, path: Path) -> None:
    """The whole model's state_dict into ``path`` (rank 0 writes; every rank calls this). A
    sharded model's is gathered once, with the keys an unsharded model has."""
    from harness.run import sharding

    state = sharding.full_state_dict(model) if sharding.is_sharded(model) else accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        import torch

        write_atomic(path, lambda f: torch.save(state, f), binary=True)


MODEL_CARD = "classes.json"
"""Beside model.pt: the class names (index order of the model's outputs) and the sample
shape the model takes, so a reloaded model prints names (reload.py). model.pt stays a
plain state_dict that ``torch.load`` + ``load_state_dict`` read without the harness."""


def save_model_card(output: Path, classes: list[str], sample_shape) -> None:
    import json

    card = {"classes": list(classes), "sample_shape": [int(v) for v in sample_shape]}
    write_text_atomic(output / MODEL_CARD, json.dumps(card) + "\n")
