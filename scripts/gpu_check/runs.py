"""Figures read from harness runs on the GPU, each a subprocess as a user would start it.

Each run is short (tens of steps); what it must show is that the mode runs and that its
report carries the figure, not a benchmark result. Every run lands in ``<output>/<name>``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

RUN_TIMEOUT_S = 300
TOTAL_S = 540.0
"""The whole check ends within this: a hung step costs the steps after it their turn (each then
reads as not measured), never the machine's 10-minute command limit."""
DIGITS = ["configs/digits_cnn.yaml", "runtime.device=gpu", "measure.measure_peak=false", "train.epochs=2",
          "train.max_steps=30", "measure.warmup_steps=5", "output.progress=false"]
"""The default recipe, two short epochs: dev evaluations, epoch checkpoints and model.pt,
so every phase runs; 30 steps take the last, short batch of the first epoch (41 of 64)."""
COMPILED = ["configs/digits_mlp.yaml", *DIGITS[1:], "runtime.compile.enabled=true"]
"""The same budget with the digits MLP: the smallest graphs to generate code for (two modes,
cold caches), the same short last batch in the window."""
RESNET50 = ["configs/hardware/resnet50_224.yaml", "runtime.device=gpu", "runtime.precision=bf16",
            "runtime.channels_last=true", "data.fake.size=256", "loader.batch_size=64", "train.max_steps=40",
            "measure.warmup_steps=10", "measure.measure_peak=false"]
GPT = ["configs/hardware/gpt_small.yaml", "runtime.device=gpu", "runtime.precision=bf16", "loader.batch_size=32",
       "train.max_steps=40", "measure.warmup_steps=10", "measure.measure_peak=false"]
FSDP2 = ["configs/tiny_gpt.yaml", "runtime.device=gpu", "runtime.sharding=fsdp2", "train.max_steps=20",
         "measure.warmup_steps=5", "measure.measure_peak=false", "output.progress=false"]


class RunFailed(Exception):
    pass


_deadline = time.monotonic() + TOTAL_S


def start_clock(total_s: float = TOTAL_S) -> None:
    global _deadline
    _deadline = time.monotonic() + total_s


def time_left(limit_s: float) -> float:
    """Seconds the next subprocess may take: its own limit, or what is left of the check's."""
    left = _deadline - time.monotonic()
    if left <= 1:
        raise RunFailed(f"not run: the check's {TOTAL_S:.0f} s were spent")
    return min(limit_s, left)


def bounded(argv: list[str], limit: float, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a session of its own: past ``limit`` the whole session is killed
    (a hung torchrun or pytest leaves no rank holding the GPU), then TimeoutExpired; so is it
    when the check is interrupted (its own session does not get the terminal's Ctrl-C)."""
    out = subprocess.PIPE if capture else sys.stderr
    with subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE if capture else None, text=True,
                          start_new_session=True, **kw) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except BaseException:  # past the limit, or the check itself stopped (Ctrl-C, SIGTERM)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def last_error(text: str) -> str:
    """The line that says what went wrong: the harness's one-line ``error:``, else the last
    exception line, else the last line that is not a rule (torchrun ends with a summary box)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) - set("=-")]
    for pick in (lambda ln: ln.startswith("error:"), lambda ln: "Error:" in ln or "Exception:" in ln, lambda ln: True):
        found = [ln for ln in lines if pick(ln)]
        if found:
            return found[-1]
    return "no output"


def _run(argv: list[str], what: str) -> None:
    """Run ``argv`` from the repository root; its stderr tail is the error when it fails."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    limit = time_left(RUN_TIMEOUT_S)
    try:
        proc = bounded(argv, limit, cwd=repo, env=env)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"{what} ran past {limit:.0f} s") from None
    if proc.returncode != 0:
        raise RunFailed(f"{what} exited {proc.returncode}: {last_error(proc.stderr or proc.stdout or '')}")


