"""Finish a run: the report's blocks from what the run did, its one write, and a failing rank's note.

Nothing here trains; each function turns the run's history and measurements into
the blocks the report builder (report_builder.py) places.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import yaml

from harness.config.run import Config
from harness.files.atomic import DiskFull
from harness.files.run_folder import RunFolder
from harness.measure import environment
from harness.measure.flops import datasheet_peak_tflops, measured_peak_flops, training_flops
from harness.run.build import Built
from harness.run.fit import History
# The report's words for its figures live with its builder; named here too for their readers.
from harness.run.report_builder import ReportBuilder, contention_warnings, now, warnings_for  # noqa: F401


def accuracy_block(cfg: Config, hist: History, test) -> dict:
    """The report's ``accuracy`` block; a language model's adds its loss in other units
    (``lm_figures``)."""
    devs = [d for d in hist.dev if d["accuracy"] is not None and not math.isnan(d["accuracy"])]
    best = max(devs, key=lambda d: d["accuracy"]) if devs else None
    return {
        "dev": hist.dev,
        "best_dev_accuracy": best["accuracy"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "final_dev_accuracy": devs[-1]["accuracy"] if devs else None,
        "test_accuracy": test.accuracy if test else None,
        "test_loss": test.loss if test else None,
        "test_samples": test.samples if test else 0,
        "target_accuracy": cfg.train.target_accuracy,
        "time_to_target_s": hist.time_to_target_s,
        "time_to_target_wall_s": hist.time_to_target_wall_s,
        **({"target_loss": cfg.train.target_loss}
           if cfg.train.target_loss is not None or cfg.task != "classification" else {}),
        **(lm_figures(hist, test) if cfg.task != "classification" and _has_lm_figures(hist, test) else {}),
    }


LM_FIGURES = ("perplexity", "bits_per_byte", "tokens")
"""What a language model's evaluation gives beyond accuracy and loss (harness/task/causal_lm.py)."""


def _has_lm_figures(hist: History, test) -> bool:
    return bool(test is not None and test.figures and "perplexity" in test.figures) or \
        any("perplexity" in d for d in hist.dev)


def lm_figures(hist: History, test) -> dict:
    """test_loss is in nats per token; beside it its perplexity, bits per byte (comparable
    across tokenizers) and the tokens it is over, and the last dev pass's loss."""
    figures = (test.figures or {}) if test is not None else {}
    devs = [d for d in hist.dev if d.get("loss") is not None]
    return {"final_dev_loss": devs[-1]["loss"] if devs else None,
            **{f"test_{k}": figures.get(k) for k in LM_FIGURES}}


PROBE_BATCH = 8
"""Samples in the FLOP-counting batch: per-sample FLOPs of conv and linear layers do
not depend on the batch size, and a small batch fits beside a nearly full device."""


def probe_batch(b: Built):
    """(bare model, (inputs, targets), loss) of a small probe batch of the train split: what
    the FLOP count and the saved-for-backward count run."""
    import torch

    from harness.data.split import TransformedSubset

    train = b.data.train
    n = min(PROBE_BATCH, b.cfg.loader.batch_size, len(train))
    if b.text:  # token windows: no transform, and each is its own targets shifted by one
        view = train
    else:
        # The train samples through the eval transform: same shapes, and no augmentation
        # draw moves the random state.
        view = TransformedSubset(train.base, train.indices[:n], b.data.dev.transform)
    inputs, targets = zip(*(view[i] for i in range(n)))
    # The bare module: no DDP hooks (no collective on one rank), no compiled graph
    # (FlopCounterMode counts eager ops), no autocast wrapper (FLOPs do not depend on dtype);
    # a sharded run's unsharded copy where the build kept one.
    model = b.unsharded or b.accelerator.unwrap_model(b.parts.model, keep_fp32_wrapper=False,
                                                      keep_torch_compile=False)
    batch = (torch.stack(inputs), torch.stack(targets) if b.text else torch.tensor(targets))
    # The task's loss: a language model's logits are (batch, time, vocab).
    loss = b.task.loss if b.text else b.parts.loss_fn
    return model, batch, loss


