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

EPOCH_DIR = re.compile(r"^epoch_(\d+)$")
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


def latest_checkpoint(output: Path) -> Path | None:
    folder = checkpoints_dir(output)
    if not folder.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in folder.iterdir()
            if (m := EPOCH_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(done)[1] if done else None


def save_checkpoint(accelerator, output: Path, epoch: int, trainer_state: dict, keep: int) -> Path:
    """All ranks call this; rank 0 makes the folder visible once every rank has written."""
    folder = checkpoints_dir(output)
    final = folder / f"epoch_{epoch:04d}"
    tmp = folder / f".tmp-epoch_{epoch:04d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_text_atomic(tmp / STATE_FILE, yaml.safe_dump(trainer_state, sort_keys=False))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        old = sorted((p for p in folder.iterdir() if EPOCH_DIR.match(p.name)), key=lambda p: p.name)
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
