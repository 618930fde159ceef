"""``--resume``: decide, before anything is built or written, what continuing a run means.

- A run that completed is left untouched (exit 0, nothing rewritten) unless more
  ``train.epochs`` are asked for.
- The recipe may change only where the change cannot alter the computation done so
  far or what it means (``RESUMABLE``); any other key that differs from the
  checkpoint's recipe is bad input, named.
- The checkpoint's files are checked (complete, readable) before the run loads them;
  a damaged one is named, and an older complete checkpoint is offered
  (``--resume-from epoch_NNNN``), never taken silently.

Reads YAML and file headers only: no torch.
"""

from __future__ import annotations

import json
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.run.checkpoint import RECIPE_FILE, STATE_FILE, checkpoints_dir, complete_checkpoints, progress_of
from harness.observe import metrics_stream
from harness.config.recipe import drop_workload_defaults
from harness.files import safe_yaml
from harness.errors import BadInput
from harness.report.io import load_report

# Keys a resume may change, and why each cannot change the computation so far:
# where results go and how progress shows (output.*), what is measured and how
# (measure.*: the meter only reads clocks and counters (and tracking.*, which only logs them); the FLOP count runs before
# the checkpoint is loaded, which overwrites any state it touched), the run's label,
# how long a hung collective is waited for, and when to stop (a target, a step budget).
# train.epochs is checked apart: more only, and only when the learning-rate schedule
# does not span the epochs (cosine and onecycle are shaped by the total).
# scenario and inference.* do not touch training (an inference run has nothing to resume), and a
# checkpoint written before they existed lacks them; tracking.* only says where figures are logged.
RESUMABLE_PREFIXES = ("output.", "measure.", "inference.", "tracking.")
RESUMABLE_KEYS = {"name", "runtime.collective_timeout_s", "train.max_steps", "train.target_accuracy",
                  "train.target_loss", "train.stop_at_target", "scenario"}
HORIZON_SCHEDULES = ("cosine", "onecycle")


@dataclass
class ResumePlan:
    checkpoint: Path | None
    """The checkpoint to load; None: start from the first step."""
    done: str | None = None
    """Set when the run already completed and nothing more was asked: say this, change nothing."""
    note: str | None = None
    """Said on stderr when the run goes on (e.g. no checkpoint: starting over)."""


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_yaml(path: Path) -> dict | None:
    try:
        data = safe_yaml.read_yaml(path, "file")
    except BadInput:
        return None
    return data if isinstance(data, dict) else None


def _read_report(output: Path) -> dict:
    """The run's report; {} when there is none, and when it is not one (said), the checkpoint decides."""
    if not (output / "report.yaml").exists():
        return {}
    try:
        return load_report(output, raw=False)
    except BadInput as err:
        say(f"warning: {err}; ignored: --resume goes by the checkpoint, and rewrites report.yaml")
        return {}


def recipe_changes(saved: dict, new: dict, epochs_done: int) -> list[str]:
    """The differing dotted keys a resume may not change, each as ``key (old -> new)``."""
    # A checkpoint from before the language-model keys lacks them: at their image defaults
    # they are the same recipe (as for the hashes).
    a, b = flatten(drop_workload_defaults(saved)), flatten(drop_workload_defaults(new))
    refused = []
    for key in sorted(a.keys() | b.keys()):
        old, now = a.get(key, "<unset>"), b.get(key, "<unset>")
        if old == now or key in RESUMABLE_KEYS or key.startswith(RESUMABLE_PREFIXES):
            continue
        if key == "train.epochs" and isinstance(now, int) and now >= epochs_done:
            schedule = b.get("optim.scheduler.name")
            if schedule not in HORIZON_SCHEDULES:
                continue
            refused.append(f"train.epochs ({old} -> {now}; optim.scheduler.name {schedule} spans "
                           "the epochs, so its learning rates would change)")
            continue
        if key == "train.epochs":
            refused.append(f"train.epochs ({old} -> {now}; {epochs_done} epochs are already done)")
            continue
        refused.append(f"{key} ({old} -> {now})")
    return refused


# --- the checkpoint's files ------------------------------------------------------------

def _check_safetensors(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes, not even a safetensors header)"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"truncated or not a safetensors file (header of {n} bytes in a file of {size})"
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return "not a safetensors file (its header is not JSON)"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        return f"truncated ({size:,} of {expected:,} bytes)"
    return None