def count_flops(b: Built) -> tuple[float, float, float] | None:
    """(forward, forward+backward, recomputed) FLOPs per sample, on a small probe batch of the train split.

    Counted on the meta device: from shapes alone, so a ViT-B/16 costs a second instead
    of a real step, and every machine counts the same figure (attention as the math
    path, without the recompute a fused kernel's backward does). A model that cannot
    run on meta (it reads a tensor's values) is counted on the run's device.
    The first two are model FLOPs: the blocks run once, as without activation
    checkpointing (act_ckpt.plain); ``recomputed`` is the forward of the checkpointed
    blocks, which the backward runs again (0 without checkpointing).
    """
    if not b.cfg.measure.count_flops:
        return None
    from harness.measure.flops import block_forward_flops
    from harness.run import act_ckpt

    model, batch, loss = probe_batch(b)
    blocks = act_ckpt.checkpointed(model)
    with act_ckpt.plain(model):
        try:
            forward, total = training_flops(model, *batch, loss, device="meta")
            device = "meta"
        except Exception:  # noqa: BLE001 -- data-dependent code: count where it really runs
            device = b.accelerator.device
            forward, total = training_flops(model, batch[0].to(device), batch[1].to(device), loss)
        recomputed = block_forward_flops(model, batch[0], blocks, device=device) if blocks else 0.0
    return forward, total, recomputed


def _materialized(model, device):
    """A sharded run's unsharded meta copy as real tensors on ``device``, all zeros.

    What a forward saves for its backward depends on shapes and on the kernels the device
    picks, not on the weights' values; on the meta device attention would take the math
    path and save its score matrices, which the run's own kernels do not, so a count there
    would read high against the same recipe under DDP. One full copy of the model is held
    for the count; where it does not fit, the figure is null with a warning.
    """
    import copy

    import torch

    real = copy.deepcopy(model).to_empty(device=device)
    with torch.no_grad():
        for t in (*real.parameters(), *real.buffers()):
            t.zero_()
    return real


def saved_for_backward_mb(b: Built) -> tuple[float | None, list[str]]:
    """``memory.saved_for_backward_mb`` (measure/saved.py) on the probe batch, on the run's
    device, after training; null with a warning when it cannot be measured."""
    import torch

    from harness.measure.saved import saved_for_backward_bytes
    from harness.run import act_ckpt

    try:
        model, (inputs, targets), loss = probe_batch(b)
        if any(type(p).__name__ == "DTensor" for p in model.parameters()):
            # A sharded model's forward gathers its shards with the other ranks, which are
            # not running one: counted on one rank it would hang.
            return None, ["memory.saved_for_backward_mb is null: not measured on a sharded model"]
        device = b.accelerator.device
        if any(p.device.type == "meta" for p in model.parameters()):
            model = _materialized(model, device)
        # The count runs a train-mode forward: batch statistics and the random state it
        # moves are put back, so nothing after it (a resume's state) sees a difference.
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        cast = b.precision.autocast_dtype  # the run's precision: what it really saves
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            with torch.autocast(device.type, dtype=cast, enabled=cast is not None):
                saved = saved_for_backward_bytes(model, inputs.to(device), targets.to(device), loss,
                                                 act_ckpt.checkpointed(model))
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        return saved / 2**20, []
    except Exception as err:  # noqa: BLE001 -- e.g. out of memory beside the run's tensors
        return None, [_failed("memory.saved_for_backward_mb", err)]


def _failed(what: str, err: Exception) -> str:
    return f"{what} is null: {err.__class__.__name__}: {err}"


def compute_figures(b: Built, samples_per_s: float | None) -> tuple[dict, list[str]]:
    """The compute block and its warnings; a failure in counting or measuring leaves its fields null.

    Runs after training, inside the run's failure handling: whatever goes wrong here
    (a model FlopCounterMode cannot trace, a device too full for the peak's matrices)
    costs those figures and a warning, never the report or the run's status.
    """
    warnings: list[str] = []
    try:
        forward, fps, recomputed = count_flops(b) or (None, None, None)
    except Exception as err:  # noqa: BLE001 -- any failure is recorded, not raised
        forward = fps = recomputed = None
        warnings.append(_failed("compute.flops_per_sample", err))
    block = compute_block(b, fps, samples_per_s, warnings)
    block["forward_flops_per_sample"] = forward
    block.update(hardware_figures(block, recomputed, warnings))
    if b.text:
        block.update(token_flops(b, fps))
        hardware = block["hardware_flops_per_sample"]
        block["hardware_flops_per_token"] = hardware / b.data.seq_len if hardware is not None else None
    return block, warnings


