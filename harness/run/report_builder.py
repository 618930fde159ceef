"""The one builder of report.yaml: each phase hands over its result, the builder places it.

A report is assembled here and nowhere else (STYLE.md, Formats). ``harness run``'s
runner and the inference scenario start a ``ReportBuilder`` from the recipe and hand
it each phase's result in the order the phases happen, so the file's keys come in
that order; the run folder writes it once (run_folder.RunFolder.write_report). What
a launch learns after the run (a rank that died without a word) goes in through the
same builder (``reopen``, then ``blame``) and the same writer. The figures themselves
are computed elsewhere (measure/aggregate.py, finish.py, infer/bench.py,
repeats.py); the builder places them, and says in words what they warn of.

Torch-free at import: the launcher's blame and the parent of whole-run repeats (which
never imports torch) use it too; what needs torch is imported where it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.files.clock import now
from harness.report.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from harness.config.run import Config


def base_report(cfg: Config) -> dict:
    """The keys every report starts with, before any phase ran."""
    from harness.config.run import config_hash, recipe_hash, to_dict
    from harness.measure import environment

    return {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "error": None,
        "name": cfg.name,
        "scenario": cfg.scenario,
        "started_at": now(),
        "finished_at": None,
        "config_hash": config_hash(cfg),
        "recipe_hash": recipe_hash(cfg),
        "config": to_dict(cfg),
        "environment": environment.collect(cfg.seed),
        "accuracy": {},
        "timing": {},
        "throughput": {},
    }


def data_block(data, sizes: bool = True) -> dict:
    """The report's ``data`` block of a ``DataBundle``; ``sizes``: with the splits' sizes and
    the files skipped (a training run's; the inference scenario reads samples, not splits)."""
    block = {"source": data.source, "num_classes": data.num_classes, "classes": data.classes,
             "sample_shape": list(data.sample_shape)}
    if sizes:
        block.update(sizes=data.sizes(), skipped_files=data.skipped)
    return block


def text_data_block(data) -> dict:
    """The report's ``data`` block of a text corpus (``TextData``): where it came from, its
    fingerprint (sha256, size_bytes: two Pythons' default corpora are two workloads), the
    tokenizer and the windows."""
    return {"source": data.corpus["source"], "sha256": data.corpus["sha256"],
            "size_bytes": data.corpus["size_bytes"], "tokens": data.corpus["tokens"],
            "tokenizer": data.corpus["tokenizer"], "vocab_size": data.vocab_size, "seq_len": data.seq_len,
            "bytes_per_token": data.bytes_per_token, "sizes": data.sizes()}


def batch_block(cfg: Config, world_size: int) -> dict:
    """The report's ``batch`` block: what one optimizer step trains on. A micro-batch is one
    forward and backward of ``loader.batch_size`` samples on one rank; a step sums the
    gradients of ``train.grad_accum_steps`` of them on every rank."""
    micro, accum = cfg.loader.batch_size, cfg.train.grad_accum_steps
    return {"micro_batch_size": micro, "grad_accum_steps": accum, "world_size": world_size,
            "global_batch_size": micro * accum * world_size}


@dataclass
class Outcome:
    """What training and testing came to (runner.py); the builder places it."""

    status: str
    """completed, failed, interrupted or diverged."""
    code: int
    """The process's exit status."""
    ranks_in_step: bool
    """Whether the ranks may still start a collective together (false after a failure)."""
    stop_reason: str | None = None
    accuracy: dict | None = None
    artifacts: dict | None = None
    error: str | None = None
    divergence: dict | None = None
    traceback: str | None = None


def _num(value) -> str:
    return "unknown" if value is None else f"{value:.2f}"


def contention_warnings(block: dict | None, threads: dict | None) -> list[str]:
    """What the contention and threads blocks say against the run's figures, in words."""
    out = []
    if block and block.get("verdict") == "contended":
        out.append(f"the machine was contended: other processes took {block['foreign_cpu_fraction']:.0%} of the "
                   f"{block['capacity_cpus']:g} CPUs this run may use during the timed window (load average "
                   f"{_num(block.get('load_avg_end'))}); its timings are not those of an idle machine")
    if threads and threads.get("oversubscribed_free"):
        out.append(f"{threads['total_threads']} threads ran on {threads['free_cpus']:.2g} free CPUs during the "
                   "timed window: threads beyond free cores spin and slow every step")
    return out


def warnings_for(figures: dict, threads: dict | None = None) -> list[str]:
    """What a training run's figures (measure/aggregate.py) warn of."""
    out = contention_warnings(figures.get("contention"), threads)
    if not figures["throughput"]["measured_steps"]:
        out.append("no step fell inside the timed window: lower measure.warmup_steps or train longer")
    step = figures.get("step_time_ms") or {}
    if step.get("noise") in ("noisy", "unreliable"):
        out.append(f"step_time_ms is {step['noise']}: IQR/median = {step['iqr_over_median']:.2f} "
                   "(> 0.10 noisy, > 0.25 unreliable)")
    return out


class ReportBuilder:
    """One report under construction; ``report`` is the dict the writer validates and writes."""

    def __init__(self, report: dict):
        self.report = report

    @classmethod
    def start(cls, cfg: Config) -> "ReportBuilder":
        return cls(base_report(cfg))

    @classmethod
    def reopen(cls, path: Path) -> "ReportBuilder":
        """A report already written, to add what was learned after its run (BadInput when it is not one)."""
        from harness.report.io import load_report

        return cls(load_report(path))

    # -- the phases, in the order they happen ----------------------------------------

    def setup(self, data: dict, model: dict, distributed: dict, resumed: tuple[int, int] | None = None,
              batch: dict | None = None) -> None:
        """What was built: the data, the model, the run mode; ``resumed``: (epochs, steps in the
        epoch) the checkpoint a resume started from had done; ``batch``: ``batch_block``."""
        r = self.report
        r["data"], r["model"], r["distributed"] = data, model, distributed
        if batch is not None:
            r["batch"] = batch
        if resumed is not None:
            r["resumed_from_epoch"], r["resumed_from_step_in_epoch"] = resumed

    def trained(self, outcome: Outcome) -> None:
        """What training and testing came to; the status itself is placed at the end (``finished``)."""
        # In this order: the report's keys keep the order a reader met them in before.
        for key in ("stop_reason", "accuracy", "artifacts", "error", "divergence", "traceback"):
            value = getattr(outcome, key)
            if value is not None:
                self.report[key] = value

    def failed(self, error: str, traceback: str | None = None) -> None:
        """The measurement failed part-way (the inference scenario): what it measured stays."""
        self.report.update(status="failed", error=error, traceback=traceback)

    def measured(self, figures: dict, threads: dict, nonfinite: dict | None, compute: dict, compiled: dict,
                 scaler_skipped_steps: int | None, device_processes: list | None = None,
                 warnings: list[str] = ()) -> None:
        """A training run's figures: the ranks' combined measurements (measure/aggregate.py),
        the threads, the guard's non-finite record, the compute and compile blocks, and the
        warnings the phases raised beside what these figures warn of. ``device_processes``:
        on a GPU, the other processes that held the device."""
        from harness.measure import compile_stats

        r = self.report
        figures = dict(figures)
        raw = figures.pop("raw")
        r.update(figures)
        if device_processes is not None and figures["contention"]:
            r["contention"] = {**figures["contention"], "device_processes": device_processes}
        r["threads"] = threads
        r["nonfinite"] = nonfinite
        r["compute"] = compute
        r["compile"] = compiled
        r["distributed"]["scaler_skipped_steps"] = scaler_skipped_steps
        r["warnings"] = warnings_for(figures, threads) + compile_stats.warnings_for(compiled) + list(warnings)
        r["raw"] = raw

    def inferred(self, inference: dict, memory: dict, contention: dict | None, threads: dict,
                 throughput: dict, step_time_ms: dict | None, raw: dict | None) -> None:
        """The inference scenario's figures: its block of batch sizes, the memory peaks, the
        conditions, and the headline figures compare reads (null when no batch size ran)."""
        r = self.report
        r["inference"] = inference
        r["memory"] = memory
        r["contention"] = contention
        r["threads"] = threads
        r["throughput"] = throughput
        if step_time_ms is not None:
            r["step_time_ms"] = step_time_ms
            r["raw"] = raw

    def combined(self, plan: dict, repeats: dict) -> None:
        """Whole-run repeats (repeats.py): this report is the median run's; the recipe is the
        parent's (``plan``), ``repeats`` holds every run's figures, and the conditions are the
        worst run's, which the median and its interval draw on."""
        r = self.report
        r["config"], r["config_hash"], r["recipe_hash"] = plan["config"], plan["config_hash"], plan["recipe_hash"]
        r["repeats"] = repeats
        r["contention"] = repeats["contention_worst"]

    def repeat_failed(self, status: str, error: str) -> None:
        """A repeat of whole-run repeats failed: this report is its own, with the status and
        error of the repeats as a whole."""
        self.report.update(status=status, error=error)

    def profiled(self, block: dict | None, warning: str | None) -> None:
        self.warn([warning] if warning else [])
        self.report["profile"] = block

    def warn(self, warnings: list[str]) -> None:
        self.report.setdefault("warnings", []).extend(warnings)

    def finished(self, status: str | None, timing: dict) -> None:
        """The end: timing, the status (None: the one already placed) and the time."""
        r = self.report
        r["timing"] = timing
        if status is not None:
            r["status"] = status
        r["finished_at"] = now()

    # -- after the run ----------------------------------------------------------------

    def blame(self, rank: int, error: str, failures: list[dict], **more) -> None:
        """Name the rank whose failure came first as the run's cause: rank 0's own error is then
        the consequence ("connection closed"). ``failures``: every failed rank's one line, the
        first first; ``more``: other keys of the blame (``traceback``)."""
        r = self.report
        r["status"] = "failed"
        r["failed_rank"] = rank
        r["error"] = error
        r.update(more)
        r["rank_failures"] = failures