def harness_run(out: Path, recipe: list[str], *extra: str) -> dict:
    """``harness run RECIPE EXTRA --output OUT --overwrite``; its report (raw lists left out)."""
    from harness.report.io import load_report

    _run([sys.executable, "-m", "harness", "run", *recipe, *extra, "--output", str(out), "--overwrite"],
         f"harness run {out.name}")
    return load_report(out / "report.yaml", raw=False)


def _mode(report: dict) -> dict:
    d = report["distributed"]
    steps = report["throughput"]["measured_steps"] + report["throughput"]["warmup_steps"]
    return {"status": report["status"], "mixed_precision": d.get("mixed_precision"),
            "scaler_skipped_steps": d.get("scaler_skipped_steps"), "steps": steps}


def phases(out: Path) -> dict:
    report = harness_run(out / "phases", DIGITS)
    peaks = {p: (report["memory"].get(p) or {}).get("device_peak_allocated_mb") for p in ("train", "eval", "checkpoint")}
    return {"run_phase_peaks": peaks, "run_data_wait_fraction": report["data_wait_fraction"]}


def inference(out: Path) -> dict:
    """``harness bench-inference`` on the phases run's model.pt: its batch-1 latency."""
    from harness.report.io import load_report

    run = out / "phases"
    _run([sys.executable, "-m", "harness", "bench-inference", str(run), "--overwrite"], "harness bench-inference")
    report = load_report(run / "inference" / "report.yaml", raw=False)
    latency = report["step_time_ms"]
    return {"inference": {"status": report["status"], "clock": report["inference"]["clock"],
                          "p50_ms": latency["p50"], "p99_ms": latency["p99"]}}


def precisions(out: Path) -> dict:
    found = {}
    for p in ("bf16", "fp16"):
        try:
            found[p] = _mode(harness_run(out / p, DIGITS, f"runtime.precision={p}"))
        except RunFailed as err:  # the other precision still runs
            found[p] = {"error": str(err)}
    return found


def compiled(out: Path) -> dict:
    found = {}
    for mode in ("default", "reduce-overhead"):
        key = f"compile_{mode.replace('-', '_')}"
        try:
            report = harness_run(out / key, COMPILED, f"runtime.compile.mode={mode}")
        except RunFailed as err:
            found[key] = {"error": str(err)}
            continue
        c = report.get("compile") or {}
        found[key] = {"status": report["status"], "recompiles_in_window": c.get("recompiles_in_window"),
                      "compile_time_s": c.get("compile_time_s")}
    return found


def resnet50(out: Path) -> dict:
    report = harness_run(out / "resnet50", RESNET50)
    return {"resnet50": {"status": report["status"], "samples_per_s": report["throughput"]["samples_per_s"],
                         "mfu_datasheet": report["compute"].get("mfu_datasheet"),
                         "memory_format": report["model"].get("memory_format")}}


def gpt(out: Path) -> dict:
    report = harness_run(out / "gpt", GPT)
    return {"gpt": {"status": report["status"], "tokens_per_s": report["throughput"].get("tokens_per_s"),
                    "mfu_datasheet": report["compute"].get("mfu_datasheet")}}


def fsdp2(out: Path) -> dict:
    """FSDP2 through Accelerate's plugin on a world of one GPU, under torchrun."""
    from harness.launch.command import free_port
    from harness.report.io import load_report

    run = out / "fsdp2"
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(free_port()),
          "-m", "harness", "run", *FSDP2, "--output", str(run), "--overwrite"], "torchrun harness run (fsdp2)")
    report = load_report(run / "report.yaml", raw=False)
    return {"fsdp2": {"status": report["status"], "sharding": report["distributed"].get("sharding")}}


STEPS: list[tuple[tuple[str, ...], Callable[[Path], dict]]] = [
    (("run_phase_peaks", "run_data_wait_fraction"), phases),
    (("inference",), inference),
    (("bf16", "fp16"), precisions),
    (("compile_default", "compile_reduce_overhead"), compiled),
    (("resnet50",), resnet50),
    (("gpt",), gpt),
    (("fsdp2",), fsdp2),
]
"""Each step, and the figures it records (an error recorded for each when it fails)."""