def _check_zip(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"truncated or damaged ({path.stat().st_size:,} bytes; {err})"
    except Exception as err:  # zipfile raises a zoo of errors on garbage  # noqa: BLE001
        return f"damaged ({err.__class__.__name__}: {err})"
    return f"damaged (checksum of {bad} does not match)" if bad else None


def _check_state(path: Path) -> str | None:
    try:  # capped as every harness-written file read back (a hand-edited one may be anything)
        state = safe_yaml.read_yaml(path, "trainer state")
    except BadInput as err:
        return str(err).removeprefix(f"{path}: ")
    if not isinstance(state, dict) or not isinstance(state.get("epochs_done"), int) \
            or not isinstance(state.get("steps_done"), int):
        return "not a trainer state (expected a mapping with integer epochs_done and steps_done)"
    return None


def check_checkpoint(folder: Path) -> tuple[Path, str] | None:
    """The first damaged or missing file of checkpoint ``folder`` and what is wrong, or None."""
    state = folder / STATE_FILE
    if not state.is_file():
        return state, "missing"
    problem = _check_state(state)
    if problem:
        return state, problem
    models = list(folder.glob("model*.safetensors")) + list(folder.glob("pytorch_model*.bin"))
    # FSDP2's shards: the harness's own on the CPU (run/sharding.py), Accelerate's on a GPU.
    sharded = [p for p in (folder / "fsdp2", *folder.glob("pytorch_model_fsdp_*")) if p.is_dir()]
    for shards in sharded:
        if not (shards / ".metadata").is_file():
            return shards / ".metadata", "missing (the model's shards are incomplete)"
    if not models and not sharded:
        return folder / "model.safetensors", "missing (the checkpoint holds no model weights)"
    for path in sorted(folder.iterdir()):
        if path.name in (STATE_FILE, RECIPE_FILE) or not path.is_file():
            continue
        if path.stat().st_size == 0:
            return path, "empty (0 bytes)"
        if path.suffix == ".safetensors":
            problem = _check_safetensors(path)
        elif path.suffix in (".bin", ".pkl", ".pt"):
            problem = _check_zip(path)
        else:
            continue
        if problem:
            return path, problem
    return None


def _offer_older(output: Path, folder: Path) -> str:
    mine = progress_of(folder)
    older = [p for p in complete_checkpoints(output) if progress_of(p) < mine and check_checkpoint(p) is None]
    if not older:
        return "no older checkpoint is kept"
    return f"an older checkpoint is kept: resume from it with --resume-from {older[-1].name}"


def _epochs_done(folder: Path) -> int:
    return int((_read_yaml(folder / STATE_FILE) or {}).get("epochs_done", 0))


def plan(output: Path, new_recipe: dict, resume_from: str | None = None) -> ResumePlan:
    """What ``harness run --resume output`` with ``new_recipe`` does; BadInput when it must not."""
    if not output.is_dir():
        raise BadInput(f"--resume: {output} is not a folder")
    report = _read_report(output)
    if resume_from is not None:
        folder = checkpoints_dir(output) / resume_from
        if progress_of(folder) is None or not folder.is_dir():
            kept = ", ".join(p.name for p in complete_checkpoints(output)) or "none"
            raise BadInput(f"--resume-from: {folder} is not a checkpoint of this run (kept: {kept})")
    else:
        kept = complete_checkpoints(output)
        folder = kept[-1] if kept else None

    if folder is not None:
        damage = check_checkpoint(folder)
        if damage:
            path, what = damage
            raise BadInput(f"--resume: {path}: {what}; {_offer_older(output, folder)}")
    saved = _read_yaml(folder / RECIPE_FILE) if folder is not None else None
    saved = saved or _read_yaml(output / "config.yaml")
    epochs_done = _epochs_done(folder) if folder is not None else 0
    if saved is not None:
        refused = recipe_changes(saved, new_recipe, epochs_done)
        if refused:
            raise BadInput(f"--resume: the recipe differs from the checkpoint's in {', '.join(refused)}; "
                           "a resume may change only train.epochs (more), train.max_steps, "
                           "train.target_accuracy, train.target_loss, train.stop_at_target, name, runtime.collective_timeout_s, "
                           "measure.*, tracking.* and output.*")

    if report.get("status") == "completed" and resume_from is None:
        before = flatten(report.get("config") or {}).get("train.epochs")
        asked = flatten(new_recipe).get("train.epochs")
        if not (isinstance(before, int) and isinstance(asked, int) and asked > before):
            return ResumePlan(None, done=f"{output}: the run already completed ({before} epochs); nothing "
                                         f"to do, nothing rewritten ({_how_to_train_on(new_recipe)})")
        if folder is None or epochs_done < before:
            raise BadInput(f"--resume: {output} completed without a final epoch checkpoint "
                           "(output.checkpoint_every_epoch: false), so it cannot train on")
    if folder is None:
        return ResumePlan(None, note=f"--resume: {output} holds no complete checkpoint yet; "
                                     "starting from the first step")
    metrics_stream.check(output)  # the resume rewrites it: a line it cannot place is refused now
    return ResumePlan(folder)


def _how_to_train_on(recipe: dict) -> str:
    """The hint after a completed run: true for its schedule (``recipe_changes`` refuses more
    epochs under one that spans them, as the default recipe's cosine does)."""
    schedule = flatten(recipe).get("optim.scheduler.name")
    if schedule in HORIZON_SCHEDULES:
        return (f"optim.scheduler.name {schedule} spans the epochs, so this run cannot train on; for more "
                "epochs start a new run with train.epochs=N in another --output folder, or with --overwrite")
    return "ask for more with train.epochs=N"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
