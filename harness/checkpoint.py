"""Checkpoints: the training state each epoch, the final model, and resume.

A checkpoint folder is written under a temporary name and renamed into place once
complete, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from harness.atomic import write_atomic, write_text_atomic
from harness.errors import BadInput, ConfigValueError

# epoch_0003: three whole epochs done. epoch_0003_step_0017: plus 17 steps of the
# fourth, saved when a signal stopped the run inside it.
EPOCH_DIR = re.compile(r"^epoch_(\d+)(?:_step_(\d+))?$")
STATE_FILE = "trainer_state.yaml"


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
    """Show a progress bar; null: only when stderr is a terminal."""

    def __post_init__(self):
        if not self.dir:
            raise ConfigValueError("dir", "expected a folder path")
        if self.keep_checkpoints <= 0:
            raise ConfigValueError("keep_checkpoints", f"expected an integer > 0, got {self.keep_checkpoints}")


def check_writable(folder: Path) -> None:
    """Fail before training, not after it, when results could not be saved."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / ".write-test", "ok\n").unlink()
    except OSError as err:
        raise BadInput(f"output.dir: cannot write to {folder} ({err.strerror or err})") from None


def checkpoints_dir(output: Path) -> Path:
    return output / "checkpoints"


def checkpoint_name(epochs_done: int, step_in_epoch: int = 0) -> str:
    name = f"epoch_{epochs_done:04d}"
    return f"{name}_step_{step_in_epoch:04d}" if step_in_epoch else name


def _progress(path: Path) -> tuple[int, int] | None:
    m = EPOCH_DIR.match(path.name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def latest_checkpoint(output: Path) -> Path | None:
    folder = checkpoints_dir(output)
    if not folder.is_dir():
        return None
    done = [(progress, p) for p in folder.iterdir()
            if (progress := _progress(p)) and (p / STATE_FILE).is_file()]
    return max(done)[1] if done else None


def save_checkpoint(accelerator, output: Path, epochs_done: int, trainer_state: dict, keep: int,
                    step_in_epoch: int = 0) -> Path:
    """All ranks call this; rank 0 makes the folder visible once every rank has written."""
    folder = checkpoints_dir(output)
    name = checkpoint_name(epochs_done, step_in_epoch)
    final = folder / name
    tmp = folder / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_text_atomic(tmp / STATE_FILE, yaml.safe_dump(trainer_state, sort_keys=False))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        old = sorted((p for p in folder.iterdir() if _progress(p)), key=_progress)
        for stale in old[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, folder: Path) -> dict:
    accelerator.load_state(str(folder))
    return yaml.safe_load((folder / STATE_FILE).read_text())


def save_model(accelerator, model, path: Path) -> None:
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        write_atomic(path, lambda f: torch.save(state, f), binary=True)