def hardware_figures(block: dict, recomputed: float | None, warnings: list[str]) -> dict:
    """HFU beside MFU (Megatron's and Composer's definition): the hardware FLOPs are the model
    FLOPs plus the forward of every checkpointed block, run again in the backward; without
    activation checkpointing they are the model FLOPs and each HFU equals its MFU."""
    fps = block["flops_per_sample"]
    hardware = fps + recomputed if fps is not None and recomputed is not None else None
    out = {"recomputed_flops_per_sample": recomputed, "hardware_flops_per_sample": hardware}
    for peak in ("measured_peak", "datasheet"):
        mfu = block.get(f"mfu_{peak}")
        hfu = mfu * (hardware / fps) if mfu is not None and hardware is not None and fps else None
        if hfu is not None and hfu > 1:
            warnings.append(f"compute.hfu_{peak} is null: the hardware FLOP rate it gives ({hfu:.3g} of the peak) "
                            "is above the peak, which reads low")
            hfu = None
        out[f"hfu_{peak}"] = hfu
    return out


def token_flops(b: Built, fps: float | None) -> dict:
    """A language model's FLOPs per token: the count's (per window over the window's tokens)
    and the published formula's (measure/lm_flops.py; gpt only: a user's model's shape is unknown)."""
    from harness.measure.lm_flops import FORMULA, gpt_flops_per_token

    model = b.unsharded or b.accelerator.unwrap_model(b.parts.model, keep_fp32_wrapper=False,
                                                      keep_torch_compile=False)
    gpt = getattr(model, "config", None) if b.cfg.model.name == "gpt" else None
    return {"flops_per_token": fps / b.data.seq_len if fps is not None else None,
            "flops_per_token_formula": gpt_flops_per_token(gpt, b.data.seq_len) if gpt is not None else None,
            "flops_per_token_formula_source": FORMULA if gpt is not None else None}


def _has_conv(model) -> bool:
    from torch import nn

    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def compute_block(b: Built, fps: float | None, samples_per_s: float | None,
                  warnings: list[str] | None = None) -> dict:
    """Achieved FLOP/s and MFU against a measured peak and a datasheet peak (null when unknown)."""
    from harness.measure.flops import peak_precision, tf32_switches

    warnings = [] if warnings is None else warnings
    acc = b.accelerator
    device = acc.device
    cuda = device.type == "cuda"
    name = environment.gpus()[0]["name"] if cuda else environment.cpu_model()
    kind = peak_precision(b.precision.name, _has_conv(b.parts.model)) if cuda else \
        ("fp32" if b.precision.name == "no" else b.precision.name)
    block = {"flops_per_sample": fps, "achieved_tflops": None, "achieved_tflops_per_device": None,
             "measured_peak_tflops": None, "measured_peak_at": None, "measured_peak_load_avg_1m": None,
             "datasheet_peak_tflops": None,
             "mfu_measured_peak": None, "mfu_datasheet": None, "peak_device": name,
             "peak_dtype": str(b.precision.compute_dtype).replace("torch.", ""),
             "peak_precision": kind, "tf32": tf32_switches()}
    if fps is None or not samples_per_s:
        return block
    per_device = fps * samples_per_s / acc.num_processes
    block["achieved_tflops"] = fps * samples_per_s / 1e12
    block["achieved_tflops_per_device"] = per_device / 1e12
    if b.cfg.measure.measure_peak:
        try:
            peak, context = measured_peak_flops(device, b.precision.compute_dtype, name, at_least=per_device)
            block["measured_peak_tflops"] = peak / 1e12
            block["measured_peak_at"] = context["measured_at"]
            block["measured_peak_load_avg_1m"] = context["load_avg_1m"]
            block["mfu_peak_contended"] = context["contended"]
            block["measured_peak_contention"] = context["contention"]
            if context["contended"]:
                warnings.append("compute.mfu_measured_peak is against a matmul peak measured on a contended "
                                f"machine (other processes took {context['contention']['foreign_cpu_fraction']:.0%}"
                                " of its CPUs): the peak reads low, the MFU high; not cached")
            if per_device <= peak:
                block["mfu_measured_peak"] = per_device / peak
            else:  # measured again and still below what the run did: the peak is wrong, not MFU > 1
                warnings.append(f"compute.mfu_measured_peak is null: the run achieved {per_device / 1e12:.4g} "
                                f"TFLOP/s per device, above the measured matmul peak {peak / 1e12:.4g} "
                                f"(measured under load average {context['load_avg_1m']}); a busy machine "
                                "lowers a peak measurement")
        except Exception as err:  # noqa: BLE001 -- e.g. out of memory beside the run's tensors
            warnings.append(_failed("compute.measured_peak_tflops", err))
    if cuda:
        sheet = datasheet_peak_tflops(name, kind)
        if sheet:
            block["datasheet_peak_tflops"] = sheet
            block["mfu_datasheet"] = per_device / (sheet * 1e12)
        else:
            warnings.append(f"compute.mfu_datasheet is null: no datasheet peak for {name!r} in {kind}")
    return block


def save_report(folder: RunFolder, report: dict) -> None:
    """The run's report.yaml, written once at the end (``DiskFull`` when not even it fits:
    the previous report and checkpoints stay)."""
    keep_completed_report(folder.path, report)
    try:
        folder.write_report(report)
    except DiskFull as err:
        # The run's own error (a checkpoint that did not fit) is the cause to name.
        first = report["error"] if str(report.get("error") or "").startswith("no space left") else str(err)
        raise DiskFull.with_message(f"{first}; report.yaml not rewritten "
                                    "(the previous report and checkpoints are intact)") from None


def keep_completed_report(output: Path, report: dict) -> None:
    """A run that failed on a full disk never replaces a completed report (``DiskFull``).

    Resuming a completed run for more epochs and finding the disk full would otherwise
    put a failed report with null figures where the completed one's figures were; the
    completed report and its model.pt describe one run and stay together.
    A failed or interrupted report is still replaced: the new one says more.
    """
    from harness.errors import BadInput
    from harness.files.safe_yaml import read_yaml

    error = str(report.get("error") or "")
    if report.get("status") != "failed" or not error.startswith("no space left"):
        return
    path = output / "report.yaml"
    try:
        previous = read_yaml(path) if path.is_file() else None
    except BadInput:
        return
    if isinstance(previous, dict) and previous.get("status") == "completed":
        raise DiskFull.with_message(f"{error}; report.yaml not rewritten (the completed report "
                                    "and its model.pt stay)")


# --- a rank that fails ----------------------------------------------------------------
#
# A failing rank cannot wait for the others (they may be inside a collective it will
# never join), so it notes its error in a file and exits; the launcher then stops the
# other ranks, whose collectives fail in turn. Rank 0 writes the report, and names the
# first failure in time, which is the cause, rather than its own "peer closed" error.

def failures_dir(output: Path) -> Path:
    return output / "failures"


def note_rank_failure(output: Path, rank: int, error: str, traceback: str | None) -> None:
    from harness.files.atomic import write_text_atomic

    note = {"rank": rank, "at": time.time(), "error": error, "traceback": traceback}
    write_text_atomic(failures_dir(output) / f"rank{rank}.yaml", yaml.safe_dump(note, sort_keys=False))
    print(f"error: rank {rank}: {error}", file=sys.stderr, flush=True)


def _rank_notes(folder: Path) -> list[dict]:
    """The ranks' failure notes; one that is damaged or not a note is left out (the report
    still says the run failed), never a traceback in the middle of the blame."""
    from harness.files import safe_yaml
    from harness.errors import BadInput

    notes = []
    for path in folder.glob("rank*.yaml"):
        try:
            note = safe_yaml.read_yaml(path, "rank failure note")
        except BadInput:
            continue
        if isinstance(note, dict) and isinstance(note.get("at"), (int, float)):
            notes.append(note)
    return notes


def blame_first_failure(output: Path, builder: ReportBuilder) -> None:
    folder = failures_dir(output)
    notes = sorted(_rank_notes(folder), key=lambda n: n["at"]) if folder.is_dir() else []
    if not notes:
        return
    first = notes[0]
    builder.blame(first["rank"], f"rank {first['rank']}: {first['error']}",
                  [{"rank": n["rank"], "error": n["error"]} for n in notes], traceback=first["traceback"])
